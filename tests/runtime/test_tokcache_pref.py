"""Tokenised preference pairs of the reward model from the content-addressed cache: reused on the
next run with exactly the same losses, what was dropped said again, off with FTC_NO_CACHE.
(DPO's pairs, which TRL's DPOTrainer tokenises, are tested in test_tokcache_dpo.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from ftc.runtime.backends import tokcache

from tests.runtime import _pref_fixtures as F

SIGNAL = """signal rlhf {
  reward {
    data {
      source "prefs.jsonl"
      split 80/10/10
      max_length %s
    }
    train {
      learning_rate 1e-3
    }
  }
  policy {
    algorithm rloo
    generations 2
  }
}
"""
DATA = 'data {\n  train "prompts.jsonl"\n  val "val.jsonl"\n  test "test.jsonl"\n  max_length 64 truncate\n}\n'
TRAIN = "train {\n  epochs 1\n  batch_size 4\n  learning_rate 1e-4\n  precision fp32\n  seed 0\n}\n"
LORA = 'method lora {\n  rank 4\n  alpha 8\n  targets ["c_attn"]\n}\n'


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokpref")
    prefs, prompts = F.preference_rows(60), F.prompt_rows(30)
    F.write_jsonl(out / "prefs.jsonl", prefs)
    F.write_jsonl(out / "prompts.jsonl", prompts[:20])
    F.write_jsonl(out / "val.jsonl", prompts[20:25])
    F.write_jsonl(out / "test.jsonl", prompts[25:])
    F.make_tiny_gpt2(out / "model", F._texts(prefs) + F._texts(prompts))
    return out


def _run(root: Path, name: str, max_length: str) -> list[dict[str, Any]]:
    from ftc.runtime.backends.reward import fit_reward

    folder = F.fresh(root, name, ("prefs.jsonl", "prompts.jsonl", "val.jsonl", "test.jsonl", "model"))
    events: list[dict[str, Any]] = []
    spec = F.spec_text("generation", LORA, SIGNAL % max_length, DATA, TRAIN, "loss", "loss <= 10")
    fit_reward(F.context(folder, spec, events, max_steps=3, allow=("FT202", "FT217")))  # tiny data
    return events


def _losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "step"]


def _notes(events: list[dict[str, Any]], text: str) -> list[str]:
    return [e["message"] for e in events if e["event"] == "note" and text in e["message"]]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "tokens").iterdir() if not p.name.startswith("."))


def test_reward_pairs_are_reused_with_the_same_losses(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FTC_CACHE_DIR", str(cache))
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    uncached = _run(root, "off", "46 drop")  # some pairs are longer than 46 tokens: dropped
    assert not _notes(uncached, tokcache.REUSED) and not (cache / "tokens").exists()
    dropped = _notes(uncached, "pair(s) over 46 tokens")
    assert dropped and all(m.startswith("dropped ") for m in dropped)

    monkeypatch.delenv("FTC_NO_CACHE")
    first = _run(root, "first", "46 drop")  # tokenised and stored
    entries = _entries(cache)
    assert not _notes(first, tokcache.REUSED) and len(entries) == 2  # train and val
    for entry in entries:  # Arrow + JSON, no pickle, no temporary folder left
        assert {p.suffix for p in entry.iterdir()} <= {".arrow", ".json"}
    assert sorted(p.name for p in (cache / "tokens").iterdir()) == [p.name for p in entries]

    second = _run(root, "second", "46 drop")
    reused = _notes(second, tokcache.REUSED)
    assert [m.split(" (")[1].rsplit(", ", 1)[0] for m in reused] == ["reward train", "reward val"]
    assert _notes(first, "pair(s) over 46 tokens") == _notes(second, "pair(s) over 46 tokens") == dropped
    assert _losses(uncached) == _losses(first) == _losses(second) and len(_losses(second)) == 3
    evals = [[e["loss"] for e in run if e["event"] == "eval"] for run in (uncached, second)]
    assert evals[0] == evals[1]

    third = _run(root, "third", "48 drop")  # another limit: other entries, tokenised afresh
    assert not _notes(third, tokcache.REUSED) and len(_entries(cache)) == 4
