"""Image-text pairs for the multimodal backend: image files, encoding, the loss and the scores.

Rows name an image file (the signal's `image` field, relative to the data block's `image_root`,
else to the folder of the table that holds the row) and a caption (`caption`). Images are read
with Pillow, converted to RGB and put through the model's evaluation preprocessing (open_clip's
resize, centre crop and normalisation); training uses the same (no augmentation). Images are
decoded when a batch needs them and not kept (Pixels); every file's header is read first, so a
file that is missing or unreadable at run time is an error that names it before training starts.

The loss is CLIP's: symmetric InfoNCE over in-batch negatives, the mean of image->text and
text->image cross-entropy on cosine similarities over the spec's temperature
(embedding_loop.info_nce in both directions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.runtime.api import TrainContext
from ftc.runtime.backends.embedding_loop import batches, device_of, info_nce


@dataclass
class Pairs:
    """The usable rows of a table: their index in the table, image files and captions."""

    kept: list[int]
    images: list[Path]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.kept)


def image_root(ctx: TrainContext, split: str | None = None, table: Path | None = None) -> Path:
    """The folder image paths are relative to: `image_root`, else the folder of the split's table
    (or of `table`, a file named by a gate)."""
    data = ctx.spec.data
    if data is not None and data.image_root:
        return ctx.checked.resolve_path(data.image_root, data.at("image_root"))
    if table is not None:
        return table.parent
    f = (data.source or getattr(data, split or "train", None) or data.train) if data is not None else None
    if f is None:
        return ctx.checked.base_dir
    return ctx.checked.resolve_path(f.path, f.span).parent


def pairs_of(ctx: TrainContext, rows: list[dict[str, Any]], root: Path) -> Pairs:
    """The rows that have both the signal's image and caption fields."""
    sig = ctx.spec.signal
    out = Pairs([], [], [])
    for i, r in enumerate(rows):
        image, caption = r.get(sig.image), r.get(sig.caption)
        if image is None or caption is None or not str(image).strip():
            continue
        out.kept.append(i)
        out.images.append(root / str(image))
        out.captions.append(str(caption))
    return out


def split_pairs(ctx: TrainContext, split: str) -> Pairs:
    part = ctx.parts.get(split)
    return pairs_of(ctx, part.rows if part is not None else [], image_root(ctx, split))


def _open(f: Path, decode: bool = True) -> Any:
    """The file as an RGB PIL image (decoded now, the file closed), or None with only its header
    read (`decode` False); ValueError naming it when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            return im.convert("RGB") if decode else None
    except FileNotFoundError:
        raise ValueError(f"image file {f} does not exist (image paths are relative to the data block's "
                         "`image_root`, else to the table's folder)") from None
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"image file {f} cannot be read as an image: {e}") from None


class Pixels:
    """A split's preprocessed images, decoded when read and not kept: `pixels[i]` is one image's
    tensor [3, H, W], `pixels[a:b]` a batch [n, 3, H, W]; memory holds one batch however large the
    split."""

    def __init__(self, files: list[Path], preprocess: Any) -> None:
        self.files, self.preprocess = list(files), preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | slice) -> Any:
        import torch

        if isinstance(key, slice):
            chosen = self.files[key]
            return torch.stack([self.preprocess(_open(f)) for f in chosen]) if chosen else torch.zeros(0)
        return self.preprocess(_open(self.files[key]))


def load_pixels(files: list[Path], preprocess: Any) -> Pixels:
    """The split's images, preprocessed when read (Pixels); each file's header is read now, so a
    missing or unreadable file is a ValueError naming it before any training or evaluation."""
    for f in files:
        _open(f, decode=False)
    return Pixels(files, preprocess)


def embed_gallery(model: Any, pixels: Any, batch: int = 64) -> Any:
    """Every image's normalised embedding, `batch` images at a time, without gradients."""
    import torch

    with torch.inference_mode():
        parts = [embed_images(model, pixels[i:i + batch]) for i in range(0, len(pixels), batch)]
    return torch.cat(parts) if parts else torch.zeros(0)


