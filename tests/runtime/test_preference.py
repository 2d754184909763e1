"""DPO and RLHF (reward model, then RLOO/GRPO) on a tiny GPT-2, CPU only, a few steps each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from tests.runtime import _pref_fixtures as F

STEP_KEYS = {"event", "step", "loss", "lr", "grad_norm", "samples_per_s", "rss_mb"}

LORA = 'method lora {\n  rank 4\n  alpha 8\n  targets ["c_attn"]\n}\n'
FULL = "method full {\n}\n"
TRAIN = """train {
  epochs 1
  batch_size 4
  learning_rate %s
  precision fp32
  seed 0
  early_stopping patience 2 on val.loss
  checkpoints keep 1 every 2 steps
}
"""
DPO_DATA = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 64 truncate\n}\n'


@pytest.fixture(scope="module")
def dpo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.data_folder(tmp_path_factory.mktemp("dpo"), F.preference_rows(150), F.make_tiny_gpt2)


def _dpo_spec(method: str, lr: str = "1e-3") -> str:
    return F.spec_text("generation", method, "signal dpo {\n  beta 0.1\n}\n", DPO_DATA, TRAIN % lr,
                       "accuracy", "accuracy >= 0.5")


def _steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "step"]


def _only_safetensors(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    assert any(n.endswith(".safetensors") for n in names), names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))], names


def test_dpo_lora_trains_and_exports_a_plain_peft_adapter(dpo_root: Path) -> None:
    import torch
    from ftc.runtime.backends.preference import train_dpo
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = F.fresh(dpo_root, "lora")
    events: list[dict[str, Any]] = []
    ctx = F.context(root, _dpo_spec(LORA), events, max_steps=3)
    result = train_dpo(ctx)

    assert result.kind == "adapter" and result.steps == 3
    steps = _steps(events)
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert all(STEP_KEYS <= set(e) and math.isfinite(e["loss"]) for e in steps)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
    assert any(e["event"] == "eval" and e["split"] == "val" and math.isfinite(e["loss"]) for e in events)
    assert result.history == events
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"

    adapter = result.model_dir
    assert adapter == root / "run" / "artifacts" / "adapter"
    assert (adapter / "adapter_config.json").exists() and not (adapter / "ref").exists()
    _only_safetensors(adapter)
    base = AutoModelForCausalLM.from_pretrained(root / "model")  # plain peft + transformers, no ftc
    model = PeftModel.from_pretrained(base, adapter)
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(float(p.abs().sum()) > 0 for p in trained_b)  # B starts at zero
    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape[-1] == base.config.vocab_size


def test_dpo_evaluation_compares_with_the_base(dpo_root: Path) -> None:
    from ftc.runtime.backends.preference import evaluate

    root = dpo_root / "lora"  # trained by the test above
    ctx = F.context(root, _dpo_spec(LORA), [], max_steps=3)
    base = evaluate(ctx, None, "test")
    tuned = evaluate(ctx, root / "run" / "artifacts" / "adapter", "test")
    keys = {"accuracy", "loss", "perplexity", "dpo_loss", "reward_margin"}
    assert keys <= set(base.metrics) and keys <= set(tuned.metrics)
    assert base.n == tuned.n == len(ctx.parts["test"])
    assert base.metrics["dpo_loss"] == pytest.approx(math.log(2)) and base.metrics["reward_margin"] == 0
    assert tuned.metrics["reward_margin"] != 0 and all(math.isfinite(v) for v in tuned.metrics.values())
    # accuracy is the implicit reward's (TRL, RewardBench): the base, its own reference, has no preference
    assert base.metrics["accuracy"] == 0.5 and 0 <= base.metrics["likelihood_accuracy"] <= 1
    assert tuned.metrics["accuracy"] != 0.5


def test_dpo_resumes_from_its_last_checkpoint(dpo_root: Path) -> None:
    from ftc.runtime.backends.preference import train_dpo

    root = F.fresh(dpo_root, "resume")
    first: list[dict[str, Any]] = []
    train_dpo(F.context(root, _dpo_spec(LORA), first, max_steps=2))
    assert (root / "run" / "checkpoints" / "checkpoint-2" / "COMPLETE").exists()
    second: list[dict[str, Any]] = []
    result = train_dpo(F.context(root, _dpo_spec(LORA), second, max_steps=4, resume=True))
    assert result.steps == 4
    assert [e["step"] for e in _steps(second)] == [3, 4]


def test_dpo_full_fine_tune_exports_a_full_model(dpo_root: Path) -> None:
    from ftc.runtime.backends.preference import train_dpo
    from transformers import AutoModelForCausalLM

    root = F.fresh(dpo_root, "full")
    events: list[dict[str, Any]] = []
    result = train_dpo(F.context(root, _dpo_spec(FULL, "1e-5"), events, max_steps=2,
                                        allow=("FT203",)))  # a full fine-tune on little data
    assert result.kind == "full" and result.steps == 2
    assert all(math.isfinite(e["loss"]) for e in _steps(events))
    _only_safetensors(result.model_dir)
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert model.config.n_layer == 2


# ---------------------------------------------------------------------------------------------
# RLHF

RLHF_SIGNAL = """signal rlhf {
  reward {
    data {
      source "prefs.jsonl"
      split 80/10/10
    }
    train {
      learning_rate 1e-3
    }
  }
  policy {
    algorithm %s
    generations 2
    kl_coef 0.05
    train {
      batch_size 2
    }
  }
}
"""
RLHF_DATA = ('data {\n  train "prompts.jsonl"\n  val "val.jsonl"\n  test "test.jsonl"\n'
             "  max_length 64 truncate\n}\n")


def _rlhf_spec(algorithm: str) -> str:
    return F.spec_text("generation", LORA, RLHF_SIGNAL % algorithm, RLHF_DATA, TRAIN % "1e-4",
                       "loss", "loss <= 10")


@pytest.fixture(scope="module")
def rlhf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.rlhf_folder(tmp_path_factory.mktemp("rlhf"), "prefs.jsonl")


@pytest.fixture(scope="module")
def reward(rlhf_root: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    from ftc.runtime.backends.preference import train_reward

    events: list[dict[str, Any]] = []
    ctx = F.context(rlhf_root, _rlhf_spec("rloo"), events, max_steps=4)
    return ctx, train_reward(ctx), events


def test_stage_train_settings_merge_over_the_spec(reward: tuple[Any, Any, list[dict[str, Any]]]) -> None:
    from ftc.runtime.backends.preference import train_settings

    ctx = reward[0]
    assert train_settings(ctx, "reward").learning_rate == 1e-3  # written in the stage
    assert train_settings(ctx, "reward").batch_size == 4  # from the spec's train
    assert train_settings(ctx, "policy").batch_size == 2
    assert train_settings(ctx, "policy").learning_rate == 1e-4
    assert train_settings(ctx, "policy").early_stopping is not None


def test_reward_model_trains_on_its_own_data(reward: tuple[Any, Any, list[dict[str, Any]]]) -> None:
    from ftc.runtime.backends.preference import reward_accuracy
    from transformers import AutoModelForSequenceClassification

    ctx, result, events = reward
    assert ctx.stage_parts and len(ctx.stage_parts["train"]) > len(ctx.parts["train"]) - 20
    assert result.kind == "reward" and result.steps == 4
    assert result.model_dir == ctx.run_dir / "artifacts" / "reward"
    assert (ctx.run_dir / "reward" / "checkpoints").is_dir()
    assert all(STEP_KEYS <= set(e) and math.isfinite(e["loss"]) for e in _steps(events))
    _only_safetensors(result.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    accuracy = reward_accuracy(ctx, result.model_dir, "test")
    assert 0.0 <= accuracy <= 1.0
    assert accuracy > 0.5  # chosen answers are short, rejected long: four steps learn that much


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_policy_optimises_against_the_reward_model(rlhf_root: Path, algorithm: str,
                                                   reward: tuple[Any, Any, list[dict[str, Any]]]) -> None:
    from ftc.runtime.backends.preference import evaluate, train_policy
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import torch
    from ftc.runtime.backends import preference_common as pc

    root = rlhf_root  # the same run folder as the reward model: run/artifacts/reward is found there
    events: list[dict[str, Any]] = []
    ctx = F.context(root, _rlhf_spec(algorithm), events, max_steps=2)
    seen: list[float] = []
    real_fit = pc.fit

    def fit(sctx: Any, trainer: Any, *args: Any, **kwargs: Any) -> Any:  # the dropout the loss sees
        seen.extend(m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))
        return real_fit(sctx, trainer, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(pc, "fit", fit)
        result = train_policy(ctx, reward[1].model_dir, max_new_tokens=6)
    assert seen and set(seen) == {0.0}  # the importance ratio of on-policy samples is 1, not dropout noise

    assert result.kind == "adapter" and result.steps == 2
    steps = _steps(events)
    assert [e["step"] for e in steps] == [1, 2]
    assert all(STEP_KEYS <= set(e) and math.isfinite(e["loss"]) and math.isfinite(e["reward"]) for e in steps)
    assert (root / "run" / "policy" / "checkpoints").is_dir()
    _only_safetensors(result.model_dir)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "model"), result.model_dir)
    if algorithm == "rloo":  # evaluation does not depend on the optimiser: once is enough
        import json

        from ftc.runtime.backends.policy import evaluate_rows

        pairs = [json.loads(line) for line in (root / "prefs.jsonl").read_text().splitlines()[:12]]
        before = evaluate_rows(ctx, None, pairs, "pairs")
        assert before.metrics["accuracy"] == 0.5  # the implicit reward: the base, its own reference, prefers nothing
        assert 0 <= before.metrics["likelihood_accuracy"] <= 1
        after = evaluate_rows(ctx, result.model_dir, pairs, "pairs")
        assert after.metrics["accuracy"] != 0.5 and 0 <= after.metrics["accuracy"] <= 1, after.metrics
        ev = evaluate(ctx, result.model_dir, "test")
        assert {"loss", "perplexity", "reward", "reward_accuracy"} <= set(ev.metrics)
        assert ev.extra["reference_field"] == "reference" and ev.n == len(ctx.parts["test"])
        assert all(math.isfinite(v) for v in ev.metrics.values())
        # the base's replies are scored by the same reward model (`gate reward >= 0.1 vs base`)
        from ftc.runtime.gates import evaluate as gates

        base = evaluate(ctx, None, "test")
        assert math.isfinite(base.metrics["reward"]) and base.metrics["reward_accuracy"] == ev.metrics["reward_accuracy"]
        [gate] = gates([{"metric": "reward", "qualifier": None, "op": ">=", "threshold": -1e9, "split": "test",
                         "slice": None, "dataset": None, "versus": "base", "text": "-1e9"}],
                       {"tuned:test": ev, "base:test": base})
        assert gate.passed and gate.value == ev.metrics["reward"] - base.metrics["reward"]


# ---------------------------------------------------------------------------------------------
# RLHF under non-default field names (issue 9): both stages read the names their blocks give

RENAMED = {"prompt": "question", "chosen": "good", "rejected": "bad"}
RENAMED_SIGNAL = """signal rlhf {
  reward {
    prompt "question"
    chosen "good"
    rejected "bad"
    train {
      learning_rate 1e-3
    }
  }
  policy {
    algorithm rloo
    prompt "question"
    generations 2
    train {
      batch_size 2
    }
  }
}
"""


def test_ftc_run_of_rlhf_with_renamed_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's spec shape: a reward stage without `data` trains on the spec's data, the
    policy on its prompts, under `question`/`good`/`bad`. `ftc check` passes it (no false FT205,
    FT209, FT211) and `ftc run --max-steps 1` trains both stages and evaluates."""
    from ftc.runtime.registry import Registry
    from ftc.runtime.run import EXIT_GATES, EXIT_PROMOTED, run

    rows = [{RENAMED.get(k, k): v for k, v in r.items()} for r in F.preference_rows(150)]
    F.data_folder(tmp_path, rows, F.make_tiny_gpt2)
    (tmp_path / "spec.ftspec").write_text(F.spec_text("generation", LORA, RENAMED_SIGNAL, DPO_DATA, TRAIN % "1e-4",
                                                      "loss", "loss <= 10"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    outcome = run("spec.ftspec", max_steps=1)
    assert outcome.exit_code in (EXIT_PROMOTED, EXIT_GATES), outcome.message
    [row] = Registry().runs()
    record = row["record"].to_json()
    assert record["data"]["sizes"]["train"] > 100
    events = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    trained = [e for e in events if e["event"] == "step"]
    assert len(trained) == 2 and all(math.isfinite(e["loss"]) for e in trained)  # one step per stage
    assert "tuned:test" in record["metrics"] and math.isfinite(record["metrics"]["tuned:test"]["loss"])
