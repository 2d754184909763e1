"""DPO's tokenised pairs from the content-addressed cache: what TRL's DPOTrainer prepared is stored
and handed back on the next run (TRL's preparation not called), with the same losses and weights;
keyed by the pairs, the tokenizer and the settings; off with FTC_NO_CACHE; and left off, with a
note, when TRL's private `_prepare_dataset` is not the one the cache wraps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from ftc.runtime.backends import tokcache

from tests.runtime import _pref_fixtures as F

LORA = 'method lora {\n  rank 4\n  alpha 8\n  targets ["c_attn"]\n}\n'
DATA = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 64 truncate\n}\n'
TRAIN = "train {\n  epochs 1\n  batch_size 4\n  learning_rate 1e-3\n  precision fp32\n  seed 0\n}\n"
SPEC = F.spec_text("generation", LORA, "signal dpo {\n  beta 0.1\n}\n", DATA, TRAIN, "accuracy", "accuracy >= 0.5")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.data_folder(tmp_path_factory.mktemp("tokdpo"), F.preference_rows(60), F.make_tiny_gpt2)


@pytest.fixture()
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("FTC_NO_CACHE", raising=False)
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _notes(events: list[dict[str, Any]], text: str) -> list[str]:
    return [e["message"] for e in events if e["event"] == "note" and text in e["message"]]


def _entries(cache: Path) -> list[Path]:
    tokens = cache / "tokens"
    return sorted(p for p in tokens.iterdir() if not p.name.startswith(".")) if tokens.exists() else []


def _fit(root: Path, name: str) -> tuple[list[dict[str, Any]], Any]:
    from ftc.runtime.backends.dpo import fit_dpo

    events: list[dict[str, Any]] = []
    fitted = fit_dpo(F.context(F.fresh(root, name), SPEC, events, max_steps=3, allow=("FT202", "FT217")))  # tiny data
    return events, fitted.model


def test_second_dpo_run_reuses_what_trl_prepared(root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from trl import DPOTrainer

    real = DPOTrainer._prepare_dataset
    prepared: dict[str, Any] = {}

    def spy(self: Any, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        prepared[dataset_name] = real(self, dataset, processing_class, args, dataset_name)
        return prepared[dataset_name]

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", spy)
    first, model_a = _fit(root, "first")
    assert not _notes(first, tokcache.REUSED) and sorted(prepared) == ["eval", "train"]
    entries = _entries(cache)
    assert len(entries) == 2 and sorted(p.name for p in (cache / "tokens").iterdir()) == [p.name for p in entries]
    for entry in entries:  # Arrow + JSON, no pickle; exactly what TRL prepared, column by column
        assert {p.suffix for p in entry.iterdir()} <= {".arrow", ".json"}
        hit = tokcache.load(entry.name)
        assert hit is not None
        stored, meta = hit
        trl_out = prepared[meta["role"]]
        assert stored.column_names == trl_out.column_names and stored.features == trl_out.features
        assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(stored.column_names)
        for column in stored.column_names:
            assert stored[column] == trl_out[column], column
        assert meta["rows"] == len(trl_out) > 0

    def boom(self: Any, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        raise AssertionError("TRL's _prepare_dataset ran on a cache hit")

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", boom)
    second, model_b = _fit(root, "second")
    reused = _notes(second, tokcache.REUSED)
    assert [m.split(" (")[1].rsplit(", ", 1)[0] for m in reused] == ["dpo train", "dpo val"]
    losses = [[e["loss"] for e in run if e["event"] == "step"] for run in (first, second)]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    evals = [[e["loss"] for e in run if e["event"] == "eval"] for run in (first, second)]
    assert evals[0] == evals[1] and evals[0]
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(_entries(cache)) == 2


def _build(folder: Path, rows: list[dict[str, Any]], events: list[dict[str, Any]], out: Path,
           max_length: int = 64, val: list[dict[str, Any]] | None = None) -> Any:
    """A DPOTrainer over `rows` built as dpo.py builds it (no training: the data is prepared in __init__)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    model, ref = (AutoModelForCausalLM.from_pretrained(folder) for _ in range(2))
    args = DPOConfig(output_dir=str(out), max_length=max_length, report_to=[], use_cpu=True, save_strategy="no",
                     dataset_num_proc=None)
    return tokcache.dpo_trainer(DPOTrainer, folder, events.append, model=model, ref_model=ref, args=args,
                                processing_class=tok, train_dataset=Dataset.from_list(rows),
                                eval_dataset=Dataset.from_list(val) if val else None)


def _pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def test_rows_tokenizer_and_max_length_are_in_the_key(root: Path, cache: Path, tmp_path: Path) -> None:
    rows = _pairs(F.preference_rows(12))
    events: list[dict[str, Any]] = []
    _build(root / "model", rows, events, tmp_path / "o")
    assert not _notes(events, tokcache.REUSED) and len(_entries(cache)) == 1
    _build(root / "model", rows, events, tmp_path / "o")
    assert len(_notes(events, tokcache.REUSED)) == 1 and len(_entries(cache)) == 1  # the same: a hit

    changed = [dict(r) for r in rows]
    changed[5]["rejected"] += " Maybe."
    other = F.make_tiny_gpt2(tmp_path / "other", F._texts(F.preference_rows(30, seed=7)))
    for n, (folder, data, limit) in enumerate([(root / "model", changed, 64), (other, rows, 64),
                                               (root / "model", rows, 48)], start=2):
        _build(folder, data, events, tmp_path / "o", max_length=limit)
        assert len(_notes(events, tokcache.REUSED)) == 1 and len(_entries(cache)) == n  # each a miss, stored


def test_no_cache_writes_nothing(root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    events: list[dict[str, Any]] = []
    rows = _pairs(F.preference_rows(12))
    for _ in range(2):
        trainer = _build(root / "model", rows, events, tmp_path / "o", val=rows[:4])
        assert "prompt_ids" in trainer.train_dataset.column_names
    assert not (cache / "tokens").exists() and not _notes(events, "cache")


@pytest.mark.parametrize("change", ["signature", "version"])
def test_another_trl_falls_back_to_the_plain_trainer(root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, change: str) -> None:
    import trl
    from trl import DPOTrainer

    if change == "signature":
        real = DPOTrainer._prepare_dataset

        def changed(self: Any, dataset: Any, processing_class: Any, args: Any, dataset_name: str,
                    extra: Any = None) -> Any:
            return real(self, dataset, processing_class, args, dataset_name)

        monkeypatch.setattr(DPOTrainer, "_prepare_dataset", changed)
        why = "DPOTrainer._prepare_dataset takes (self, dataset, processing_class, args, dataset_name, extra)"
    else:
        monkeypatch.setattr(trl, "__version__", "1.17.0")
        why = "trl 1.17.0 is not 1.16"
    events: list[dict[str, Any]] = []
    rows = _pairs(F.preference_rows(12))
    trainer = _build(root / "model", rows, events, tmp_path / "o", val=rows[:4])
    assert type(trainer) is DPOTrainer and "prompt_ids" in trainer.eval_dataset.column_names  # TRL prepared it
    off = _notes(events, "DPO's tokenised data is not cached")
    assert len(off) == 1 and why in off[0]  # said once for both datasets
    assert not (cache / "tokens").exists()
