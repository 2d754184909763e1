"""The same backend on a GPU: bf16 mixed precision, QLoRA with bitsandbytes' CUDA kernels, paged
8-bit AdamW, GPU memory in the step events. Skipped where CUDA is not available."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ftc.runtime.backends import artifacts
from ftc.runtime.backends import loading
from ftc.runtime.backends import text_eval
from ftc.runtime.backends import text

from tests.runtime.conftest import MakeCtx

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_bf16_lora_on_cuda(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("generation", "lora { rank 4 }", device="cuda",
                   train="steps 3; learning_rate 1e-3; batch_size 8; precision bf16; optimizer paged_adamw_8bit; "
                         "checkpoints keep 1 every 3 steps")
    result = text.train_sft(ctx)
    start = ctx.events.of("start")[0]
    assert start["precision"] == "bf16" and not [e for e in ctx.events.of("note") if "precision" in e]
    assert all(e["gpu_mb"] > 0 for e in ctx.events.of("step"))
    saved = {p.name for p in (ctx.run_dir / "checkpoints").rglob("*") if p.is_file()}
    assert {"optimizer.safetensors", "optimizer.json"} <= saved and "optimizer.pt" not in saved  # 8-bit state, no pickle
    ev = text_eval.evaluate(ctx, result.model_dir, "test")
    assert ev.n == 30 and ev.metrics["loss"] > 0
    lat = text_eval.measure_latency(ctx, result.model_dir, n=5, warmup=1)
    assert lat["device"].startswith("cuda") and lat["p50"] > 0


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_qlora_on_cuda(make_ctx: MakeCtx, task: str) -> None:
    ctx = make_ctx(task, "qlora { rank 4; alpha 8 }", device="cuda",
                   train="steps 2; learning_rate 1e-3; batch_size 8; precision bf16")
    run = text.fit_sft(ctx)
    model = run.model.eval()
    assert loading.is_quantized(model.get_base_model())
    loaded, tok = artifacts.load_trained(ctx, run.result.model_dir)
    rows = ctx.parts["test"].rows[:4]
    texts = [r["text"] if "text" in r else r["prompt"] for r in rows]
    batch = {k: v.to("cuda") for k, v in tok(texts, padding=True, return_tensors="pt").items()}
    with torch.inference_mode():
        a, b = model(**batch).logits.float(), loaded(**batch).logits.float()
    assert torch.allclose(a, b, atol=5e-2), (a - b).abs().max()
    ev = text_eval.evaluate(ctx, run.result.model_dir, "test")
    assert ev.n == 30


def test_fp16_checkpoint_holds_the_scaler_and_resumes(make_ctx: MakeCtx, tmp_path: Path) -> None:
    from ftc.runtime import checkpoints

    train = "steps 4; learning_rate 1e-3; batch_size 8; precision fp16; checkpoints keep 2 every 2 steps"
    ctx = make_ctx("classification", "lora { rank 4 }", device="cuda", train=train, folder=tmp_path / "a",
                   max_steps=2)
    text.fit_sft(ctx)
    last = checkpoints.last_complete(ctx.run_dir / "checkpoints")
    assert last is not None and (last / checkpoints.SCALER).is_file() and (last / checkpoints.RNG).is_file()
    assert not [p for p in ctx.run_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
    resumed = make_ctx("classification", "lora { rank 4 }", device="cuda", train=train, folder=tmp_path / "a",
                       run_dir=ctx.run_dir, resume=True)
    assert text.fit_sft(resumed).result.steps == 4
    assert [e["step"] for e in resumed.events.of("step")] == [3, 4]
