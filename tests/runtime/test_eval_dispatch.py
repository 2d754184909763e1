"""Evaluation of non-SFT specs goes to the backend that matches the signal: latency (an encoder
embeds one text per request; a DPO model or RLHF policy generates a fixed number of new tokens
from the prompt field), data files named by a gate (regression against a general set, read with the
spec's `fields`), and every metric the language allows for the task, overall and per slice.
One `ftc run` of a tiny DPO spec with a latency gate and a regression gate ends the file.

Contexts are built without training (the base folder stands in for the trained model where only
the dispatch is under test), so the whole file runs in well under a minute on one CPU thread.
"""

from __future__ import annotations

import io
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from ftc.compiler import schema as s
from ftc.compiler.rules.compat import metrics_for
from ftc.runtime import executor as ex
from ftc.runtime.api import TrainContext, TrainResult

from tests.runtime import _pref_fixtures as F

TRAIN = """train {
  epochs 1
  batch_size 4
  learning_rate 1e-3
  precision fp32
  seed 0
  early_stopping patience 2 on val.loss
  checkpoints keep 1
}
"""
LORA_GPT2 = 'method lora {\n  rank 4\n  alpha 8\n  targets ["c_attn"]\n}\n'
LORA_BERT = 'method lora {\n  rank 4\n  alpha 8\n  targets ["query", "value"]\n}\n'
GENERAL = "general.jsonl"


def _eval_block(task: str, signal: str, gates: str = "") -> str:
    """Every metric the language allows for `task` and `signal` (compiler/rules/compat.py), gated on the first."""
    names = metrics_for(task, signal)
    lines = [f"    metric {n}" + (" 5" if n == "recall_at_k" else "") for n in names]
    first = names[0]
    gate = f"    gate {first} {'<=' if first == 'loss' else '>='} {'100' if first == 'loss' else '0.0'} on test\n"
    return "  eval {\n" + "\n".join(lines) + "\n" + gate + gates + "  }\n"


def _spec(task: str, method: str, signal: str, data: str, gates: str = "") -> str:
    kind = signal.split()[1]  # "signal dpo {" -> "dpo"
    return (F.SPEC_HEAD % {"task": task} + method + signal + data + TRAIN + _eval_block(task, kind, gates) + "}\n")


# ---------------------------------------------------------------------------------------------
# Roots: a tiny model and data whose columns differ from the signal's names (`fields` maps them)


def _dpo_renamed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "topic": r["topic"]} for r in rows]


DPO_DATA = ('data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 64 truncate\n'
            '  fields {\n    prompt "question"\n    chosen "good"\n    rejected "bad"\n  }\n'
            '  slice billing where topic == "billing"\n}\n')


@pytest.fixture(scope="module")
def dpo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dispatch-dpo")
    rows = F.preference_rows(150)
    F.write_jsonl(root / "data.jsonl", _dpo_renamed(rows))
    F.write_jsonl(root / GENERAL, _dpo_renamed(F.preference_rows(12, seed=9)))
    F.make_tiny_gpt2(root / "model", F._texts(rows))
    return root


def _contrastive_renamed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"q": r["query"], "doc": r["positive"], "neg": r["negative"], "kind": "even" if r["id"] % 2 else "odd"}
            for r in rows]


EMB_SIGNAL = 'signal contrastive {\n  anchor "query"\n  positive "positive"\n  negative "negative"\n}\n'
EMB_DATA = ('data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 32 truncate\n'
            '  fields {\n    query "q"\n    positive "doc"\n    negative "neg"\n  }\n'
            '  slice even where kind == "even"\n}\n')


@pytest.fixture(scope="module")
def emb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dispatch-emb")
    rows = F.contrastive_rows(150, negatives=True)
    F.write_jsonl(root / "data.jsonl", _contrastive_renamed(rows))
    F.write_jsonl(root / GENERAL, _contrastive_renamed(F.contrastive_rows(16, seed=7, negatives=True)))
    F.make_tiny_bert(root / "model", F._texts(rows))
    return root


RLHF_SIGNAL = """signal rlhf {
  reward {
    data {
      source "prefs.jsonl"
      split 80/10/10
    }
  }
  policy {
    algorithm rloo
    generations 2
  }
}
"""
RLHF_DATA = ('data {\n  train "prompts.jsonl"\n  val "val.jsonl"\n  test "test.jsonl"\n  max_length 64 truncate\n'
             '  slice early where id < 125\n}\n')


