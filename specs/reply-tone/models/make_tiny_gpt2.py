"""Regenerate models/tiny-gpt2: a tiny, randomly initialised GPT-2 (deterministic, offline).

    python specs/reply-tone/models/make_tiny_gpt2.py     # after both examples' make_data.py

A byte-level BPE tokenizer (vocabulary 1000) is trained with `tokenizers` on the text of this
example's data and of ../rlhf-helpfulness/data (which reuses this model through a relative path);
the weights come from GPT2LMHeadModel(config) under torch.manual_seed(0). Everything is saved with
save_pretrained (safetensors), so that plain transformers loads it without the hub:

    AutoModelForCausalLM.from_pretrained("specs/reply-tone/models/tiny-gpt2")
    AutoTokenizer.from_pretrained("specs/reply-tone/models/tiny-gpt2")

Shape: 2 layers, width 64, 2 heads, 256 positions, tied embeddings: about 0.5 MB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
OUT = HERE / "tiny-gpt2"
CORPORA = [EXAMPLE / "data" / "all.jsonl", *sorted((EXAMPLE.parent / "rlhf-helpfulness" / "data").glob("*.jsonl"))]
VOCAB_SIZE = 1000
EOS = "<|endoftext|>"


def texts() -> list[str]:
    out: list[str] = []
    for path in CORPORA:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.extend(v for v in json.loads(line).values() if isinstance(v, str))
    return out


def build_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts(), vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                             pad_token=EOS, model_max_length=256)


def main() -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer()
    eos = tok.convert_tokens_to_ids(EOS)
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2, n_inner=128,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT.relative_to(EXAMPLE)}: {params} parameters, vocab {len(tok)}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
