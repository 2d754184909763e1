"""Every text method × training signal that the language allows trains and leaves loadable artifacts.

The allowed (method, signal, task) triples come from the compiler itself: a minimal spec per triple
is checked with `--no-data`, and a triple is allowed when no compatibility rule (the rules of
compiler/rules/compat.py, FT120–FT126) refuses it. Each allowed triple must then be trained, here
or in the test named for it in `_elsewhere()`, or share the runtime path of a trained triple with
the same method and signal (extraction trains exactly as generation; DPO and RLHF over a
`preference` task exactly as over `generation`): `test_runtime_matrix_covers_every_allowed_pair`
fails when a rule change allows a pair that nothing trains. Each refused triple must be refused by
a compatibility rule, with a help line.

Here, one model per (method, signal) pair trains two steps on a tiny model (CPU, one thread); its
artifact is loaded back with plain transformers/peft (ftc's bottleneck adapters through the
documented loader in bottleneck.py) and must reproduce the in-memory model's outputs and differ
from the base's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from ftc.compiler import schema
from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.rules import RULES, compat
from ftc.runtime.backends import bottleneck, loading

from tests.runtime import _pref_fixtures as F

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
COMPAT_CODES = frozenset(r.code for r in RULES if r.check is not None and r.check.__module__ == compat.__name__)

# How the runtime tests spell each method (tiny settings).
METHOD_BLOCKS = {
    "full": "method full {\n}\n",
    "qlora": "method qlora {\n  rank 4\n  alpha 8\n}\n",
    "adapters": "method adapters {\n  bottleneck 8\n  placement both\n}\n",
    "prompt_tuning": "method prompt_tuning {\n  virtual_tokens 4\n}\n",
    "prefix_tuning": "method prefix_tuning {\n  prefix_length 4\n}\n",
}

# The (method, signal) pairs trained in this file, with the task each one runs.
DPO_HERE = {"qlora": "preference", "adapters": "generation", "prompt_tuning": "preference",
            "prefix_tuning": "generation"}
# prompt and prefix tuning under RLHF fail in training today: `ftc check` refuses them (FT120)
RLHF_HERE = {"full": ("preference", "grpo"), "qlora": ("generation", "rloo"), "adapters": ("preference", "rloo")}
CONTRASTIVE_HERE = ("qlora", "adapters", "prompt_tuning", "prefix_tuning")


def _here() -> dict[tuple[str, str, str], str]:
    out = {(m, "dpo", t): f"test_dpo_pair[{m}]" for m, t in DPO_HERE.items()}
    out.update({(m, "rlhf", t): f"test_rlhf_pair[{m}]" for m, (t, _) in RLHF_HERE.items()})
    out.update({(m, "contrastive", "embedding"): f"test_contrastive_pair[{m}]" for m in CONTRASTIVE_HERE})
    return out


def _elsewhere() -> dict[tuple[str, str, str], str]:
    """Triples whose training and artifact reload another runtime test checks (it must exist)."""
    from tests.runtime import test_embedding, test_preference, test_text_eval, test_text_methods

    out = {(method.split(" ")[0], "sft", task): f"test_text_methods.py::CASES ({task}, {method})"
           for task, method, _ in test_text_methods.CASES}
    named = {
        ("full", "sft", "extraction"): (test_text_eval, "test_generation_metrics_after_learning_a_constant_answer"),
        ("lora", "dpo", "generation"): (test_preference, "test_dpo_lora_trains_and_exports_a_plain_peft_adapter"),
        ("full", "dpo", "generation"): (test_preference, "test_dpo_full_fine_tune_exports_a_full_model"),
        ("lora", "rlhf", "generation"): (test_preference, "test_policy_optimises_against_the_reward_model"),
        ("full", "contrastive", "embedding"): (test_embedding,
                                               "test_full_contrastive_learns_and_exports_a_plain_encoder"),
        ("lora", "contrastive", "embedding"): (test_embedding,
                                               "test_lora_contrastive_learns_and_merges_into_the_encoder"),
    }
    for triple, (module, name) in named.items():
        assert callable(getattr(module, name, None)), f"{module.__name__}.{name} is gone: {triple} lost its test"
        out[triple] = f"{module.__name__}::{name}"
    return out


def _runtime_path(task: str) -> tuple[str, bool]:
    """What the task decides in the text runtime: the model class and whether it is a classifier
    (the head, the peft task type, Trainer vs TRL); everything else follows the signal."""
    from ftc.runtime.backends.hf import is_classification

    return loading.model_class(task).__name__, is_classification(task)


# ---------------------------------------------------------------------------------------------
# What the compiler allows


MINIMAL_SIGNAL = {"sft": 'sft { input "text"; target "label" }', "dpo": "dpo { beta 0.1 }",
                  "rlhf": "rlhf { reward { }; policy { algorithm rloo } }",
                  "contrastive": 'contrastive { anchor "query"; positive "positive" }'}
MINIMAL_METHOD = {"full": "full {}", "lora": "lora { rank 4 }", "qlora": "qlora { rank 4 }",
                  "adapters": "adapters { bottleneck 8 }", "prompt_tuning": "prompt_tuning { virtual_tokens 4 }",
                  "prefix_tuning": "prefix_tuning { prefix_length 4 }"}


def _minimal_spec(method: str, signal: str, task: str) -> str:
    extra = ' labels ["a", "b"];' if "classification" in task else ""
    extra += ' output_schema "schema.json";' if task == "extraction" else ""
    return f"""spec "matrix" {{
  intent {{ goal behavior; stability stable; owner "tests" }}
  model {{ modality text; base "model"; task {task};{extra} params 1M }}
  method {MINIMAL_METHOD[method]}
  signal {MINIMAL_SIGNAL[signal]}
  data {{ train "train.jsonl"; val "val.jsonl"; test "test.jsonl" }}
  train {{ epochs 1; early_stopping patience 2 on val.loss; checkpoints keep 1 }}
  eval {{ metric loss; gate loss <= 5.0 on test }}
}}
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], list[Any]]:
    """(method, signal, task) -> the errors `ftc check --no-data` reports for a minimal text spec,
    over every method and signal of the language and every task."""
    assert set(MINIMAL_METHOD) == set(schema.METHODS) and set(MINIMAL_SIGNAL) == set(schema.SIGNALS)
    folder = tmp_path_factory.mktemp("matrix-specs")
    out = {}
    for method in schema.METHODS:
        for signal in schema.SIGNALS:
            for task in schema.TASKS:
                path = folder / f"{method}-{signal}-{task}.ftspec"
                path.write_text(_minimal_spec(method, signal, task), encoding="utf-8")
                result = check_file(path, CheckOptions(no_data=True))
                assert result.checked is not None, [d.message for d in result.diagnostics]
                out[(method, signal, task)] = [d for d in result.diagnostics if d.severity.value == "error"]
    return out


