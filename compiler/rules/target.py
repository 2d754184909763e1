"""Hardware profile checks, run only with `ftc check --target NAME` so that pre-commit stays
hardware-free. Profiles are facts about common accelerators (compiler/targets.py)."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.estimate import fmt_bytes
from ftc.compiler.rules.base import ERROR, Hit, rule
from ftc.compiler.targets import TARGETS


def _profile(c: CheckedSpec):  # type: ignore[no-untyped-def]
    return TARGETS.get(c.options.target or "")


@rule("FT190", "precision-unsupported", ERROR, stage="target")
def precision_unsupported(c: CheckedSpec) -> Iterator[Hit]:
    """A training precision that the target hardware does not support.

    Why:
    bf16 needs compute capability 8.0 (A100, L4, H100); on a T4 or V100 it fails or falls back
    silently to slow emulation. Checked only with `--target`, so pre-commit stays hardware-free.
    """
    p = _profile(c)
    tr = c.spec.train or s.Train()
    if p is not None and tr.precision not in p.precisions:
        yield Hit(f"`precision {tr.precision}` is not supported on {p.title}", tr.at("precision") or tr.span,
                  help=f"use one of: {', '.join(p.precisions)}")


@rule("FT191", "target-memory", ERROR, stage="target")
def target_memory(c: CheckedSpec) -> Iterator[Hit]:
    """A memory budget larger than the target device's memory.

    Why:
    The budget is checked against the estimate; the budget itself must fit the hardware.
    """
    p, b = _profile(c), c.spec.budget
    if p is None or b is None or b.gpu_memory is None or p.memory is None:
        return
    if b.gpu_memory > p.memory:
        yield Hit(f"`gpu_memory {fmt_bytes(b.gpu_memory)}` exceeds the {fmt_bytes(p.memory)} of {p.title}",
                  b.at("gpu_memory"), help=f"set `gpu_memory` to at most {fmt_bytes(p.memory)}")


@rule("FT192", "needs-cuda", ERROR, stage="target")
def needs_cuda(c: CheckedSpec) -> Iterator[Hit]:
    """A setting that needs CUDA on a CPU target (paged or 8-bit optimizers, fp16 training, several GPUs).

    Why:
    bitsandbytes runs 4-bit QLoRA on the CPU, but its paged optimizers and fp16 mixed precision
    need a CUDA device; on the CPU they fail at the first step.
    """
    p = _profile(c)
    if p is None or p.cuda:
        return
    tr = c.spec.train or s.Train()
    if tr.optimizer in ("paged_adamw_8bit", "adamw_8bit"):
        yield Hit(f"`optimizer {tr.optimizer}` needs a CUDA device", tr.at("optimizer"),
                  help="use `optimizer adamw` on the CPU")
    b = c.spec.budget
    if b is not None and b.gpus * b.nodes > 1:
        yield Hit("several GPUs requested on a CPU target", b.at("gpus"), help="set `gpus 1` or pick a GPU target")