@pytest.fixture(scope="module")
def rlhf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dispatch-rlhf")
    prefs, prompts = F.preference_rows(150), F.prompt_rows(130)
    for r, p in zip(prompts[120:], prefs, strict=False):  # held-out prompts that also carry a preference pair
        r.update(chosen=p["chosen"], rejected=p["rejected"])
    F.write_jsonl(root / "prefs.jsonl", prefs)
    F.write_jsonl(root / "prompts.jsonl", prompts[:110])
    F.write_jsonl(root / "val.jsonl", prompts[110:120])
    F.write_jsonl(root / "test.jsonl", prompts[120:])
    F.write_jsonl(root / GENERAL, F.prompt_rows(8, seed=4))
    F.make_tiny_gpt2(root / "model", F._texts(prefs) + F._texts(prompts))
    return root


def _ctx(root: Path, name: str, text: str) -> TrainContext:
    folder = F.fresh(root, name, ("data.jsonl", "model", GENERAL, "prefs.jsonl", "prompts.jsonl", "val.jsonl",
                                  "test.jsonl"))
    return F.context(folder, text, [], max_steps=1)


def _state(ctx: TrainContext, final: Path | None = None, gates: list[dict[str, Any]] | None = None) -> ex.RunState:
    """An executor state past its split and training nodes: the base folder stands in for the
    trained model (the dispatch, not the training, is under test)."""
    state = ex.RunState(plan=None, checked=ctx.checked, run_dir=ctx.run_dir, log=lambda e: None)  # type: ignore
    state.parts = dict(ctx.parts)
    node = "train.policy" if ctx.spec.signal.kind == "rlhf" else "train"
    state.train[node] = TrainResult(model_dir=final or ctx.base_path(), kind="full")
    return state


DPO_SIGNAL = "signal dpo {\n  beta 0.1\n}\n"
CASES = {  # signal-task -> a spec computing every metric the language allows for the task
    "dpo-generation": _spec("generation", LORA_GPT2, DPO_SIGNAL, DPO_DATA),
    "dpo-preference": _spec("preference", LORA_GPT2, DPO_SIGNAL, DPO_DATA),
    "rlhf-generation": _spec("generation", LORA_GPT2, RLHF_SIGNAL, RLHF_DATA),
    "contrastive-embedding": _spec("embedding", LORA_BERT, EMB_SIGNAL, EMB_DATA),
}


@pytest.fixture
def roots(request: pytest.FixtureRequest) -> dict[str, Path]:
    return {"dpo": request.getfixturevalue("dpo_root"), "rlhf": request.getfixturevalue("rlhf_root"),
            "contrastive": request.getfixturevalue("emb_root")}


# ---------------------------------------------------------------------------------------------
# Every metric the language allows, per split and per slice


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_metric_the_language_allows_is_computed(case: str, roots: dict[str, Path]) -> None:
    signal, task = case.split("-")
    ctx = _ctx(roots[signal], f"metrics-{task}", CASES[case])
    result = ex._backend_evaluate(_state(ctx), None, {"split": "test", "model": "base"})
    # RLHF's reward metrics need the run's trained reward model, which this run folder does not hold:
    # tests/runtime/test_preference.py checks them with one (the plan makes every evaluation wait for it)
    allowed = set(metrics_for(task, signal)) - set(s.RLHF_METRICS)
    assert allowed <= set(result.metrics), sorted(allowed - set(result.metrics))
    assert all(isinstance(result.metrics[m], float) and not math.isnan(result.metrics[m]) for m in allowed)
    assert result.n == len(ctx.parts["test"])
    [(name, sliced)] = result.slices.items()
    assert sliced["n"] > 0 and allowed <= set(sliced), (name, sorted(allowed - set(sliced)))


def test_embedding_accuracy_is_triplet_accuracy(emb_root: Path) -> None:
    """With hard negatives, accuracy is the share of anchors closer to their positive than to
    their negative (not recall@1): computed here by hand from the encoder's embeddings."""
    from ftc.runtime.backends import embedding

    ctx = _ctx(emb_root, "triplet", CASES["contrastive-embedding"])
    result = embedding.evaluate(ctx, None, "test")
    model, tok, limit = embedding.load_encoder(ctx, None)
    rows = ctx.parts["test"].rows
    a, p, n = (embedding.encode(model, tok, [r[f] for r in rows], limit) for f in ("query", "positive", "negative"))
    expected = float(((a * p).sum(-1) > (a * n).sum(-1)).float().mean())
    assert result.extra["accuracy"] == "triplet" and result.metrics["accuracy"] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Latency


def _latency_node(warmup: int = 2) -> ex.PlanNode:
    return ex.PlanNode("eval.latency", "latency", (), {"warmup": warmup, "split": "test"})


LATENCY_GATE = {"metric": "latency", "qualifier": "p95", "op": "<=", "threshold": 60.0, "split": None,
                "slice": None, "dataset": None, "versus": None, "text": "60s"}


