"""Every key of the schema has a role (compiler/schema.py ROLES), and the per-backend table of the
keys the runtime applies (compiler/honoured.py) names only real `run` keys: a new key is applied
by some backend, marked check-/estimate-/record-only with its reason, or listed as applied
nowhere yet with why. tests/runtime/test_key_coverage.py observes each applied key in tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ftc.compiler import honoured as h
from ftc.compiler import schema as s
from ftc.compiler.check import CheckOptions, check_file

from tests.unit.test_imports import HEAVY, imported_modules

KEYS = s.key_paths()


def test_key_paths_walk_every_block_and_variant() -> None:
    for path in ("intent.owner", "method.lora.rank", "method.qlora.bits", "method.prefix_tuning.projection",
                 "signal.rlhf.reward.data.dedup", "signal.rlhf.reward.train.learning_rate",
                 "signal.rlhf.policy.train.seed", "signal.rlhf.policy.kl_coef", "signal.contrastive.caption",
                 "data.fields", "data.slices", "eval.metrics", "tracking.alias", "budget.max_time"):
        assert path in KEYS, path
    blocks = ("intent", "signal.rlhf.reward", "signal.rlhf.policy", "signal.rlhf.reward.data", "train", "tracking")
    assert not [b for b in blocks if b in KEYS], "blocks are walked into, not listed"
    assert KEYS["signal.rlhf.reward.data.dedup"].block is s.Data


@pytest.mark.parametrize("path", sorted(KEYS))
def test_every_key_has_a_role_and_every_other_role_a_reason(path: str) -> None:
    k = KEYS[path]
    assert k.applies in s.ROLES, path
    if k.applies == "run":
        assert k.reason is None, path
    else:
        assert k.reason and len(k.reason.split()) >= 5, f"{path}: say why the runtime need not apply it"


def test_roles_without_a_reason_are_refused_when_the_schema_is_built() -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        s.key(s.t.integer(0), "a setting", 0, applies="check")
    with pytest.raises(ValueError, match="unknown key role"):
        s.key(s.t.integer(0), "a setting", 0, applies="later", reason="some day, maybe, perhaps")
    with pytest.raises(ValueError, match="takes no reason"):
        s.sub(s.Train, "a block", reason="the runtime applies it anyway")


def test_describe_shows_who_reads_a_key_and_why() -> None:
    fields = s.schema_fields(s.Budget)
    assert s.describe(fields["max_time"]) == "wall-clock limit, e.g. 2h"  # a run key: its doc alone
    shown = s.describe(fields["nodes"])
    assert shown.startswith("nodes (estimate-only: ") and "one machine" in shown


def test_backends_are_the_fixed_six() -> None:
    assert h.BACKENDS == ("text.sft", "text.dpo", "text.rlhf", "text.contrastive", "vision", "multimodal")
    assert set(h.HONOURED) == set(h.BACKENDS)


@pytest.mark.parametrize("backend", h.BACKENDS)
def test_honoured_keys_are_real_run_keys(backend: str) -> None:
    unknown = sorted(k for k in h.HONOURED[backend] if k not in KEYS)
    assert not unknown, f"{backend} lists keys the schema does not have: {unknown}"
    not_run = sorted(k for k in h.HONOURED[backend] if KEYS[k].applies != "run")
    assert not not_run, f"{backend} lists keys whose role is not `run`: {not_run}"


def test_every_run_key_is_applied_somewhere_or_says_why_not() -> None:
    applied = frozenset().union(*h.HONOURED.values())
    nowhere = sorted(h.run_keys() - applied - set(h.UNHONOURED))
    assert not nowhere, (f"`run` keys no backend applies: {nowhere}. Apply each in a backend (and list it in "
                         "compiler/honoured.py HONOURED), give it another role with a reason (compiler/schema.py), "
                         "or say in UNHONOURED why no backend applies it yet")
    assert not set(h.UNHONOURED) & applied, "a key in UNHONOURED is applied by a backend"
    assert set(h.UNHONOURED) <= h.run_keys()
    assert all(len(why.split()) >= 5 for why in h.UNHONOURED.values())


def test_task_exceptions_narrow_their_backend() -> None:
    for (backend, task), keys in h.NOT_FOR_TASK.items():
        assert backend in h.BACKENDS and task in s.TASKS
        assert keys <= h.HONOURED[backend], (backend, task)
        assert not keys & h.honoured(backend, task)
    assert "train.packing" in h.honoured("text.sft", "generation")
    assert "train.packing" not in h.honoured("text.sft", "classification")


def test_written_keys_spell_the_paths_of_what_a_spec_writes(tmp_path: Path) -> None:
    spec_text = """spec "w" {
  intent { goal style }
  model { modality text; base "model"; task generation }
  method qlora { rank 4; bits 4 }
  signal rlhf {
    reward { chosen "good"; data { source "prefs.jsonl"; split 90/10; dedup exact } }
    policy { kl_coef 0.1; train { learning_rate 1e-5 } }
  }
  data { source "prompts.jsonl"; split 80/10/10; fields { prompt "question" } }
  eval { metric loss; gate loss <= 9 on test }
}
"""
    path = tmp_path / "w.ftspec"
    path.write_text(spec_text, encoding="utf-8")
    result = check_file(path, CheckOptions(no_data=True))
    assert result.checked is not None
    written = [p for p, _ in h.written_keys(result.checked.spec)]
    assert written == ["intent.goal", "model.modality", "model.base", "model.task", "method.qlora.rank",
                       "method.qlora.bits", "signal.rlhf.reward.chosen", "signal.rlhf.reward.data.source",
                       "signal.rlhf.reward.data.split", "signal.rlhf.reward.data.dedup",
                       "signal.rlhf.policy.kl_coef", "signal.rlhf.policy.train.learning_rate", "data.source",
                       "data.split", "data.fields", "eval.metrics", "eval.gates"]
    spans = dict(h.written_keys(result.checked.spec))
    assert spans["signal.rlhf.reward.data.dedup"].line == 6  # where the user wrote it
    assert set(written) - h.honoured("text.rlhf", "generation") == {"intent.goal"}  # a check-only key


def test_key_reference_lists_every_key_with_its_role() -> None:
    table = h.key_reference()
    assert table.count("\n| `") == len(KEYS)
    assert "| `method.qlora.merge` | run | none: an update merged into a 4-bit base" in table
    assert "| `method.lora.rank` | run | text.sft, text.dpo, text.rlhf, text.contrastive, vision, multimodal |" in table
    assert "| `intent.owner` | record | for people:" in table


def test_honoured_imports_no_heavy_library(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FTC_DEBUG")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ftc.compiler.honoured"], check=False,
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules = imported_modules(proc.stderr)
    assert "ftc.compiler.honoured" in modules
    assert not sorted(m for m in modules if m.split(".")[0] in HEAVY)