def embed_images(model: Any, pixels: Any) -> Any:
    import torch.nn.functional as F

    return F.normalize(model.encode_image(pixels.to(device_of(model))).float(), dim=-1)


def embed_texts(model: Any, tok: Any, captions: list[str]) -> Any:
    import torch.nn.functional as F

    return F.normalize(model.encode_text(tok(captions).to(device_of(model))).float(), dim=-1)


def encode(model: Any, tok: Any, pixels: Any, captions: list[str], batch: int = 64) -> tuple[Any, Any]:
    """(image embeddings, caption embeddings), normalised, without gradients."""
    import torch

    images = embed_gallery(model, pixels, batch)
    with torch.inference_mode():
        texts = torch.cat([embed_texts(model, tok, captions[i:i + batch]) for i in range(0, len(captions), batch)])
    return images, texts


def clip_loss(images: Any, texts: Any, temperature: float) -> Any:
    """Symmetric InfoNCE: the mean of image->text and text->image cross-entropy."""
    return (info_nce(images, texts, None, temperature) + info_nce(texts, images, None, temperature)) / 2


def batch_loss(model: Any, tok: Any, pixels: Any, captions: list[str], temperature: float) -> Any:
    return clip_loss(embed_images(model, pixels), embed_texts(model, tok, captions), temperature)


def split_loss(images: Any, texts: Any, idx: list[int], batch: int, temperature: float) -> float:
    """The training loss on rows `idx` in batches of `batch` in row order (a last batch of one row
    is dropped: it has no in-batch negative); NaN when no batch remains."""
    import torch

    groups = batches(idx, list(range(len(idx))), batch)
    if not groups:
        return math.nan
    with torch.inference_mode():
        losses = [float(clip_loss(images[g], texts[g], temperature)) for g in groups]
    return sum(losses) / len(losses)


@dataclass
class Scores:
    """Per row: the rank of its own caption among the rows' captions (image->text), of its own
    image among the rows' images (text->image), and whether the image's closest distinct caption
    is its own (zero-shot)."""

    i2t: list[int]
    t2i: list[int]
    zero_shot: list[bool]


def scores(images: Any, texts: Any, captions: list[str]) -> Scores:
    """Ranks count the candidates scoring strictly above the row's own (ties favour the row)."""
    import torch

    sims = images @ texts.T  # [image, caption]
    own = sims.diagonal()
    i2t = (sims > own.unsqueeze(1)).sum(1)
    t2i = (sims.T > own.unsqueeze(1)).sum(1)
    distinct = sorted(set(captions))
    first = {c: captions.index(c) for c in distinct}
    columns = torch.tensor([first[c] for c in distinct], device=sims.device)
    best = sims[:, columns].argmax(1).tolist()
    zero_shot = [distinct[b] == c for b, c in zip(best, captions, strict=True)]
    return Scores([int(x) for x in i2t], [int(x) for x in t2i], zero_shot)


def metrics_of(sc: Scores, idx: list[int], k: int, loss: float) -> dict[str, float]:
    """Metrics of rows `idx` (see multimodal.evaluate_rows for their definitions)."""
    n = len(idx)

    def share(values: list[bool]) -> float:
        return sum(values) / n

    t2i_k, i2t_k = share([sc.t2i[i] < k for i in idx]), share([sc.i2t[i] < k for i in idx])
    return {"recall_at_k": t2i_k, f"recall_at_{k}": t2i_k, "recall_at_1": share([sc.t2i[i] < 1 for i in idx]),
            "text_to_image_recall_at_k": t2i_k, "image_to_text_recall_at_k": i2t_k,
            "image_to_text_recall_at_1": share([sc.i2t[i] < 1 for i in idx]),
            "zero_shot_accuracy": share([sc.zero_shot[i] for i in idx]), "loss": loss}
