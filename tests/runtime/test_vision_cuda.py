"""The vision backend on a GPU: bf16 and fp16 (loss scaling) mixed precision, GPU memory in the step
events, evaluation and latency on CUDA. Skipped where CUDA is not available."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from ftc.runtime.backends import vision

from tests.runtime.test_vision import _ctx, convnext, images, resnet  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_bf16_lora_on_cuda(tmp_path: Path, convnext: Path, images: Path) -> None:  # noqa: F811
    ctx = _ctx(tmp_path, convnext, images, method="lora { rank 4; alpha 8; merge true }", device="cuda",
               train="epochs 2; batch_size 8; learning_rate 3e-3; precision bf16; seed 7")
    fitted = vision.fit(ctx)
    events = ctx.events  # type: ignore[attr-defined]
    start = next(e for e in events if e["event"] == "start")
    assert start["precision"] == "bf16" and next(fitted.model.parameters()).device.type == "cuda"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 6 and all(e["gpu_mb"] > 0 and e["loss"] == e["loss"] for e in steps)
    assert fitted.result.merged_dir is not None
    result = vision.evaluate(ctx, fitted.result.model_dir, "test")
    assert result.n == 9 and 0 <= result.metrics["accuracy"] <= 1
    latency = vision.measure_latency(ctx, fitted.result.model_dir, "test", warmup=2, n=5)
    assert latency["device"].startswith("cuda") and latency["p50"] > 0


def test_fp16_full_with_batchnorm_on_cuda(tmp_path: Path, resnet: Path, images: Path) -> None:  # noqa: F811
    ctx = _ctx(tmp_path, resnet, images, device="cuda",
               train="epochs 2; batch_size 8; learning_rate 3e-3; precision fp16; seed 7; checkpoints keep 1")
    fitted = vision.fit(ctx)
    assert fitted.result.kind == "full" and (tmp_path / "run" / "checkpoints" / "checkpoint-6").is_dir()
    assert vision.evaluate(ctx, None, "test").extra["head"]



@pytest.mark.parametrize("name", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_optimizers_on_cuda_train_and_checkpoint(tmp_path: Path, resnet: Path, images: Path, name: str) -> None:  # noqa: F811
    import bitsandbytes as bnb
    from ftc.runtime.backends.loop import _optimizer
    from ftc.runtime.backends.hf import train_block

    ctx = _ctx(tmp_path, resnet, images, device="cuda",
               train=f"epochs 2; batch_size 8; learning_rate 3e-3; precision fp32; seed 7; optimizer {name}")
    notes: list[dict[str, object]] = []
    opt = _optimizer([torch.nn.Parameter(torch.zeros(64, 64, device="cuda"))], train_block(ctx),
                     torch.device("cuda"), notes.append)
    assert isinstance(opt, bnb.optim.optimizer.Optimizer8bit) and notes == []
    assert ("Paged" in type(opt).__name__) == name.startswith("paged")
    fitted = vision.fit(ctx)
    assert not any("needs CUDA" in str(e.get("message")) for e in ctx.events)  # type: ignore[attr-defined]
    assert fitted.result.steps == 6 and (tmp_path / "run" / "checkpoints" / "checkpoint-6").is_dir()
