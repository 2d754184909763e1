"""Regenerate models/tiny-gpt2: a tiny GPT-2, pre-trained here (deterministic, offline).

    python specs/reply-tone/models/make_tiny_gpt2.py     # after both examples' make_data.py

The pre-training text comes from the two examples' data generators (../make_data.py and
../../rlhf-helpfulness/make_data.py, imported, not changed), drawn from other random streams
(CORPUS_SEED): CORPUS_SIZE documents `prompt + "\\n" + good reply`, laid out as the runtime lays
out a prompt and its completion; half are support tickets with a house-tone reply, half "how do
I" questions with their steps. It is a stand-in for the in-domain text a real pre-trained base has
read. No document holds a held-out text: every prompt and reply of both examples' data files (all
splits, a superset of val and test) is excluded with its near copies, checked in held_out_filter
and asserted again on the final corpus:
  - a prompt that is the same as one of theirs after normalising (lower case, digits masked,
    spaces collapsed), or a near copy by the examples' own bound (Jaccard of digit-masked
    character 5-grams above 0.5, the bound reply-tone's prompts keep);
  - a reply that is the same as any of their replies, chosen, rejected or reference answers after
    normalising (so the fixed answers of the help example, e.g. "Open Trash from the sidebar ...",
    and every stock rejected reply never appear);
  - a document that is a near copy of one of their rows as a whole (prompt + reply, Jaccard above
    0.7, reply-tone's row bound).
What remains shares the examples' templates and words (as their own training rows share them with
their test rows), with other slot values, names, orders and framings.

The byte-level BPE tokenizer (vocabulary 1000) is trained with `tokenizers` on that corpus (it used
to be trained on the examples' data files, test rows included). The weights start from
GPT2LMHeadModel(config) under torch.manual_seed(0) and are trained as a causal language model
(next-token loss on whole documents, EOS after each) for PRETRAIN_STEPS steps (warm-up, then linear
decay) on one thread, so the files are byte-identical from run to run.
Everything is saved with save_pretrained (safetensors), so that plain transformers loads it:

    AutoModelForCausalLM.from_pretrained("specs/reply-tone/models/tiny-gpt2")
    AutoTokenizer.from_pretrained("specs/reply-tone/models/tiny-gpt2")

Shape: 2 layers, width 64, 2 heads, 256 positions, tied embeddings: about 0.6 MB.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
RLHF = EXAMPLE.parent / "rlhf-helpfulness"
OUT = HERE / "tiny-gpt2"
DATA_FILES = [EXAMPLE / "data" / "all.jsonl", *sorted((RLHF / "data").glob("*.jsonl"))]
REPLY_FIELDS = ("chosen", "rejected", "reference")
VOCAB_SIZE = 1000
EOS = "<|endoftext|>"
SEP = "\n"  # the runtime's separator between a prompt and its completion
CORPUS_SEED = 2024
CORPUS_SIZE = 4000
PROMPT_BOUND = 0.5
ROW_BOUND = 0.7
PRETRAIN_STEPS = 1000
BATCH = 32
MAX_TOKENS = 128


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norm(text: str) -> str:
    return re.sub(r"\d", "0", re.sub(r"\s+", " ", text.lower())).strip()


def shingles(text: str) -> set[str]:
    t = norm(text)
    return {t[i:i + 5] for i in range(max(1, len(t) - 4))}


class Shingled:
    """Shingle sets with an inverted index: is a text a near copy (Jaccard above a bound) of one?"""

    def __init__(self, texts: list[str]) -> None:
        self.sizes: list[int] = []
        self.index: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            sh = shingles(text)
            self.sizes.append(len(sh))
            for s in sh:
                self.index.setdefault(s, []).append(i)

    def near(self, text: str, bound: float) -> bool:
        sh = shingles(text)
        common: dict[int, int] = {}
        for s in sh:
            for i in self.index.get(s, ()):
                common[i] = common.get(i, 0) + 1
        return any(n / (len(sh) + self.sizes[i] - n) > bound for i, n in common.items())


class HeldOut:
    """Every prompt and reply of both examples' data files, for the exclusion checks."""

    def __init__(self) -> None:
        rows = [json.loads(line) for path in DATA_FILES
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        self.prompts = [r["prompt"] for r in rows]
        self.prompt_norms = {norm(p) for p in self.prompts}
        self.prompt_sh = Shingled(self.prompts)
        self.reply_norms = {norm(r[f]) for r in rows for f in REPLY_FIELDS if isinstance(r.get(f), str)}
        self.row_sh = Shingled([r["prompt"] + " " + r[f] for r in rows for f in REPLY_FIELDS
                                if isinstance(r.get(f), str)])

    def allows(self, prompt: str, reply: str) -> bool:
        return (norm(prompt) not in self.prompt_norms and norm(reply) not in self.reply_norms
                and not self.prompt_sh.near(prompt, PROMPT_BOUND)
                and not self.row_sh.near(prompt + " " + reply, ROW_BOUND))


def support_doc(m: ModuleType, rng: random.Random) -> tuple[str, str]:
    """A ticket and a house-tone reply, built as reply-tone's make_data.generate builds a row."""
    prompt_ts, chosen_ts = m.SCENARIOS[rng.choice(sorted(m.SCENARIOS))]
    v = m.slot_values(rng)
    body = m.fill(rng.choice(prompt_ts), v)
    body = body[0].upper() + body[1:] + ("?" if body.startswith(("how", "can", "where", "why")) else ".")
    opener = rng.choice(m.OPENERS).strip()
    if opener:
        body = body[0].lower() + body[1:]
    prompt = m.join(opener, body, m.fill(rng.choice(m.CONTEXT), v), rng.choice(m.CLOSERS))
    reply = m.join(m.fill(rng.choice(m.GREETINGS), v), m.fill(rng.choice(chosen_ts), v),
                   m.fill(rng.choice(m.SIGNOFFS), v))
    return prompt, reply


def help_doc(m: ModuleType, rng: random.Random) -> tuple[str, str]:
    """A "how do I" question and its steps, from rlhf-helpfulness's make_data.question."""
    _, prompt, steps, _ = m.question(rng)
    return prompt, steps


def corpus() -> list[str]:
    """CORPUS_SIZE documents (prompt, separator, reply), none holding a held-out text."""
    tone = load(EXAMPLE / "make_data.py", "reply_tone_make_data")
    helpdesk = load(RLHF / "make_data.py", "rlhf_helpfulness_make_data")
    held = HeldOut()
    rng = random.Random(CORPUS_SEED)
    seen: set[str] = set()
    docs: list[str] = []
    tries = 0
    while len(docs) < CORPUS_SIZE:
        tries += 1
        assert tries < 50 * CORPUS_SIZE, f"cannot find enough corpus documents ({len(docs)} found)"
        prompt, reply = support_doc(tone, rng) if len(docs) % 2 == 0 else help_doc(helpdesk, rng)
        doc = prompt + SEP + reply
        if doc in seen or not held.allows(prompt, reply):
            continue
        seen.add(doc)
        docs.append(doc)
    # The same checks once more on what is kept, against the raw held-out strings.
    for doc in docs:
        prompt, reply = doc.split(SEP, 1)
        assert prompt not in held.prompts and norm(reply) not in held.reply_norms, doc
    print(f"corpus: {len(docs)} documents from {tries} candidates")
    return docs


def build_tokenizer(docs: list[str]):  # type: ignore[no-untyped-def]
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(docs, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                             pad_token=EOS, model_max_length=256)


def pretrain(model, tok, docs: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Causal language modelling on the corpus (padding positions carry no loss)."""
    import torch

    ids = [tok(d)["input_ids"][:MAX_TOKENS - 1] + [tok.eos_token_id] for d in docs]
    width = max(len(x) for x in ids)
    table = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(table)
    for r, x in enumerate(ids):
        table[r, :len(x)], mask[r, :len(x)] = torch.tensor(x), 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * (1 - s / PRETRAIN_STEPS))
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(PRETRAIN_STEPS):
        idx = torch.randint(0, len(ids), (BATCH,), generator=gen)
        m = mask[idx]
        cut = int(m.sum(1).max())
        batch, m = table[idx, :cut], m[:, :cut]
        labels = batch.masked_fill(m == 0, -100)
        loss = model(input_ids=batch, attention_mask=m, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == PRETRAIN_STEPS - 1:
            print(f"pre-training step {step}: next-token loss {loss.item():.3f}")
    model.eval()


def main() -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)  # the same float sums on any machine: the weights are byte-identical
    docs = corpus()
    tok = build_tokenizer(docs)
    eos = tok.convert_tokens_to_ids(EOS)
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2, n_inner=128,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    pretrain(model, tok, docs)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT.relative_to(EXAMPLE)}: {params} parameters, vocab {len(tok)}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
