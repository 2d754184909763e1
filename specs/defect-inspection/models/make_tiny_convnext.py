"""Regenerate models/tiny-convnext: timm's `test_convnext` (about 0.2M parameters), randomly initialised
under torch.manual_seed(0), with a 3-class head, saved in timm's Hugging Face layout (config.json +
model.safetensors). No hub access; timm loads the folder directly:

    python specs/defect-inspection/models/make_tiny_convnext.py
    timm.create_model("local-dir:specs/defect-inspection/models/tiny-convnext", pretrained=True)

The input size in its pretrained_cfg is set to the example's 32x32 images (the smallest size the
architecture's four downsampling stages accept).
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "tiny-convnext"
LABELS = ["clean", "scratch", "spot"]  # the order of the spec's `labels`


def main() -> None:
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False, num_classes=len(LABELS))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "pool_size": (1, 1),
                            "crop_pct": 1.0}
    if OUT.exists():
        shutil.rmtree(OUT)
    save_for_hf(model, OUT, model_config={"label_names": LABELS}, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT.relative_to(HERE.parent)}: {params} parameters, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
