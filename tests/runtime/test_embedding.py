"""Contrastive text embeddings (in-batch negatives) on a tiny BERT, CPU only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from tests.runtime import _pref_fixtures as F

SIGNAL = ('signal contrastive {\n  anchor "query"\n  positive "positive"\n%s  temperature 0.05\n}\n')
DATA = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 32 truncate\n}\n'
TRAIN = """train {
  epochs 3
  batch_size 8
  learning_rate %s
  precision fp32
  seed 0
  early_stopping patience 2 on val.loss
  checkpoints keep 1%s
}
"""
LORA = 'method lora {\n  rank 8\n  alpha 16\n  targets ["query", "key", "value", "dense"]\n}\n'
FULL = "method full {\n}\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.data_folder(tmp_path_factory.mktemp("contrastive"), F.contrastive_rows(150, negatives=True), F.make_tiny_bert)


def _spec(method: str, lr: str, negative: bool = True, every: str = "") -> str:
    neg = '  negative "negative"\n' if negative else ""
    return F.spec_text("embedding", method, SIGNAL % neg, DATA, TRAIN % (lr, every),
                       "recall_at_k 5", "recall_at_k >= 0.5")


def _losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "step"]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_info_nce_prefers_matching_pairs() -> None:
    import torch
    import torch.nn.functional as F_
    from ftc.runtime.backends.embedding import info_nce

    x = F_.normalize(torch.eye(4), dim=-1)
    assert float(info_nce(x, x, None, 0.05)) < 1e-6
    assert float(info_nce(x, x.flip(0), None, 0.05)) > 10
    assert float(info_nce(x, x, -x, 0.05)) < 1e-6  # hard negatives join the candidates
    assert float(info_nce(x, x, x.flip(0), 0.05)) == pytest.approx(math.log(2), abs=1e-4)


def _check_encoder(folder: Path) -> None:
    from transformers import AutoModel

    names = [p.name for p in folder.rglob("*") if p.is_file()]
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt"))]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["word_embedding_dimension"] == 64
    model = AutoModel.from_pretrained(folder)  # plain transformers, no ftc
    assert type(model).__name__ == "BertModel"


def test_full_contrastive_learns_and_exports_a_plain_encoder(root: Path) -> None:
    from ftc.runtime.backends.embedding import recall_at_k, train_contrastive

    work = F.fresh(root, "full")
    events: list[dict[str, Any]] = []
    ctx = F.context(work, _spec(FULL, "1e-3"), events, max_steps=16, allow=("FT203",))
    result = train_contrastive(ctx)

    assert result.kind == "embedding" and result.steps == 16
    losses = _losses(events)
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    assert _mean(losses[-4:]) < 0.5 * _mean(losses[:4])
    steps = [e for e in events if e["event"] == "step"]
    assert all({"step", "loss", "lr", "grad_norm", "samples_per_s", "rss_mb"} <= set(e) for e in steps)
    assert any(e["event"] == "eval" and e["split"] == "val" for e in events)
    _check_encoder(result.model_dir)
    recall = recall_at_k(ctx, result.model_dir, "test", 1)
    assert 0.0 <= recall <= 1.0
    assert recall_at_k(ctx, result.model_dir, "test", 5) >= recall


def test_evaluate_reports_recall_at_the_specs_k(root: Path) -> None:
    from ftc.runtime.backends.embedding import evaluate

    work = root / "full"  # trained by the test above
    ctx = F.context(work, _spec(FULL, "1e-3"), [], max_steps=16, allow=("FT203",))
    for model_dir in (None, work / "run" / "artifacts" / "model"):
        result = evaluate(ctx, model_dir, "test")
        assert result.n == len(ctx.parts["test"]) and result.extra["k"] == 5
        assert {"recall_at_k", "recall_at_5", "recall_at_1", "loss"} <= set(result.metrics)
        assert result.metrics["recall_at_k"] == result.metrics["recall_at_5"] >= result.metrics["recall_at_1"]
        assert math.isfinite(result.metrics["loss"])


def test_lora_contrastive_learns_and_merges_into_the_encoder(root: Path) -> None:
    from ftc.runtime.backends.embedding import recall_at_k, train_contrastive

    work = F.fresh(root, "lora")
    events: list[dict[str, Any]] = []
    ctx = F.context(work, _spec(LORA, "2e-2", negative=False), events, max_steps=16)
    result = train_contrastive(ctx)

    losses = _losses(events)
    assert result.steps == 16 and all(math.isfinite(x) for x in losses)
    assert _mean(losses[-4:]) < _mean(losses[:4])
    _check_encoder(result.model_dir)
    assert result.model_dir == work / "run" / "artifacts" / "model"
    adapter = work / "run" / "artifacts" / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert 0.0 <= recall_at_k(ctx, result.model_dir, "val", 3) <= 1.0


def test_contrastive_resumes_from_its_last_checkpoint(root: Path) -> None:
    from ftc.runtime.backends.embedding import train_contrastive

    work = F.fresh(root, "resume")
    spec = _spec(LORA, "2e-2", every=" every 2 steps")
    first: list[dict[str, Any]] = []
    train_contrastive(F.context(work, spec, first, max_steps=4))
    checkpoints = sorted(p.name for p in (work / "run" / "checkpoints").iterdir())
    assert "checkpoint-4" in checkpoints
    second: list[dict[str, Any]] = []
    result = train_contrastive(F.context(work, spec, second, max_steps=6, resume=True))
    assert result.steps == 6
    assert [e["step"] for e in second if e["event"] == "step"] == [5, 6]
    assert [e["step"] for e in result.history if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]


def test_early_stopping_on_val_recall_watches_recall(root: Path) -> None:
    # before, the loop computed only the validation loss and silently watched it instead
    from ftc.runtime.backends.embedding import train_contrastive

    work = F.fresh(root, "es-recall")
    events: list[dict[str, Any]] = []
    spec = _spec(FULL, "1e-3", every=" every 2 steps").replace("on val.loss", "on val.recall_at_k")
    ctx = F.context(work, spec, events, max_steps=8, allow=("FT203",))
    result = train_contrastive(ctx)
    evals = [e for e in events if e["event"] == "eval" and e["split"] == "val"]
    assert len(evals) >= 3 and all({"loss", "recall_at_k", "recall_at_1", "accuracy"} <= set(e) for e in evals)
    best = max(evals, key=lambda e: (e["recall_at_k"], -e["step"]))  # the first of the best recalls
    assert result.best_checkpoint is not None and result.best_checkpoint.name == f"checkpoint-{best['step']}"