def _check_latency(state: ex.RunState) -> dict[str, Any]:
    """Both models timed, the gate judged on the final one with the base's value as `before`."""
    ex.LocalExecutor()._latency(_latency_node(), state)
    before, after = state.results["base:latency"], state.results["latency"]
    for lat in (before, after):
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["n"] == len(lat["samples"]) == 50
        assert lat["warmup"] == 2 and lat["unit"] == "s"
    ex.LocalExecutor()._gates(ex.PlanNode("gates", "gates", (), {"gates": [LATENCY_GATE]}), state)
    [gate] = state.gates
    assert gate.passed and gate.value == after["p95"] and gate.before == before["p95"]
    assert before["model"] == after["model"] and before["request"] == after["request"]
    return after


def test_encoder_latency_embeds_one_text_per_request(emb_root: Path) -> None:
    ctx = _ctx(emb_root, "latency", CASES["contrastive-embedding"])
    after = _check_latency(_state(ctx))
    assert after["request"] == "embed" and after["model"] == "BertModel" and after["field"] == "query"


@pytest.mark.parametrize("signal", ["dpo", "rlhf"])
def test_policy_latency_generates_a_fixed_number_of_tokens_from_the_prompt(
        signal: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GenerationMixin

    case = "dpo-generation" if signal == "dpo" else "rlhf-generation"
    ctx = _ctx(roots[signal], "latency", CASES[case])
    calls: list[tuple[int, int]] = []
    original = GenerationMixin.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        calls.append((int(kwargs["input_ids"].shape[1]), int(out.shape[1] - kwargs["input_ids"].shape[1])))
        return out

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    after = _check_latency(_state(ctx))
    assert after["request"] == "generate" and after["model"] == "GPT2LMHeadModel" and after["field"] == "prompt"
    assert len(calls) == 2 * (2 + 50) and {new for _, new in calls} == {after["new_tokens"]}
    tok = _tokenizer(ctx)
    prompts = [r["prompt"] + "\n" for r in ctx.parts["test"].rows]
    assert calls[0][0] == len(tok(prompts[0])["input_ids"])  # the prompt field, with training's separator
    replies = ([r["chosen"] for r in ctx.parts["test"].rows] if signal == "dpo"
               else [r["reference"] for r in ctx.parts["test"].rows])
    assert after["new_tokens"] == int(statistics.median(len(tok(x)["input_ids"]) for x in replies))


def _tokenizer(ctx: TrainContext) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ctx.base_path())


# ---------------------------------------------------------------------------------------------
# Data files named by a gate (regression against a general set)


def test_regression_sets_are_evaluated_by_the_signals_backend_with_fields(roots: dict[str, Path]) -> None:
    expected = {"dpo": ({"accuracy", "loss", "dpo_loss", "reward_margin"}, 12),
                "contrastive": ({"recall_at_k", "accuracy", "loss"}, 16),
                "rlhf": ({"loss", "perplexity"}, 8)}
    for signal, case in (("dpo", "dpo-generation"), ("contrastive", "contrastive-embedding"),
                         ("rlhf", "rlhf-generation")):
        ctx = _ctx(roots[signal], "general", CASES[case])
        result = ex._backend_evaluate(_state(ctx), None, {"dataset": GENERAL, "metric": "loss", "model": "base"})
        keys, rows = expected[signal]
        assert result.split == GENERAL and result.n == rows and keys <= set(result.metrics), (signal, result.metrics)


def test_a_regression_set_without_the_signals_fields_is_a_clear_error(emb_root: Path) -> None:
    folder = F.fresh(emb_root, "bad-general")
    F.write_jsonl(folder / "other.jsonl", [{"text": "hello", "label": "x"}])
    ctx = F.context(folder, CASES["contrastive-embedding"], [], max_steps=1)
    with pytest.raises(ValueError, match=r"no row has both `query` and `positive`.*columns: label, text"):
        ex._backend_evaluate(_state(ctx), None, {"dataset": "other.jsonl", "model": "base"})