def _allowed(verdicts: dict[tuple[str, str, str], list[Any]]) -> set[tuple[str, str, str]]:
    return {k for k, errors in verdicts.items() if not any(d.code in COMPAT_CODES for d in errors)}


def test_refused_pairs_are_refused_by_a_compatibility_rule_with_a_hint(
        verdicts: dict[tuple[str, str, str], list[Any]]) -> None:
    assert {"FT120", "FT121", "FT123"} <= COMPAT_CODES  # method-modality, task-modality, signal-task
    allowed = _allowed(verdicts)
    for triple, errors in verdicts.items():
        if triple in allowed:
            assert not errors, (triple, [(d.code, d.message) for d in errors])  # the minimal spec is sound
        else:
            assert all(d.code in COMPAT_CODES for d in errors), (triple, [(d.code, d.message) for d in errors])
            assert all(d.help for d in errors), (triple, [(d.code, d.message) for d in errors])
    # every text method is allowed with some signal, and every signal with some method
    assert {m for m, _, _ in allowed} == set(schema.METHODS)
    assert {s for _, s, _ in allowed} == set(schema.SIGNALS)


def test_runtime_matrix_covers_every_allowed_pair(verdicts: dict[tuple[str, str, str], list[Any]]) -> None:
    allowed = _allowed(verdicts)
    trained = {**_elsewhere(), **_here()}
    assert not set(trained) - allowed, f"trained but refused by the compiler: {sorted(set(trained) - allowed)}"
    uncovered = []
    for method, signal, task in sorted(allowed):
        if (method, signal, task) in trained:
            continue
        twins = [t for (m, s_, t) in trained if (m, s_) == (method, signal) and _runtime_path(t) == _runtime_path(task)]
        if not twins:
            uncovered.append((method, signal, task))
    assert not uncovered, f"allowed by the compiler, trained by no runtime test: {uncovered}"


