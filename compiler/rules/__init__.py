"""THE rule table: every code ftc emits, in one explicit tuple. Codes are never reused; a retired
rule keeps its code with status `removed`. Each rule's docstring is its documentation
(`ftc explain CODE`), and its Example / Use instead sections are run by the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.compiler.rules import (
    basemodel,
    compat,
    data,
    evalsets,
    evaluation,
    files,
    frontend,
    intent,
    provenance,
    resources,
    target,
    training,
)
from ftc.compiler.rules.base import Rule

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec
    from ftc.compiler.diagnostics import Diagnostic

RULES: tuple[Rule, ...] = (
    # the language (emitted by the parser and the resolver)
    frontend.SYNTAX_ERROR,
    frontend.UNTERMINATED_STRING,
    frontend.MALFORMED_NUMBER,
    frontend.UNEXPECTED_CHARACTER,
    frontend.UNEXPECTED_EOF,
    frontend.UNREADABLE_FILE,
    frontend.INVALID_PLAN,
    frontend.UNKNOWN_BLOCK,
    frontend.UNKNOWN_KEY,
    frontend.DUPLICATE_KEY,
    frontend.INVALID_VALUE,
    frontend.UNKNOWN_CHOICE,
    frontend.WRONG_UNIT,
    frontend.UNEXPECTED_ARGUMENT,
    frontend.EXTENDS_ERROR,
    frontend.IMPLICIT_OVERRIDE,
    frontend.OVERRIDE_NOTHING,
    frontend.MISSING_SETTING,
    frontend.UNUSED_SUPPRESSION,
    frontend.INVALID_SUPPRESSION,
    frontend.FILE_TOO_LARGE,
    frontend.NESTING_TOO_DEEP,
    frontend.LITERAL_TOO_LARGE,
    frontend.LIST_TOO_LONG,
    frontend.NOT_A_REGULAR_FILE,
    frontend.PATH_OUTSIDE_ROOT,
    frontend.PATH_UNREADABLE,
    # why fine-tune
    intent.knowledge_goal,
    intent.volatile_task,
    # measuring success
    evaluation.no_test_split,
    evaluation.no_metric,
    evaluation.no_gate,
    evaluation.gate_metric_not_computed,
    evaluation.gate_unknown_slice,
    evaluation.gate_unknown_split,
    evaluation.gate_threshold_impossible,
    evaluation.gate_wrong_direction,
    evaluation.data_source_conflict,
    evaluation.unused_field_mapping,
    # what goes together
    compat.method_modality,
    compat.task_modality,
    compat.classification_needs_labels,
    compat.signal_task_mismatch,
    compat.signal_fields,
    compat.extraction_needs_schema,
    compat.metric_task_mismatch,
    compat.distribution_not_run,
    compat.setting_not_applied,
    # contradictions and training practice
    training.qlora_needs_4bit,
    training.merge_quantized,
    training.quantized_needs_adapter,
    training.packing_with_preference,
    training.deepspeed_and_fsdp,
    training.global_batch_mismatch,
    training.epochs_and_steps,
    training.virtual_tokens_over_positions,
    training.full_finetune_high_lr,
    training.full_finetune_no_regression_gate,
    training.no_early_stopping,
    training.no_checkpoint_retention,
    training.early_stopping_metric_unknown,
    training.vision_only_setting,
    training.stage_artifacts_keep,
    # reproducibility
    provenance.unpinned_revision,
    provenance.remote_code_unpinned,
    provenance.revision_on_local_base,
    provenance.base_scheme,
    basemodel.hub_base_not_cached,
    basemodel.hub_name_not_loadable,
    basemodel.module_not_in_base,
    basemodel.base_files_missing,
    basemodel.base_head_labels,
    basemodel.pickled_weights,
    basemodel.remote_code,
    # resources and statistics
    resources.memory_over_budget,
    resources.memory_unknown,
    resources.gate_unresolvable,
    evaluation.gate_versus_model,
    # files the spec names
    files.file_not_found,
    # the data itself (read unless --no-data)
    data.data_unreadable,
    data.malformed_row,
    data.too_little_data,
    data.too_little_for_full,
    data.leakage_exact,
    data.leakage_near,
    data.leakage_group,
    data.leakage_time,
    data.duplicates_in_train,
    data.class_imbalance,
    data.degenerate_data,
    data.preference_identical,
    data.preference_length_bias,
    data.private_data,
    data.over_length,
    data.vision_data,
    data.no_early_stopping_small_data,
    data.slice_empty,
    data.label_unseen,
    data.empty_split,
    evalsets.eval_file_too_small,
    # hardware profiles (`--target`)
    target.precision_unsupported,
    target.target_memory,
    target.needs_cuda,
)

_BY_CODE = {r.code: r for r in RULES}
assert len(_BY_CODE) == len(RULES), "duplicate rule code"


def rule_for(code: str) -> Rule:
    return _BY_CODE[code]


def rule_for_or_none(code: str) -> Rule | None:
    return _BY_CODE.get(code)


def run_rules(checked: CheckedSpec, skip_data: bool = False) -> Iterator[Diagnostic]:
    """Every active rule whose stage applies; `skip_data` when data results came from the cache."""
    skip = {"frontend"} | ({"files", "data"} if checked.options.no_data else set())
    if skip_data:
        skip.add("data")
    if checked.options.target is None:
        skip.add("target")
    for r in RULES:
        if r.stage not in skip and r.status == "active":
            yield from r.run(checked)
