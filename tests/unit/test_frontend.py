"""The resolver: statements become typed, defaulted blocks with spans; `extends` merges files."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftc.compiler import schema as s
from ftc.compiler.check import FileResult
from ftc.compiler.docs import EXAMPLE_BASE, compose_example
from ftc.compiler.source import Span


def frontend_codes(result: FileResult) -> list[str]:
    return sorted(d.code for d in result.diagnostics if d.code < "FT100" and d.suppressed_reason is None)


def spec_of(result: FileResult) -> s.Spec:
    assert frontend_codes(result) == [], [d.message for d in result.diagnostics]
    assert result.checked is not None
    return result.checked.spec


def text_at(result: FileResult, span: Span | None) -> str:
    assert span is not None
    return result.sources[span.path].text[span.start:span.end]


@pytest.fixture
def check_spec(check_text):  # type: ignore[no-untyped-def]
    """Check EXAMPLE_BASE with some blocks replaced (compose_example)."""
    def run(snippet: str = "", **kw):  # type: ignore[no-untyped-def]
        return check_text(compose_example(snippet) if snippet else EXAMPLE_BASE, **kw)
    return run


# --- statements on one line ---------------------------------------------------------------------

def test_several_settings_on_one_line(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("method lora { rank 16 alpha 32 dropout 0.1 }\n"
                   "train { epochs 2 learning_rate 1e-4 batch_size 4; early_stopping patience 3 on val.loss "
                   "min_delta 0.01; checkpoints keep 1 every 100 steps }")
    sp = spec_of(r)
    assert (sp.method.rank, sp.method.alpha, sp.method.dropout) == (16, 32, 0.1)
    assert (sp.train.epochs, sp.train.learning_rate, sp.train.batch_size) == (2, 1e-4, 4)
    assert sp.train.early_stopping.patience == 3 and sp.train.early_stopping.min_delta == 0.01
    assert (sp.train.checkpoints.keep, sp.train.checkpoints.every) == (1, 100)


def test_data_files_on_one_line(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('data { train "a.jsonl" rows 10 val "b.jsonl" test "c.jsonl" rows 5 }')
    d = spec_of(r).data
    assert (d.train.path, d.train.rows) == ("a.jsonl", 10)
    assert (d.val.path, d.val.rows) == ("b.jsonl", None)
    assert (d.test.path, d.test.rows) == ("c.jsonl", 5)
    assert d.split_names() == ("train", "val", "test")


def test_an_unknown_word_after_a_setting_is_not_dropped(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("method lora { rank 8 alhpa 16 }")
    assert frontend_codes(r) == ["FT016"]
    (d,) = [d for d in r.diagnostics if d.code == "FT016"]
    assert "did you mean `alpha`?" in d.help and text_at(r, d.span) == "alhpa"


# --- defaults -----------------------------------------------------------------------------------

def test_defaults_are_filled(check_spec) -> None:  # type: ignore[no-untyped-def]
    base = EXAMPLE_BASE.replace("  train {\n    epochs 3; learning_rate 2e-4; batch_size 16\n"
                                "    early_stopping patience 2 on val.loss\n    checkpoints keep 2\n  }\n", "")
    base = base.replace("  budget { gpu_memory 24GB }\n", "")
    assert "  train {" not in base and "budget" not in base
    sp = spec_of(check_spec(base))  # a whole file passes through compose_example unchanged
    assert sp.train == s.Train()
    assert (sp.train.learning_rate, sp.train.batch_size, sp.train.precision, sp.train.schedule) == (
        2e-4, 8, "bf16", "linear")
    assert sp.train.early_stopping is None and sp.train.epochs is None
    assert sp.budget == s.Budget() and (sp.budget.gpus, sp.budget.nodes, sp.budget.strategy) == (1, 1, "none")
    assert sp.intent.stability == "stable"


def test_method_defaults(check_spec) -> None:  # type: ignore[no-untyped-def]
    sp = spec_of(check_spec("method lora { }"))
    assert (sp.method.rank, sp.method.alpha, sp.method.dropout) == (8, 16, 0.05)
    assert sp.method.targets == ("all-linear",) and sp.method.bias == "none" and sp.method.merge is False
    assert sp.method.given("rank") is False


# --- variant blocks and aliases -------------------------------------------------------------------

@pytest.mark.parametrize("method,cls", [("full", s.FullMethod), ("lora", s.LoraMethod), ("qlora", s.QLoraMethod),
                                        ("adapters", s.AdaptersMethod), ("prompt_tuning", s.PromptTuningMethod),
                                        ("prefix_tuning", s.PrefixTuningMethod)])
def test_method_kinds(check_spec, method: str, cls: type) -> None:  # type: ignore[no-untyped-def]
    r = check_spec(f"method {method} {{ }}")
    assert frontend_codes(r) == []
    sp = r.checked.spec
    assert type(sp.method) is cls and sp.method.kind == method
    assert text_at(r, sp.method.kind_span) == method


def test_qlora_inherits_lora_keys_and_has_its_own(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("method qlora { rank 16; bits 4; quant_type fp4 }")
    m = r.checked.spec.method
    assert (m.rank, m.alpha, m.bits, m.quant_type, m.double_quant) == (16, 16, 4, "fp4", True)


def test_signal_alias_and_task_alias(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('model { modality text; base "hf:org/enc"; revision "3f2a9c1"; task contrastive; params 110M }\n'
                   'signal embedding { anchor "query"; positive "doc"; temperature 0.1 }')
    sp = spec_of(r)
    assert type(sp.signal) is s.ContrastiveSignal and sp.signal.kind == "contrastive"
    assert (sp.signal.anchor, sp.signal.positive, sp.signal.temperature) == ("query", "doc", 0.1)
    assert text_at(r, sp.signal.kind_span) == "embedding"  # the word the user wrote
    assert sp.model.task == "image_text_contrastive"


def test_enum_aliases(check_spec) -> None:  # type: ignore[no-untyped-def]
    sp = spec_of(check_spec('intent { goal behaviour; owner "ml" }\neval { metric json_validity; metric em; '
                            "gate f1 >= 0.8 on test; metric f1 }"))
    assert sp.intent.goal == "behavior"
    assert [m.name for m in sp.eval.metrics] == ["format_validity", "exact_match", "f1"]


def test_keys_of_another_kind_are_unknown(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("method lora { rank 8; bits 4 }")
    assert frontend_codes(r) == ["FT011"]
    (d,) = r.diagnostics
    assert d.message == "unknown key `bits` in `method lora`" and text_at(r, d.span) == "bits"


# --- data -------------------------------------------------------------------------------------------

def test_fields_mapping(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('data { train "a.jsonl" rows 2000; val "b.jsonl" rows 300; test "c.jsonl" rows 300\n'
                   '  fields { text "body"; label "category" } }\n'
                   'signal sft { input "text"; target "label" }')
    d = spec_of(r).data
    assert isinstance(d.fields, s.DataFields)
    assert dict(d.fields.mapping) == {"text": "body", "label": "category"}
    assert text_at(r, d.fields.at("text")) == '"body"'


def test_fields_mapping_takes_one_string(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('data { train "a.jsonl"; val "b.jsonl"; test "c.jsonl"; fields { text body } }')
    assert frontend_codes(r) == ["FT013"]


@pytest.mark.parametrize("ratio,expected", [
    ("80/10/10", (0.8, 0.1, 0.1)),
    ("8/1/1", (0.8, 0.1, 0.1)),
    ("90/10", (0.9, 0.1)),
    ("0.7/0.15/0.15", (0.7, 0.15, 0.15)),
])
def test_split_ratios_are_normalised(  # type: ignore[no-untyped-def]
        check_spec, ratio: str, expected: tuple[float, ...]) -> None:
    r = check_spec(f'data {{ source "all.jsonl" rows 3000; split {ratio} by group "customer_id" }}')
    split = spec_of(r).data.split
    assert split.ratios == pytest.approx(expected)
    assert sum(split.ratios) == pytest.approx(1.0)
    assert (split.by, split.key) == ("group", "customer_id")
    assert spec_of(r).data.split_names() == ("train", "val", "test")[: len(expected)]


def test_split_defaults_to_random(check_spec) -> None:  # type: ignore[no-untyped-def]
    split = check_spec('data { source "all.jsonl"; split 80/10/10 }').checked.spec.data.split
    assert (split.by, split.key) == ("random", None)


def test_slices(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('data { train "a.jsonl" rows 2000; val "b.jsonl" rows 300; test "c.jsonl" rows 300\n'
                   '  slice email where channel == "email" and priority >= 2 }\n'
                   "eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.email }")
    (slc,) = spec_of(r).data.slices
    assert slc.name == "email"
    assert [(c.field, c.op, c.value) for c in slc.conditions] == [("channel", "==", "email"), ("priority", ">=", 2)]


# --- gates --------------------------------------------------------------------------------------------

def _gates(check_spec, gates: str) -> tuple[FileResult, tuple[s.Gate, ...]]:  # type: ignore[no-untyped-def]
    r = check_spec("data { train \"a.jsonl\" rows 2000; val \"b.jsonl\" rows 300; test \"c.jsonl\" rows 300\n"
                   '  slice email where channel == "email" }\n'
                   f"eval {{ metric f1 macro; metric accuracy; {gates} }}")
    return r, spec_of(r).eval.gates


def test_gate_on_a_slice(check_spec) -> None:  # type: ignore[no-untyped-def]
    r, (g,) = _gates(check_spec, "gate f1 >= 0.85 on test.email")
    assert (g.metric, g.qualifier, g.op, g.threshold, g.split, g.slice) == ("f1", None, ">=", 0.85, "test", "email")
    assert text_at(r, g.metric_span) == "f1"
    assert text_at(r, g.span) == "f1 >= 0.85 on test.email"


def test_latency_gate_in_seconds(check_spec) -> None:  # type: ignore[no-untyped-def]
    _, (g,) = _gates(check_spec, "gate latency.p95 <= 50ms")
    assert (g.metric, g.qualifier, g.op) == ("latency", "p95", "<=")
    assert g.threshold == pytest.approx(0.05) and g.threshold_text == "50ms"
    assert g.split is None


@pytest.mark.parametrize("text,value", [("90%", 0.9), ("0.9", 0.9), ("85.5%", 0.855)])
def test_percent_thresholds(check_spec, text: str, value: float) -> None:  # type: ignore[no-untyped-def]
    _, (g,) = _gates(check_spec, f"gate accuracy >= {text} on test")
    assert g.threshold == pytest.approx(value) and g.threshold_text == text


def test_regression_gate(check_spec) -> None:  # type: ignore[no-untyped-def]
    _, (g,) = _gates(check_spec, 'gate regression <= 0.02 vs base on "data/general.jsonl"')
    assert (g.metric, g.versus, g.dataset, g.split) == ("regression", "base", "data/general.jsonl", None)


def test_latency_gate_needs_a_time(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("eval { metric f1 macro; gate f1 >= 0.85 on test; gate latency.p95 <= 50 }")
    assert frontend_codes(r) == ["FT013"]


# --- rlhf ---------------------------------------------------------------------------------------------

RLHF = """\
model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }
signal rlhf {
  reward {
    chosen "better"
    data { source "data/prefs.jsonl" rows 500; split 80/10/10 by group "topic" }
    train { epochs 1; learning_rate 1e-5 }
  }
  policy {
    algorithm grpo; generations 8
    train { steps 200 }
  }
}
eval { metric loss; gate loss <= 2.0 on test }
"""


def test_rlhf_stages_have_their_own_settings(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec(RLHF)
    sig = spec_of(r).signal
    assert type(sig) is s.RlhfSignal and sig.kind == "rlhf"
    rw, po = sig.reward, sig.policy
    assert (rw.prompt, rw.chosen, rw.rejected) == ("prompt", "better", "rejected")
    assert rw.data.source.path == "data/prefs.jsonl" and rw.data.split.key == "topic"
    assert (rw.train.epochs, rw.train.learning_rate) == (1, 1e-5)
    assert (po.algorithm, po.generations, po.kl_coef) == ("grpo", 8, 0.05)
    assert po.train.steps == 200
    assert spec_of(r).data.train.path == "data/train.jsonl"  # the policy's prompts: the spec's data


def test_policy_prompts_live_in_the_spec_data(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec(RLHF.replace("train { steps 200 }", 'data { train "data/prompts.jsonl" }'))
    (d,) = [d for d in r.diagnostics if d.code == "FT010"]
    assert d.message == "unknown block `data` in `policy`"


def test_rlhf_needs_both_stages(check_spec) -> None:  # type: ignore[no-untyped-def]
    policy = RLHF[RLHF.index("  policy {"):RLHF.index("  }\n}\n") + 4]
    r = check_spec(RLHF.replace(policy, ""))
    assert frontend_codes(r) == ["FT020"]
    (d,) = [d for d in r.diagnostics if d.code == "FT020"]
    assert d.message == "`signal rlhf` is missing `policy`" and text_at(r, d.span) == "signal"


# --- extends ------------------------------------------------------------------------------------------

PARENT = """\
defaults {
  train {
    epochs 5
    learning_rate 2e-4
    early_stopping patience 2 on val.loss
    checkpoints keep 2
  }
  eval {
    metric f1 macro
    gate f1 >= 0.8 on test
  }
}
"""


def _child(body: str) -> str:
    spec = compose_example(body)
    return 'extends "team.ftspec"\n' + spec


def test_extends_merges_and_accumulates(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "team.ftspec").write_text(PARENT, encoding="utf-8")
    r = check_text(_child("train { override learning_rate 1e-4; batch_size 4 }\n"
                          "eval { metric accuracy; gate accuracy >= 0.9 on test }"))
    sp = spec_of(r)
    assert (sp.train.epochs, sp.train.learning_rate, sp.train.batch_size) == (5, 1e-4, 4)
    assert sp.train.early_stopping is not None and sp.train.checkpoints.keep == 2
    assert [(g.metric, g.threshold) for g in sp.eval.gates] == [("f1", 0.8), ("accuracy", 0.9)]
    assert [m.name for m in sp.eval.metrics] == ["f1", "accuracy"]
    assert sp.train.at("epochs").path == "team.ftspec"  # inherited values point into the parent
    assert text_at(r, sp.train.at("epochs")) == "5"
    assert sp.train.at("learning_rate").path == "spec.ftspec"
    assert text_at(r, sp.train.at("learning_rate")) == "1e-4"
    assert sp.eval.gates[0].span.path == "team.ftspec" and sp.eval.gates[1].span.path == "spec.ftspec"


def test_implicit_override_points_into_the_parent(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "team.ftspec").write_text(PARENT, encoding="utf-8")
    r = check_text(_child("train { learning_rate 1e-4 }"))
    assert frontend_codes(r) == ["FT018"]
    (d,) = [d for d in r.diagnostics if d.code == "FT018"]
    assert d.span.path == "spec.ftspec" and text_at(r, d.span) == "learning_rate 1e-4"
    (rel,) = d.related
    assert rel.span.path == "team.ftspec" and text_at(r, rel.span) == "learning_rate 2e-4"


def test_extends_chain(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "org.ftspec").write_text("defaults {\n  budget { gpu_memory 80GB; gpus 2 }\n}\n", encoding="utf-8")
    (tmp_path / "team.ftspec").write_text('extends "org.ftspec"\n' + PARENT.replace(
        "defaults {\n", "defaults {\n  budget { override gpu_memory 40GB }\n"), encoding="utf-8")
    child = _child("train { override epochs 3 }").replace("  budget { gpu_memory 24GB }\n", "")
    r = check_text(child.replace("  eval {\n    metric f1 macro\n    gate f1 >= 0.85 on test\n  }\n", ""))
    sp = spec_of(r)
    assert sp.budget.gpu_memory == 40e9 and sp.budget.gpus == 2
    assert sp.budget.at("gpus").path == "org.ftspec"


def test_extends_defaults_file_checks_alone(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    r = check_text(PARENT, name="team.ftspec")
    assert r.kind == "defaults" and r.checked is None and r.diagnostics == ()


# --- spans ----------------------------------------------------------------------------------------------

def test_spans_point_at_values(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("")
    sp = spec_of(r)
    assert text_at(r, sp.model.at("base")) == '"hf:org/encoder"'
    assert text_at(r, sp.model.at("labels")) == '["billing", "bug", "account"]'
    assert text_at(r, sp.model.at("params")) == "110M"
    assert text_at(r, sp.train.at("learning_rate")) == "2e-4"
    assert text_at(r, sp.budget.at("gpu_memory")) == "24GB"
    assert text_at(r, sp.data.train.span) == '"data/train.jsonl" rows 2000'
    assert text_at(r, sp.train.early_stopping.span) == "patience 2 on val.loss"
    assert text_at(r, sp.method.kind_span) == "lora"
    assert text_at(r, sp.at("model")) == "model"  # a block's span is its key


def test_diagnostics_point_at_the_bad_value(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("budget { gpu_memory 24ms }")
    (d,) = r.diagnostics
    assert d.code == "FT015" and text_at(r, d.span) == "24ms"


def test_duplicate_key_shows_both(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("method lora { rank 8; rank 16 }")
    (d,) = r.diagnostics
    assert d.code == "FT012" and text_at(r, d.span) == "rank 16"
    assert text_at(r, d.related[0].span) == "rank 8"


# --- known defects (strict: these turn red when fixed, so the marker gets removed) -----------------------

def test_unknown_block_suggests_its_prefix(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec("evaluation { metric f1 macro; gate f1 >= 0.85 on test }")
    (d,) = [d for d in r.diagnostics if d.code == "FT010"]
    assert "did you mean `eval`" in d.help


def test_invalid_required_value_is_not_also_missing(check_spec) -> None:  # type: ignore[no-untyped-def]
    r = check_spec('model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task clasification; '
                   'labels ["a", "b"]; params 110M }')
    assert frontend_codes(r) == ["FT014"]
