"""Images for the vision backend: where a row's image is, decoding, preprocessing, augmentation.

Where an image is (as the compiler's readers resolve it, compiler/data/readers.py):
  image_folder  rows are {"image": "<class>/<file>", "label": "<class>"}, the path relative to the
                folder the spec names for the split (`train "data/train"`, or `source`)
  image_table   the path is relative to `image_root` when the data block gives one, else to the
                folder of the table file
  embedded      a `datasets` Image struct ({"bytes": ..., "path": ...}) is decoded from its bytes
An image that cannot be read or decoded is a ValueError naming the file (the check read it, so it
changed since, or the rows did not come from a checked spec). Images are decoded when a batch needs
them and not kept (LazyImages): a split's headers are read before training starts, so a missing or
broken file stops the run then, and memory holds one batch of pixels however large the split.

Preprocessing follows the model's pretrained_cfg through timm.data (resolve_data_config: input
size, interpolation, mean/std, crop_pct/crop_mode): evaluation uses timm's own eval transform
(create_transform(is_training=False)), the one a user of the artifact would build. Training uses
the same resize and crop, the declared augmentations, then the same normalisation:
  flip         horizontal flip, p = 0.5
  crop         random resized crop of 50-100% of the area, aspect 3/4-4/3 (replaces the centre crop)
  rotate       random rotation within +-15 degrees (corners filled with the mean colour)
  color_jitter brightness, contrast and saturation +-0.4 (timm's default strength)
  randaugment  torchvision RandAugment: 2 operations of magnitude 9
  mixup        batch-level: images and one-hot targets blended, lambda ~ Beta(0.8, 0.8)
  cutmix       batch-level: a box of another image pasted in, lambda ~ Beta(1, 1)
(with both mixup and cutmix, each batch takes one of them at random, as timm's Mixup does).
Every random draw is seeded from (train seed, epoch, row or batch): the same seed gives the same
augmented batches, and a resumed run draws exactly what the uninterrupted one did.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.runtime.api import TrainContext

AUGMENTS = ("flip", "crop", "color_jitter", "randaugment", "mixup", "cutmix", "rotate")
BATCH_AUGMENTS = ("mixup", "cutmix")
MIXUP_ALPHA, CUTMIX_ALPHA = 0.8, 1.0


# ---------------------------------------------------------------------------------------------
# Where images are


def _data_file(ctx: TrainContext, split: str) -> Any:
    data = ctx.spec.data
    return data.source if data.source is not None else getattr(data, split, None)


def image_root(ctx: TrainContext, split: str) -> Path:
    """The folder that the image paths of `split`'s rows are relative to, as the compiler's readers
    resolve them (so the run reads the images `ftc check` read): an image folder's own folder (its
    rows name `<class>/<file>`; `image_root` is for tables), else `image_root`, else the table's folder."""
    data = ctx.spec.data
    f = _data_file(ctx, split) if data is not None else None
    path = ctx.checked.resolve_path(f.path, f.span) if f is not None else None
    if path is not None and path.is_dir():
        return path.resolve()
    if data is not None and data.image_root:
        return ctx.checked.resolve_path(data.image_root, data.at("image_root")).resolve()
    if path is None:
        raise ValueError(f"no data file for the `{split}` split: cannot tell where its images are")
    return root_of(path)


def root_of(path: Path) -> Path:
    """Image paths in an image folder are relative to it; in a table, to the table's folder."""
    path = path.resolve()
    return path if path.is_dir() else path.parent


def shown(path: Path) -> str:
    from ftc.compiler.checked import display_path

    return display_path(path)


def open_image(value: Any, root: Path) -> Any:
    """The row's image as an RGB PIL image (decoded now, the file closed); ValueError naming the
    file when it cannot be read or decoded."""
    from PIL import Image

    data, file, where = _image_source(value, root)
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise _unreadable(where, e.strerror or e) from e
    if not data:
        raise _missing(where, value)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:
        raise _undecodable(where, e) from e


def probe_image(value: Any, root: Path) -> None:
    """Check that the row's image is there and is an image (its header only, nothing decoded);
    the same ValueError as open_image when it is not, so that a run stops before training."""
    from PIL import Image

    data, file, where = _image_source(value, root)
    if file is None:
        if not data:
            raise _missing(where, value)
        return
    if not file.is_file():
        raise _unreadable(where, "no such file")
    try:
        with Image.open(file):
            return
    except Exception as e:
        raise _undecodable(where, e) from e


def _image_source(value: Any, root: Path) -> tuple[bytes | None, Path | None, str]:
    """The row's image as (embedded bytes, file, how to name it in a message)."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is not None:
            return data, None, "an embedded image"
        value = value.get("path")
    if isinstance(value, str):
        file = root / value
        return None, file, f"image `{shown(file)}`"
    return None, None, "an embedded image"


def _unreadable(where: str, why: object) -> ValueError:
    return ValueError(f"cannot read {where}: {why}; the data changed since it was checked: run `ftc check` again")


def _missing(where: str, value: Any) -> ValueError:
    return ValueError(f"{where} is empty or missing (row value {str(value)[:80]!r})")


def _undecodable(where: str, e: Exception) -> ValueError:
    return ValueError(f"cannot decode {where}: {e or type(e).__name__}; replace or remove the file "
                      f"(`ftc check` reports every unreadable image)")


class LazyImages:
    """A split's images, decoded when read (a batch at a time) and not kept: memory stays that of
    one batch however large the split. Indexable, sized and iterable like a list of RGB images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sources: list[Any] = []

    def append(self, value: Any) -> None:
        self.sources.append(value)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Any:
        return open_image(self.sources[i], self.root)

    def __iter__(self) -> Iterator[Any]:
        return (open_image(v, self.root) for v in self.sources)


