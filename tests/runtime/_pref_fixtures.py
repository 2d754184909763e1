"""Tiny models, data and specs for the preference and embedding runtime tests (offline, seeded).

Models are built from configs under torch.manual_seed(0) with tokenizers trained on the test's
own text, and saved with save_pretrained: nothing comes from a hub.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from ftc.compiler.check import CheckOptions, check_file
from ftc.runtime.api import TrainContext

EOS = "<|endoftext|>"

TOPICS = ["export", "login", "invoice", "password", "backup", "report", "upload", "billing", "search",
          "calendar", "sync", "printer"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]


def preference_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """prompt/chosen/rejected: chosen is short and concrete, rejected long and vague."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, name = rng.choice(TOPICS), rng.choice(NAMES)
        rows.append({
            "id": i,
            "topic": topic,
            "prompt": f"Hi, {name} here, my {topic} {rng.choice(['fails', 'is broken', 'stopped'])} ({i}).",
            "chosen": f"Open {topic} settings and press retry {rng.randint(1, 9)}.",
            "rejected": f"Thanks for writing about {topic}, many things can cause this, it is hard to say, "
                        f"we will look into it at some point {rng.randint(1, 9)}.",
        })
    return rows


def prompt_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": i, "prompt": f"How do I fix {rng.choice(TOPICS)} for {rng.choice(NAMES)} ({i})?",
             "reference": "Open settings and press retry."} for i in range(n)]


def contrastive_rows(n: int, seed: int = 2, negatives: bool = False) -> list[dict[str, Any]]:
    """An easy retrieval task: the anchor's keyword appears in its positive."""
    rng = random.Random(seed)
    words = [f"{a}{b}" for a in ("red", "blue", "green", "gold", "grey", "pink", "teal", "navy")
             for b in ("fox", "owl", "cat", "elk", "bee", "cod")]
    rows = []
    for i in range(n):
        w = words[i % len(words)]
        other = words[(i + rng.randint(1, len(words) - 1)) % len(words)]
        row: dict[str, Any] = {"id": i, "query": f"find {w} {i}", "positive": f"a note about {w} number {i}"}
        if negatives:
            row["negative"] = f"a note about {other} number {i}"
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    return [v for r in rows for v in r.values() if isinstance(v, str)]


def make_tiny_gpt2(out: Path, texts: list[str]) -> Path:
    """GPT-2, 2 layers, width 64, 2 heads, 128 positions; byte-level BPE trained on `texts`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=2, special_tokens=[EOS], show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                            pad_token=EOS, model_max_length=128)
    eos = tok.convert_tokens_to_ids(EOS)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=2, n_inner=128,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_tiny_bert(out: Path, texts: list[str]) -> Path:
    """BERT, 2 layers, hidden 64, 2 heads, 64 positions; WordPiece trained on `texts`."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=400, min_frequency=1, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok = BertTokenizerFast(tokenizer_object=wp._tokenizer, model_max_length=64)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


SPEC_HEAD = """spec "t" {
  intent {
    goal style
  }
  model {
    modality text
    base "model"
    task %(task)s
  }
"""

SPEC_TAIL = """  eval {
    metric %(metric)s
    gate %(gate)s on test
  }
}
"""


def spec_text(task: str, method: str, signal: str, data: str, train: str, metric: str, gate: str) -> str:
    return (SPEC_HEAD % {"task": task} + method + signal + data + train
            + SPEC_TAIL % {"metric": metric, "gate": gate})


def context(root: Path, text: str, events: list[dict[str, Any]], *, max_steps: int | None,
            resume: bool = False, allow: tuple[str, ...] = (), device: str = "cpu") -> TrainContext:
    """Check the spec at root/spec.ftspec (its data read, no cache) and build a TrainContext.
    The spec must check without errors but those whose codes `allow` names."""
    path = root / "spec.ftspec"
    path.write_text(text, encoding="utf-8")
    with mock.patch.dict(os.environ, {"FTC_NO_CACHE": "1"}):  # a cache hit would carry no rows
        result = check_file(path, CheckOptions())
    errors = [(d.code, d.message) for d in result.diagnostics if d.severity.value == "error"
              and d.code not in allow]
    assert result.checked is not None and not errors, errors
    report = result.checked.data
    assert report is not None and report.parts, "the data was not read (cache hit?)"
    log: Callable[[dict[str, Any]], None] = events.append
    return TrainContext(result.checked, report.parts, root / "run", log, resume=resume, device=device,
                        stage_parts=report.stages.get("reward", {}), max_steps=max_steps)


def fresh(root: Path, name: str, items: tuple[str, ...] = ("data.jsonl", "model")) -> Path:
    """A new run folder beside the shared data and model (symlinked), so runs stay independent."""
    out = root / name
    out.mkdir(exist_ok=True)
    for item in items:
        if (root / item).exists() and not os.path.lexists(out / item):
            (out / item).symlink_to(root / item)
    return out


def rlhf_folder(root: Path, prefs_name: str) -> Path:
    """Preference pairs (`prefs_name`), policy prompts split 110/10/10 into prompts/val/test.jsonl,
    and a tiny GPT-2 over all their text: the shared layout of the RLHF and DPO test folders."""
    prefs, prompts = preference_rows(150), prompt_rows(130)
    write_jsonl(root / prefs_name, prefs)
    write_jsonl(root / "prompts.jsonl", prompts[:110])
    write_jsonl(root / "val.jsonl", prompts[110:120])
    write_jsonl(root / "test.jsonl", prompts[120:])
    make_tiny_gpt2(root / "model", _texts(prefs) + _texts(prompts))
    return root


def data_folder(root: Path, rows: list[dict[str, Any]], make_model: Any) -> Path:
    """`rows` as root/data.jsonl and a tiny model (make_tiny_bert or make_tiny_gpt2) over their text
    in root/model: the layout of the single-file preference and contrastive test folders."""
    write_jsonl(root / "data.jsonl", rows)
    make_model(root / "model", _texts(rows))
    return root
