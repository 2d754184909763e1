"""Regenerate models/tiny-clip: a tiny open_clip CLIP, pre-trained here (deterministic, offline).

    python specs/icon-search/models/make_tiny_clip.py     # imports ../make_data.py for its icons

A stand-in for the pre-trained CLIP a real spec names (which has seen captioned images of flat
icons before): CORPUS_SIZE icon/caption pairs drawn by make_data.draw_pair from another random
stream (PRETRAIN_SEED; the example's data uses seed 5), every caption in ONE plain phrasing
("a {size} {colour} {shape} {place} on a {bg} background"). Every pair whose icon is pixel-identical
to one of the 160 icons in data/ (train, val and test alike), or whose caption is a near copy of
one of their captions (Jaccard of character 5-grams above make_data.MAX_SIMILARITY), is left out:
no evaluation image or caption is seen in pre-training. The example's data phrases icons five
ways (the design team's vocabulary: "tile", "backdrop", "fill", word orders); the base has only
met the plain one, which is what the fine-tune then teaches.

Pre-training: CLIP's symmetric InfoNCE at temperature 0.07 (the spec's), AdamW, PRETRAIN_STEPS
steps of batches of 64 (warm-up, then linear decay), torch.manual_seed(0), one thread, so the
weights are the same bytes on every run with the same library versions. A randomly initialised
tiny CLIP ranks test icons by chance (recall@5 of 16 near 0.3) and 128 training pairs are too
few to learn shapes, colours and places from scratch.

Layout (open_clip's `local-dir:`): open_clip_config.json, open_clip_model.safetensors and a
word-level tokenizer (tokenizer.json, tokenizer_config.json); `hf_tokenizer_name` in text_cfg makes
open_clip read the tokenizer from the folder itself. Plain open_clip loads it:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:specs/icon-search/models/tiny-clip")
    tokenizer = open_clip.get_tokenizer("local-dir:specs/icon-search/models/tiny-clip")

Shape: embed dim 64; vision ViT 32x32 px, patch 8, width 64, 2 layers, 2 heads; text width 64,
2 layers, 2 heads, context 32, vocabulary of the generator's words (about 70 tokens); about 0.15M
parameters, 0.6 MB.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
OUT = HERE / "tiny-clip"
PRETRAIN_SEED = 1001
CORPUS_SIZE = 3000
PRETRAIN_STEPS = 1500
BATCH = 64
TEMPERATURE = 0.07
CONTEXT = 32
PLAIN = "a {size} {colour} {shape} on a {bg} background"  # no word for where the shape is
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]

sys.path.insert(0, str(EXAMPLE))
import make_data as md

sys.path.pop(0)


def config(vocab_size: int, eos_id: int) -> dict[str, Any]:
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": md.SIZE, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32,
                       "mlp_ratio": 2.0},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size, "width": 64, "heads": 2, "layers": 2,
                     "mlp_ratio": 2.0, "hf_tokenizer_name": "tiny-clip", "pool_type": "eos", "eos_id": eos_id,
                     "pad_id": 0},
    }


def vocabulary() -> list[str]:
    """Special tokens, then every word the generator can write (its phrasings and attribute names),
    sorted: the tokenizer never meets an unknown word in this example."""
    words: set[str] = set()
    for text in [*md.PHRASES, *md.COLOURS, *md.BACKGROUNDS, *md.SHAPES, *md.SIZES, *md.PLACES]:
        words.update(re.findall(r"[a-z]+|[^\sa-z{}]", re.sub(r"\{\w+\}", " ", text.lower())))
    return SPECIAL + sorted(words)


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=CONTEXT)


def corpus() -> list[tuple[str, Any]]:
    """CORPUS_SIZE (caption, image) pairs in the plain phrasing, none of them an icon of data/ or a
    near copy of one of its captions. Icons may repeat within the corpus."""
    rows = [json.loads(line) for line in (EXAMPLE / "data" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    from PIL import Image

    held: set[bytes] = set()
    for r in rows:
        with Image.open(EXAMPLE / "data" / "images" / r["image"]) as im:
            held.add(im.convert("RGB").tobytes())
    held_captions = [md.shingles(r["caption"]) for r in rows]
    rng = random.Random(PRETRAIN_SEED)
    out: list[tuple[str, Any]] = []
    skipped = 0
    while len(out) < CORPUS_SIZE:
        drawn = md.draw_pair(rng)
        if drawn is None:
            continue
        words, img, _ = drawn
        caption = PLAIN.format(**words)
        if img.tobytes() in held or md.near(md.shingles(caption), held_captions):
            skipped += 1
            continue
        out.append((caption, img))
    print(f"pre-training corpus: {len(out)} pairs ({skipped} draws left out as icons or near copies of data/)")
    return out


def pretrain(model: Any, tok: Any, preprocess: Any) -> None:
    import torch
    import torch.nn.functional as F

    pairs = corpus()
    pixels = torch.stack([preprocess(img) for _, img in pairs])
    ids = torch.tensor(tok([c for c, _ in pairs], padding="max_length", max_length=CONTEXT,
                           truncation=True)["input_ids"])
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * (1 - s / PRETRAIN_STEPS))
    gen = torch.Generator().manual_seed(0)
    target = torch.arange(BATCH)
    model.train()
    for step in range(PRETRAIN_STEPS):
        idx = torch.randperm(len(pairs), generator=gen)[:BATCH]
        img = F.normalize(model.encode_image(pixels[idx]), dim=-1)
        txt = F.normalize(model.encode_text(ids[idx]), dim=-1)
        logits = img @ txt.T / TEMPERATURE
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == PRETRAIN_STEPS - 1:
            print(f"pre-training step {step}: contrastive loss {loss.item():.3f}")
    model.eval()


def main() -> None:
    import math

    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)  # the same float sums on any machine: the weights are byte-identical
    tok = build_tokenizer()
    cfg = config(len(tok), tok.sep_token_id)
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / TEMPERATURE))
    model.logit_scale.requires_grad_(False)
    preprocess = open_clip.image_transform(md.SIZE, is_train=False)
    pretrain(model, tok, preprocess)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tok.save_pretrained(OUT)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        (OUT / extra).unlink(missing_ok=True)  # not needed to load the tokenizer
    (OUT / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2)
                                               + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / "open_clip_model.safetensors"), metadata={"format": "pt"})
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT.relative_to(EXAMPLE)}: {params} parameters, vocab {len(tok)}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