@dataclass
class Images:
    """The usable rows of a split: their images (decoded when read), class ids, and where each came from."""

    images: LazyImages = field(default_factory=lambda: LazyImages(Path(".")))
    labels: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # row index of each image
    names: list[str] = field(default_factory=list)  # the image path as the row gives it
    skipped: int = 0


def load_images(ctx: TrainContext, rows: list[dict[str, Any]], root: Path, labels: list[str]) -> Images:
    """The images of rows whose label is one of `labels` (others are counted, skipped): each one's
    header is read now (a missing or broken file stops the run before training), its pixels when
    a batch needs them."""
    sig = ctx.spec.signal
    label2id = {name: i for i, name in enumerate(labels)}
    out = Images(images=LazyImages(root))
    for i, row in enumerate(rows):
        value, label = row.get(sig.input), row.get(sig.target)
        if value is None or str(label) not in label2id:
            out.skipped += 1
            continue
        probe_image(value, root)
        out.images.append(value)
        out.labels.append(label2id[str(label)])
        out.kept.append(i)
        out.names.append(value if isinstance(value, str) else str(value.get("path") or "<embedded>"))
    return out


# ---------------------------------------------------------------------------------------------
# Transforms


def data_config(model: Any) -> dict[str, Any]:
    from timm.data.config import resolve_data_config

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return dict(resolve_data_config(model=inner))  # type: ignore[no-untyped-call]


def eval_transform(model: Any) -> Any:
    from timm.data.transforms_factory import create_transform

    return create_transform(**data_config(model), is_training=False)


def refuse_unknown(augment: tuple[str, ...]) -> None:
    unknown = [a for a in augment if a not in AUGMENTS]
    if unknown:
        raise ValueError(f"augmentation {unknown[0]!r} is not implemented by the vision backend "
                         f"(it knows {', '.join(AUGMENTS)})")


def train_transform(model: Any, augment: tuple[str, ...]) -> Any:
    """timm's eval preprocessing with the declared per-image augmentations (see the docstring)."""
    from timm.data.transforms import str_to_interp_mode
    from torchvision import transforms as T  # type: ignore[import-untyped]

    refuse_unknown(augment)
    cfg = data_config(model)
    size = tuple(cfg["input_size"][1:])
    interp = str_to_interp_mode(  # type: ignore[no-untyped-call]
        cfg["interpolation"] if cfg["interpolation"] != "random" else "bicubic")
    base = eval_transform(model).transforms
    resize, tail = base[:-2], base[-2:]  # [resize, crop] + [to tensor, normalise]
    ops: list[Any] = ([T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interp)] if "crop" in augment
                      else list(resize))
    if "flip" in augment:
        ops.append(T.RandomHorizontalFlip(0.5))
    if "rotate" in augment:
        fill = [round(255 * m) for m in cfg["mean"]]
        ops.append(T.RandomRotation(15, interpolation=T.InterpolationMode.BILINEAR, fill=fill))
    if "color_jitter" in augment:
        ops.append(T.ColorJitter(0.4, 0.4, 0.4))
    if "randaugment" in augment:
        ops.append(T.RandAugment(num_ops=2, magnitude=9))
    return T.Compose(ops + list(tail))


def seeded(transform: Any, image: Any, seed: int) -> Any:
    """`transform(image)` with torch's RNG seeded by `seed` (and restored after)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def draw_seed(*parts: int) -> int:
    """A seed from (train seed, epoch, index): distinct streams, stable everywhere."""
    import hashlib

    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**63)


def mix(images: Any, targets: Any, n_classes: int, augment: tuple[str, ...], seed: int) -> tuple[Any, Any]:
    """(images, soft targets) after mixup or cutmix with a batch partner (the batch reversed);
    `targets` are class ids; without a batch augmentation, one-hot targets."""
    import numpy as np
    import torch.nn.functional as F

    soft = F.one_hot(targets, n_classes).float()
    kinds = [a for a in BATCH_AUGMENTS if a in augment]
    if not kinds or images.shape[0] < 2:
        return images, soft
    rng = np.random.default_rng(seed)
    kind = kinds[int(rng.integers(len(kinds)))]
    lam = float(rng.beta(MIXUP_ALPHA, MIXUP_ALPHA) if kind == "mixup" else rng.beta(CUTMIX_ALPHA, CUTMIX_ALPHA))
    partner = images.flip(0)
    if kind == "mixup":
        mixed = images * lam + partner * (1 - lam)
    else:
        h, w = images.shape[-2:]
        cut = math.sqrt(1 - lam)
        bh, bw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
        mixed = images.clone()
        mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the share of the image that stayed
    return mixed, soft * lam + soft.flip(0) * (1 - lam)


def stack(transform: Any, images: Any, start: int = 0, stop: int | None = None) -> Any:
    """images[start:stop] decoded and preprocessed into one tensor."""
    import torch

    end = len(images) if stop is None else min(stop, len(images))
    return torch.stack([transform(images[i]) for i in range(start, end)]) if end > start else torch.zeros((0,))