# ---------------------------------------------------------------------------------------------
# Shared data and models


@pytest.fixture(scope="module")
def gpt2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Preference pairs (DPO, and the reward stage), prompts (policy), a tiny GPT-2 over both."""
    return F.rlhf_folder(tmp_path_factory.mktemp("matrix-gpt2"), "data.jsonl")


@pytest.fixture(scope="module")
def bert_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.data_folder(tmp_path_factory.mktemp("matrix-bert"), F.contrastive_rows(150), F.make_tiny_bert)


TRAIN = """train {
  epochs 1
  batch_size 4
  learning_rate %s
  precision fp32
  seed 0
  early_stopping patience 2 on val.loss
  checkpoints keep 1
}
"""
ALLOW = ("FT203",)  # a full fine-tune on little data


def _artifact_files(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    assert any(n.endswith(".safetensors") for n in names), names
    assert not [n for n in names if n.endswith(PICKLES)], names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert json.loads((folder / "ftc_artifact.json").read_text())["format"] == "ftc-artifact"


def _plain_load(folder: Path, cls: Any, **kwargs: Any) -> Any:
    """An artifact as a user without ftc loads it, from what ftc_artifact.json and the folder say."""
    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    info = json.loads((folder / "ftc_artifact.json").read_text())
    if info.get("quantization"):
        kwargs.update(quantization_config=BitsAndBytesConfig.from_dict(info["quantization"]),
                      device_map={"": "cpu"})
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base == info["base_model"] and Path(base).is_absolute()
        return PeftModel.from_pretrained(cls.from_pretrained(base, **kwargs), str(folder)).eval()
    if bottleneck.is_adapter_folder(folder):
        base = json.loads((folder / bottleneck.CONFIG_NAME).read_text())["base_model_name_or_path"]
        return bottleneck.load_adapters(cls.from_pretrained(base, **kwargs), folder).eval()
    return cls.from_pretrained(str(folder), **kwargs).eval()


def _lm_logits(model: Any, tok: Any, texts: list[str]) -> Any:
    """Logits at the texts' own positions (prompt tuning's virtual positions come first)."""
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**batch).logits.float()
    return logits[:, -batch["input_ids"].shape[1]:]


def _tolerance(method: str) -> float:
    # QLoRA on CPU: TRL trains the adapter in bf16 and bitsandbytes repacks the 4-bit base for CPU
    # inference (see test_text_methods.py); everything else reloads exactly.
    return 2e-2 if method == "qlora" else 1e-5


def _check_causal_lm(fitted: Any, base_dir: Path, method: str, texts: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    result = fitted.result
    assert result.steps == 2 and result.kind == ("full" if method == "full" else "adapter")
    _artifact_files(result.model_dir)
    in_memory = _lm_logits(fitted.model.eval(), fitted.tokenizer, texts)
    loaded = _lm_logits(_plain_load(result.model_dir, AutoModelForCausalLM), fitted.tokenizer, texts)
    assert torch.allclose(in_memory, loaded, atol=_tolerance(method), rtol=0), (in_memory - loaded).abs().max()
    base = _lm_logits(AutoModelForCausalLM.from_pretrained(base_dir).eval(), fitted.tokenizer, texts)
    assert (base - in_memory).abs().max() > 1e-4, "training changed nothing"


def _finite(metrics: dict[str, float], keys: set[str]) -> bool:
    import math

    assert keys <= set(metrics), (keys, metrics)
    return all(math.isfinite(metrics[k]) for k in keys)


def _steps(events: list[dict[str, Any]]) -> list[int]:
    return [e["step"] for e in events if e["event"] == "step"]


# ---------------------------------------------------------------------------------------------
# DPO


@pytest.mark.parametrize("method", sorted(DPO_HERE))
def test_dpo_pair(gpt2_root: Path, method: str) -> None:
    from ftc.runtime.backends.preference import evaluate, fit_dpo

    work = F.fresh(gpt2_root, f"dpo-{method}")
    data = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 64 truncate\n}\n'
    spec = F.spec_text(DPO_HERE[method], METHOD_BLOCKS[method], "signal dpo {\n  beta 0.1\n}\n", data,
                       TRAIN % "5e-3", "accuracy", "accuracy >= 0.5")
    events: list[dict[str, Any]] = []
    ctx = F.context(work, spec, events, max_steps=2, allow=ALLOW)
    fitted = fit_dpo(ctx)
    assert _steps(events) == [1, 2]
    texts = [r["prompt"] + "\n" + r["chosen"] for r in F.preference_rows(3, seed=9)]
    _check_causal_lm(fitted, work / "model", method, texts)
    assert not (fitted.result.model_dir / "ref").exists()  # TRL's reference copy is not exported
    ev = evaluate(ctx, fitted.result.model_dir, "test")  # what `ftc run` measures the gates with
    assert ev.n == len(ctx.parts["test"]) and _finite(ev.metrics, {"accuracy", "loss", "dpo_loss", "reward_margin"})


# ---------------------------------------------------------------------------------------------
# RLHF: the reward model, then the policy, both with the pair's method

RLHF_SIGNAL = """signal rlhf {
  reward {
    data {
      source "data.jsonl"
      split 80/10/10
      max_length 48 truncate
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
RLHF_DATA = 'data {\n  train "prompts.jsonl"\n  val "val.jsonl"\n  test "test.jsonl"\n  max_length 64 truncate\n}\n'


def _check_reward(fitted: Any, method: str, texts: list[str]) -> None:
    from ftc.runtime.backends.reward import load_reward_model, score
    from transformers import AutoModelForSequenceClassification

    folder = fitted.result.model_dir
    assert fitted.result.kind == "reward" and fitted.result.steps == 2 and folder.name == "reward"
    _artifact_files(folder)
    info = json.loads((folder / "ftc_artifact.json").read_text())
    plain = _plain_load(folder, AutoModelForSequenceClassification, num_labels=1)
    plain.config.pad_token_id = fitted.tokenizer.pad_token_id
    in_memory = torch.tensor(fitted.model.score(texts))
    loaded = torch.tensor(score(plain, fitted.tokenizer, texts, max_length=info["max_length"],
                                pad_to_max_length=info["pad_to_max_length"]))
    through_ftc = torch.tensor(load_reward_model(folder).score(texts))
    assert torch.allclose(in_memory, loaded, atol=_tolerance(method), rtol=0), (in_memory, loaded)
    assert torch.allclose(loaded, through_ftc, atol=1e-5, rtol=0)
    # a score does not depend on what else is in the batch (padding never reaches the head)
    alone = torch.tensor([fitted.model.score([t])[0] for t in texts])
    assert torch.allclose(alone, in_memory, atol=1e-4 if method != "qlora" else 2e-2, rtol=0), (alone, in_memory)
    assert info["pad_to_max_length"] == (method == "prompt_tuning")


@pytest.mark.parametrize("method", sorted(RLHF_HERE))
def test_rlhf_pair(gpt2_root: Path, method: str) -> None:
    from ftc.runtime.backends.preference import evaluate, fit_policy, fit_reward

    task, algorithm = RLHF_HERE[method]
    work = F.fresh(gpt2_root, f"rlhf-{method}", ("data.jsonl", "prompts.jsonl", "val.jsonl", "test.jsonl", "model"))
    spec = F.spec_text(task, METHOD_BLOCKS[method], RLHF_SIGNAL % algorithm, RLHF_DATA, TRAIN % "5e-3",
                       "loss", "loss <= 10")
    events: list[dict[str, Any]] = []
    ctx = F.context(work, spec, events, max_steps=2, allow=ALLOW)
    reward = fit_reward(ctx)
    texts = [r["prompt"] + "\n" + r[side] for r in F.preference_rows(2, seed=9) for side in ("chosen", "rejected")]
    _check_reward(reward, method, texts)
    del events[:]
    policy = fit_policy(ctx, reward.result.model_dir, max_new_tokens=4)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and all(torch.isfinite(torch.tensor(e["reward"])) for e in steps)
    _check_causal_lm(policy, work / "model", method, texts)
    ev = evaluate(ctx, policy.result.model_dir, "test")
    assert ev.n == len(ctx.parts["test"]) and _finite(ev.metrics, {"loss", "reward", "reward_accuracy"})


# ---------------------------------------------------------------------------------------------
# Contrastive embeddings

CONTRASTIVE = 'signal contrastive {\n  anchor "query"\n  positive "positive"\n  temperature 0.05\n}\n'


def _pooled(model: Any, tok: Any, texts: list[str]) -> Any:
    """Mean pooling over the attention mask, L2-normalised, as ftc_artifact.json says."""
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state.float()[:, -batch["input_ids"].shape[1]:]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.mark.parametrize("method", CONTRASTIVE_HERE)
def test_contrastive_pair(bert_root: Path, method: str) -> None:
    from ftc.runtime.backends.embedding import evaluate, fit_contrastive, load_encoder
    from transformers import AutoModel

    work = F.fresh(bert_root, f"contrastive-{method}")
    data = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 32 truncate\n}\n'
    spec = F.spec_text("embedding", METHOD_BLOCKS[method], CONTRASTIVE,
                       data, TRAIN % "1e-2", "recall_at_k 5", "recall_at_k >= 0.5")
    events: list[dict[str, Any]] = []
    ctx = F.context(work, spec, events, max_steps=2, allow=ALLOW)
    fitted = fit_contrastive(ctx)
    result = fitted.result
    assert result.kind == "embedding" and result.steps == 2 and _steps(events) == [1, 2]
    assert result.model_dir.name == ("adapters" if method == "adapters" else "adapter")
    _artifact_files(result.model_dir)
    texts = [r[k] for r in F.contrastive_rows(3, seed=9) for k in ("query", "positive")]
    in_memory = _pooled(fitted.model.eval(), fitted.tokenizer, texts)
    loaded = _pooled(_plain_load(result.model_dir, AutoModel), fitted.tokenizer, texts)
    assert torch.allclose(in_memory, loaded, atol=_tolerance(method) / 10, rtol=0), (in_memory - loaded).abs().max()
    encoder, tok, max_length = load_encoder(ctx, result.model_dir)  # what evaluation uses
    assert max_length == 32 and torch.allclose(_pooled(encoder, tok, texts), loaded, atol=1e-5, rtol=0)
    base = _pooled(AutoModel.from_pretrained(work / "model").eval(), fitted.tokenizer, texts)
    assert (base - in_memory).abs().max() > 1e-4, "training changed nothing"
    ev = evaluate(ctx, result.model_dir, "test")
    assert ev.n == len(ctx.parts["test"]) and _finite(ev.metrics, {"recall_at_k", "recall_at_1", "loss"})
