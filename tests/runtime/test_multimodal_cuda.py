"""The multimodal backend on a GPU: bf16 mixed precision with an 8-bit optimizer, GPU memory in the
step events, evaluation and latency on CUDA. Skipped where CUDA is not available."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from tests.runtime.test_multimodal import context, root, spec  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("optimizer", ["adamw", "paged_adamw_8bit"])
def test_bf16_lora_on_cuda(root: Path, optimizer: str) -> None:  # noqa: F811
    from ftc.runtime.backends import multimodal

    events: list[dict[str, Any]] = []
    text = spec("merge", train=f"optimizer {optimizer}").replace("precision fp32", "precision bf16")
    ctx = context(root, f"cuda-{optimizer}", text, events, max_steps=4, device="cuda")
    fitted = multimodal.fit(ctx)
    assert next(fitted.model.parameters()).device.type == "cuda"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 and all(e.get("gpu_mb", 0) > 0 and e["loss"] == e["loss"] for e in steps)
    assert not any("needs CUDA" in str(e.get("message")) for e in events)
    assert fitted.result.merged_dir is not None
    res = multimodal.evaluate(ctx, fitted.result.model_dir, "test")
    assert 0 <= res.metrics["recall_at_k"] <= 1 and res.metrics["loss"] > 0
    timing = multimodal.measure_latency(ctx, fitted.result.model_dir, "test", warmup=2, n=5)
    assert timing["device"].startswith("cuda") and timing["p50"] > 0
