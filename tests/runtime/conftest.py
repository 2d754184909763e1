"""Fixtures for the runtime tests: tiny models built from configs, data written by the tests.

Models (session-scoped, saved under a temporary folder, never downloaded):
  tiny_bert  BertForSequenceClassification, 2 layers, width 64, 2 heads, a word-level tokenizer
             over the test data's words (deterministic)
  tiny_gpt2  GPT2LMHeadModel, 2 layers, width 64, 2 heads, a byte-level tokenizer with no merges
             (one token per byte: covers any text, decodes exactly)
Both are initialised under torch.manual_seed(0) and saved with save_pretrained (safetensors).

`make_ctx(...)` writes a spec and its data into tmp_path, checks it with the compiler (data read,
no cache) and returns a TrainContext whose events land in `ctx.events`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ftc.compiler.check import CheckOptions, check_file
from ftc.runtime.api import TrainContext

LABELS = ("billing", "bug", "account")
KEYWORDS = {"billing": ("refund", "invoice", "charge", "payment"),
            "bug": ("crash", "error", "broken", "freeze"),
            "account": ("password", "login", "username", "profile")}
FILLER = ("please", "help", "with", "my", "the", "today", "again", "urgent", "thanks", "hello", "team", "now")
CHANNELS = ("email", "chat")
EOS = "<|endoftext|>"
SCHEMA = {"type": "object", "required": ["ok"],
          "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}}}


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Tiny models run several times faster on one thread than on two contending ones."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _project_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec in tmp_path names the session's tiny models, saved in another temporary folder, and
    some tests check the shipped examples: the project root (compiler/paths.py) holds both."""
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("FTC_ROOT", os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(repo)]))


@pytest.fixture(autouse=True)
def _fresh_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # A data-check cache hit restores sizes and hashes but not the rows a TrainContext needs.
    monkeypatch.setenv("FTC_NO_CACHE", "1")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project in tmp_path with its registry in tmp_path/.ftc (FTC_HOME), the default timeout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    monkeypatch.delenv("FTC_REGISTRY_TIMEOUT", raising=False)
    return tmp_path / ".ftc"


# ---------------------------------------------------------------------------------------------
# Data


def ticket_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        words.append(f"n{seed}x{i}")  # every row distinct, across splits too
        rows.append({"text": " ".join(words), "label": label, "channel": CHANNELS[(i // 3) % 2]})
    return rows


NAMES = ("alice", "bob", "carol", "dave", "erin", "frank")


def gen_rows(n: int, seed: int, *, constant: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        prompt = f"extract {name} {rng.randint(0, 999)} s{seed}r{i}:"
        target = '{"ok": true}' if constant else json.dumps({"name": name, "ok": i % 2 == 0})
        rows.append({"prompt": prompt, "answer": target, "channel": CHANNELS[i % 2]})
    return rows


def chat_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["answer"]}],
             "channel": r["channel"]} for r in gen_rows(n, seed)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Models


def _all_ticket_words() -> list[str]:
    from tokenizers.pre_tokenizers import BertPreTokenizer

    pre = BertPreTokenizer()
    words: set[str] = set()
    for seed, n in ((1, 120), (2, 30), (3, 30)):
        for row in ticket_rows(n, seed):
            words.update(w for w, _ in pre.pre_tokenize_str(row["text"].lower()))
    return sorted(words)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(special + _all_ticket_words())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=len(LABELS),
                        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                        pad_token_id=0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    out = tmp_path_factory.mktemp("models") / "tiny-bert"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {EOS: 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
                                  model_max_length=256, model_input_names=["input_ids", "attention_mask"])
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=64, n_layer=2, n_head=2, n_inner=128,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Specs


class Events(list[dict[str, Any]]):
    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self if e.get("event") == kind]


def spec_text(*, base: Path, task: str, method: str, train: str, eval_: str, data: str, model_extra: str = "",
              signal: str = "") -> str:
    labels = f"labels [{', '.join(json.dumps(x) for x in LABELS)}]" if task == "classification" else ""
    if not signal:
        signal = 'input "text"; target "label"' if task == "classification" else 'input "prompt"; target "answer"'
    return f"""spec "runtime-test" {{
  intent {{ goal behavior; stability stable; owner "tests" }}
  model {{ modality text; base {json.dumps(str(base))}; task {task}; {labels} {model_extra} }}
  method {method}
  signal sft {{ {signal} }}
  data {{ {data} }}
  train {{ {train} }}
  eval {{ {eval_} }}
}}
"""


MakeCtx = Callable[..., TrainContext]


@pytest.fixture
def make_ctx(tmp_path: Path, tiny_bert: Path, tiny_gpt2: Path) -> MakeCtx:
    counter = iter(range(1000))

    def make(task: str = "classification", method: str = "lora { rank 4; alpha 8 }", *,
             train: str = "steps 3; learning_rate 1e-3; batch_size 8; precision fp32; seed 7; checkpoints keep 2",
             eval_: str = "", data_extra: str = "", model_extra: str = "", signal: str = "",
             run_dir: Path | None = None, folder: Path | None = None, rows: tuple[int, int, int] = (120, 30, 30),
             constant_target: bool = False, **ctx_kwargs: Any) -> TrainContext:
        where = folder or tmp_path / f"spec{next(counter)}"
        where.mkdir(parents=True, exist_ok=True)
        n_train, n_val, n_test = rows
        if task == "classification":
            parts = {"train": ticket_rows(n_train, 1), "val": ticket_rows(n_val, 2), "test": ticket_rows(n_test, 3)}
            base = tiny_bert
            eval_ = eval_ or "metric f1 macro; metric accuracy; gate f1 >= 0.1 on test"
        else:
            chat = "messages" in signal
            make_rows = chat_rows if chat else (lambda n, s: gen_rows(n, s, constant=constant_target))
            parts = {"train": make_rows(n_train, 1), "val": make_rows(n_val, 2), "test": make_rows(n_test, 3)}
            base = tiny_gpt2
            eval_ = eval_ or "metric loss; metric exact_match; gate exact_match >= 0.0 on test"
            if task == "extraction":
                (where / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
                model_extra = f'output_schema "schema.json" {model_extra}'
        for name, part_rows in parts.items():
            write_jsonl(where / f"{name}.jsonl", part_rows)
        data = ('train "train.jsonl"; val "val.jsonl"; test "test.jsonl"; slice email where channel == "email"; '
                + data_extra)
        text = spec_text(base=base, task=task, method=method, train=train, eval_=eval_, data=data,
                         model_extra=model_extra, signal=signal)
        path = where / "spec.ftspec"
        path.write_text(text, encoding="utf-8")
        result = check_file(path, CheckOptions())
        assert result.checked is not None, [d.message for d in result.diagnostics]
        assert result.checked.data is not None and result.checked.data.parts, "the data was not read"
        events = Events()
        ctx = TrainContext(result.checked, result.checked.data.parts, run_dir or where / "run", events.append,
                           **ctx_kwargs)
        ctx.events = events  # type: ignore[attr-defined]
        ctx.diagnostics = result.diagnostics  # type: ignore[attr-defined]
        return ctx

    return make
