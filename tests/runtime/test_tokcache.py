"""Tokenised data from the content-addressed cache: reused on the next run with exactly the same
losses, keyed by everything that decides the tokens, stored as Arrow + JSON, off with FTC_NO_CACHE."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ftc.runtime.api import TrainContext
from ftc.runtime.backends import text, tokcache

from tests.runtime.conftest import MakeCtx

TRAIN = "steps 3; learning_rate 1e-3; batch_size 8; precision fp32; seed 5"
CHAT = 'messages "messages"'


def _cache_on(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    # after make_ctx: its data check must not hit the data cache (the fixture's FTC_NO_CACHE)
    monkeypatch.delenv("FTC_NO_CACHE", raising=False)
    monkeypatch.setenv("FTC_CACHE_DIR", str(where))


def _losses(ctx: TrainContext) -> list[float]:
    return [e["loss"] for e in ctx.events.of("step")]  # type: ignore[attr-defined]


def _reused(ctx: TrainContext) -> list[str]:
    return [e["message"] for e in ctx.events.of("note") if tokcache.REUSED in e["message"]]  # type: ignore[attr-defined]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "tokens").iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(("task", "signal", "expect"), [
    ("classification", "", ["train", "val"]),
    ("generation", "", ["train, val"]),
    ("generation", CHAT, ["train, val"]),
])
def test_second_run_reuses_tokens_with_the_same_losses(make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path, task: str, signal: str,
                                                       expect: list[str]) -> None:
    first, second = make_ctx(task, train=TRAIN, signal=signal), make_ctx(task, train=TRAIN, signal=signal)
    _cache_on(monkeypatch, tmp_path / "cache")
    text.fit_sft(first)  # tokenised (by ftc or TRL) and stored
    entries = _entries(tmp_path / "cache")
    assert not _reused(first) and len(entries) == 2  # train and val
    for entry in entries:  # Arrow + JSON, no temporary folder left, no pickle
        assert {p.suffix for p in entry.iterdir()} <= {".arrow", ".json"}
    assert sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir()) == [p.name for p in entries]
    text.fit_sft(second)
    assert [m.split(" (")[1].rsplit(", ", 1)[0] for m in _reused(second)] == expect
    assert _losses(first) == _losses(second) and len(_losses(second)) == 3
    val = [[e["loss"] for e in c.events.of("eval")] for c in (first, second)]  # type: ignore[attr-defined]
    assert val[0] == val[1] and val[0]


def _tiny_dataset() -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [[2, 7, 3], [2, 9, 9, 3]], "labels": [0, 1]})


def test_reuse_builds_once_then_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _cache_on(monkeypatch, tmp_path / "cache")
    notes: list[dict[str, Any]] = []
    builds: list[int] = []

    def build() -> tuple[Any, dict[str, Any]]:
        builds.append(1)
        return _tiny_dataset(), {"dropped": 1}

    a, meta_a = tokcache.reuse(lambda: "k" * 64, build, "train", notes.append)
    b, meta_b = tokcache.reuse(lambda: "k" * 64, build, "train", notes.append)
    assert builds == [1] and a.to_list() == b.to_list() and a.features == b.features
    assert meta_a == {"dropped": 1} and meta_b == {"dropped": 1, "rows": 2}
    assert [n["message"] for n in notes] == [f"{tokcache.REUSED} (train, kkkkkkkkkk)"]
    entry = tmp_path / "cache" / "tokens" / ("k" * 64)
    assert {p.suffix for p in entry.iterdir()} <= {".arrow", ".json"}
    assert sorted(p.name for p in entry.parent.iterdir()) == ["k" * 64]  # no temporary folder left


def test_no_cache_computes_no_key_and_stores_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FTC_NO_CACHE", "1")

    def no_key() -> str:
        raise AssertionError("the key is not computed when the cache is off")

    ds, meta = tokcache.reuse(no_key, lambda: (_tiny_dataset(), {}), "train", lambda e: None)
    assert len(ds) == 2 and meta == {} and not (tmp_path / "cache").exists()


def test_an_unreadable_entry_is_a_miss_and_stored_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _cache_on(monkeypatch, tmp_path / "cache")
    assert tokcache.store("e" * 64, _tiny_dataset(), {})
    assert not tokcache.store("e" * 64, _tiny_dataset(), {})  # already there
    for arrow in (tmp_path / "cache" / "tokens" / ("e" * 64)).glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    assert tokcache.load("e" * 64) is None
    assert tokcache.store("e" * 64, _tiny_dataset(), {})
    hit = tokcache.load("e" * 64)
    assert hit is not None and hit[0].to_list() == _tiny_dataset().to_list()


def test_a_changed_tokenizer_or_setting_is_a_miss(tiny_bert: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    _cache_on(monkeypatch, tmp_path / "cache")
    folder = tmp_path / "tok"
    shutil.copytree(tiny_bert, folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    inputs = tokcache.content_digest([["a refund please"], [0]])

    def k(inputs: str = inputs, **settings: Any) -> str:
        return tokcache.key("classification", tokcache.tokenizer_fingerprint(tok, folder), inputs,
                            {"max_length": 64, "policy": "truncate", **settings})

    base = k()
    assert k() == base
    assert k(max_length=32) != base and k(policy="drop") != base
    assert k(tokcache.content_digest([["a refund please"], [1]])) != base
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # weights do not decide the tokens
    assert k() == base
    config = folder / "tokenizer_config.json"
    original = config.read_text(encoding="utf-8")
    config.write_text(original.replace("}", ', "ftc_test": 1}', 1), encoding="utf-8")
    assert k() != base
    config.write_text(original, encoding="utf-8")
    assert k() == base
    tok.padding_side = "left" if tok.padding_side == "right" else "right"
    assert k() != base  # an in-memory change counts too