def test_a_cached_base_evaluation_of_a_regression_set_follows_the_files_bytes(dpo_root: Path) -> None:
    """The plan names the regression set by path only: the base model's cached result must not
    outlive an edit of the file (or of the signal's fields)."""
    from ftc.compiler.plan import build_plan

    folder = F.fresh(dpo_root, "cache-key", ("data.jsonl", "model"))
    (folder / GENERAL).write_text((dpo_root / GENERAL).read_text(), encoding="utf-8")
    gate = f'    gate regression <= 100 vs base on "{GENERAL}"\n'
    ctx = F.context(folder, _spec("preference", LORA_GPT2, DPO_SIGNAL, DPO_DATA, gate), [], max_steps=1)
    state = _state(ctx)
    state.plan = build_plan(ctx.checked)
    node = next(n for n in state.plan.nodes if n.id.startswith("eval.base.regression."))
    first = ex._cache_keyed(node, state).hash
    assert ex._cache_keyed(node, state).hash == first  # deterministic: a rerun reuses it
    with (folder / GENERAL).open("a", encoding="utf-8") as f:
        f.write(json.dumps(_dpo_renamed(F.preference_rows(1, seed=3))[0]) + "\n")
    changed = ex._cache_keyed(node, state).hash
    assert changed != first
    beta = F.context(folder, _spec("preference", LORA_GPT2, DPO_SIGNAL.replace("0.1", "0.2"), DPO_DATA, gate), [],
                     max_steps=1)
    state.plan = build_plan(beta.checked)  # beta changes dpo_loss and reward_margin
    beta_node = next(n for n in state.plan.nodes if n.id.startswith("eval.base.regression."))
    assert beta_node.hash != node.hash  # the regression node carries the signal's settings
    assert ex._cache_keyed(beta_node, state).hash != changed


# ---------------------------------------------------------------------------------------------
# `ftc run` end to end


def test_dpo_run_with_latency_and_regression_gates(dpo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.run import EXIT_PROMOTED, run

    folder = F.fresh(dpo_root, "e2e", ("data.jsonl", "model", GENERAL))
    gates = ('    gate latency.p95 <= 60s\n'
             f'    gate regression <= 100 vs base on "{GENERAL}"\n')
    (folder / "spec.ftspec").write_text(_spec("preference", LORA_GPT2, DPO_SIGNAL, DPO_DATA, gates), encoding="utf-8")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("FTC_HOME", str(folder / ".ftc"))
    out = io.StringIO()
    outcome = run("spec.ftspec", max_steps=2, out=out)
    assert outcome.exit_code == EXIT_PROMOTED, (outcome.message, out.getvalue())
    table = {cells[0]: cells[1:] for line in out.getvalue().splitlines()
             if len(cells := re.split(r"\s{2,}", line.strip())) == 4}
    assert table["gate"] == ["before", "after", "result"]
    latency = table["latency.p95 <= 60s on test"]
    regression = table[f'regression <= 100 vs base on "{GENERAL}"']
    before, after = (float(x.removesuffix(" ms")) / 1000 for x in latency[:2])  # both measured: no "—"
    assert 0 < before < 60 and 0 < after < 60 and latency[2] == "pass"
    assert float(regression[1]) < 100 and regression[2] == "pass"
    record = json.loads((outcome.run_dir / "record.json").read_text())
    metrics = record["metrics"]
    assert {"base:latency", "latency", f"base:{GENERAL}", f"tuned:{GENERAL}", "tuned:test"} <= set(metrics)
    assert before == pytest.approx(metrics["base:latency"]["p95"], rel=1e-3, abs=1e-6)
    assert after == pytest.approx(metrics["latency"]["p95"], rel=1e-3)
    assert metrics["latency"]["request"] == "generate" and metrics["latency"]["new_tokens"] >= 1
    assert metrics[f"tuned:{GENERAL}"]["reward_margin"] != 0  # the trained model, against the base


def test_a_base_evaluation_scored_by_this_runs_reward_model_is_never_cached(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    """`gate reward >= 0.1 vs base` compares two scores of one reward model: the base's evaluation
    that reads `train.reward` is computed in every run, while a plain base evaluation is reused."""
    from ftc.runtime.api import EvalResult

    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FTC_NO_CACHE", raising=False)
    calls: list[str] = []

    def evaluate(state: Any, model_dir: Any, params: dict[str, Any]) -> EvalResult:
        calls.append(params["split"])
        return EvalResult(params["split"], {"reward": 0.25 * len(calls)})

    monkeypatch.setattr(ex, "_backend_evaluate", evaluate)
    monkeypatch.setattr(ex, "_cache_keyed", lambda node, state: node)

    class State:
        results: dict[str, Any] = {}

        def log(self, event: dict[str, Any]) -> None:
            pass

    params = {"split": "test", "model": "base", "signal": {}, "metrics": [], "slices": []}
    scored = ex.PlanNode("eval.base.test", "evaluate", ("data.tokenize", "model.load_base", "train.reward"),
                         params, "a" * 64)
    plain = ex.PlanNode("eval.base.test", "evaluate", ("data.tokenize", "model.load_base"), params, "b" * 64)
    for _ in range(2):
        ex.LocalExecutor()._evaluate(scored, State())  # type: ignore[arg-type]
    assert len(calls) == 2 and State.results["base:test"].metrics["reward"] == 0.5
    for _ in range(2):
        ex.LocalExecutor()._evaluate(plain, State())  # type: ignore[arg-type]
    assert len(calls) == 3  # the second plain evaluation came from the cache
