"""Regenerate models/tiny-bert: a tiny BERT, pre-trained here (deterministic, offline).

    python specs/ticket-triage/models/make_tiny_bert.py     # imports ../make_data.py for its corpus

The WordPiece vocabulary and the pre-training text come from make_data.corpus: CORPUS_SIZE unlabelled
tickets from the same templates and words as the splits, drawn from another random stream (no hub
access). The encoder is pre-trained with masked-language modelling on them for PRETRAIN_STEPS steps
(warm-up, then linear decay) under torch.manual_seed(0), on one thread: a stand-in for the pre-trained
base a real spec names, which has read text like its tickets and knows their words. A randomly
initialised encoder gives nearly the same [CLS] vector for every input, and a briefly pre-trained one
(600 steps on the 168 training texts) left the example passing its gates for some seeds only. The
classifier head stays random (fine-tuning trains it).
Everything is saved with save_pretrained (safetensors), so that plain transformers loads it:

    AutoModelForSequenceClassification.from_pretrained("specs/ticket-triage/models/tiny-bert")
    AutoTokenizer.from_pretrained("specs/ticket-triage/models/tiny-bert")

Shape: 2 layers, hidden 64, 2 heads, intermediate 128, 128 positions, vocab 1000: about 0.6 MB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
OUT = HERE / "tiny-bert"
LABELS = ("billing", "bug", "account", "shipping")  # the order of the spec's `labels`
VOCAB_SIZE = 1000
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PRETRAIN_STEPS = 3000
CORPUS_SIZE = 4000


def texts() -> list[str]:
    """The pre-training corpus: unlabelled tickets from make_data.corpus (same templates and words
    as the splits, another random stream)."""
    import sys

    sys.path.insert(0, str(EXAMPLE))
    try:
        from make_data import corpus
    finally:
        sys.path.pop(0)
    return corpus(CORPUS_SIZE)


def build_vocab() -> list[str]:
    """Special tokens, every character (alone and as a `##` continuation), then whole words by
    frequency (ties by spelling) up to VOCAB_SIZE. Built here rather than by the `tokenizers`
    WordPiece trainer, whose tie-breaking varies between runs; any word outside the vocabulary
    still splits into known pieces."""
    import unicodedata
    from collections import Counter

    from tokenizers.pre_tokenizers import BertPreTokenizer

    pre = BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts():
        norm = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        words.update(w for w, _ in pre.pre_tokenize_str(norm))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL + chars + [f"##{c}" for c in chars]
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= VOCAB_SIZE:
            break
        if word not in vocab:
            vocab.append(word)
    return vocab


def build_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(build_vocab())}
    wp = BertWordPieceTokenizer(vocab, lowercase=True, strip_accents=True)
    return BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True, model_max_length=128,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")


def pretrain(model, tok) -> None:  # type: ignore[no-untyped-def]
    """Masked-language modelling on the training texts; copies the trained encoder into `model`."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    mlm = BertForMaskedLM(model.config)
    batch_all = tok(texts(), padding=True, truncation=True, max_length=64, return_tensors="pt")
    opt = torch.optim.AdamW(mlm.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * (1 - s / PRETRAIN_STEPS))
    gen = torch.Generator().manual_seed(0)
    n = batch_all["input_ids"].shape[0]
    special = torch.tensor([tok.pad_token_id, tok.cls_token_id, tok.sep_token_id])
    for step in range(PRETRAIN_STEPS):
        idx = torch.randint(0, n, (32,), generator=gen)
        ids = batch_all["input_ids"][idx].clone()
        mask = batch_all["attention_mask"][idx]
        labels = ids.clone()
        chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & ~torch.isin(ids, special)
        labels[~chosen] = -100
        ids[chosen] = tok.mask_token_id
        loss = mlm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == PRETRAIN_STEPS - 1:
            print(f"pre-training step {step}: masked-LM loss {loss.item():.3f}")
    model.bert.embeddings.load_state_dict(mlm.bert.embeddings.state_dict())
    model.bert.encoder.load_state_dict(mlm.bert.encoder.state_dict())


def main() -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.set_num_threads(1)  # the same float sums on any machine: the weights are byte-identical
    tok = build_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, type_vocab_size=2,
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)}, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    pretrain(model, tok)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)
    vocab = OUT / "vocab.txt"
    if not vocab.exists():  # the slow-tokenizer vocabulary, for tools that read vocab.txt
        ordered = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        vocab.write_text("".join(f"{t}\n" for t, _ in ordered), encoding="utf-8")
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT.relative_to(EXAMPLE)}: {params} parameters, vocab {len(tok)}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
