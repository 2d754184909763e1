"""Hardware profiles for `ftc check --target`: facts, not probes (pre-commit needs no GPU)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    title: str
    cuda: bool
    precisions: tuple[str, ...]
    memory: float | None  # bytes per device


TARGETS: dict[str, Target] = {
    "cpu": Target("the CPU", False, ("fp32", "bf16"), None),
    "t4": Target("an NVIDIA T4 (16 GB, sm_75)", True, ("fp32", "fp16"), 16e9),
    "v100": Target("an NVIDIA V100 (32 GB, sm_70)", True, ("fp32", "fp16"), 32e9),
    "a10g": Target("an NVIDIA A10G (24 GB, sm_86)", True, ("fp32", "fp16", "bf16"), 24e9),
    "l4": Target("an NVIDIA L4 (24 GB, sm_89)", True, ("fp32", "fp16", "bf16"), 24e9),
    "a100-40": Target("an NVIDIA A100 40 GB (sm_80)", True, ("fp32", "fp16", "bf16"), 40e9),
    "a100": Target("an NVIDIA A100 80 GB (sm_80)", True, ("fp32", "fp16", "bf16"), 80e9),
    "h100": Target("an NVIDIA H100 80 GB (sm_90)", True, ("fp32", "fp16", "bf16"), 80e9),
    "h200": Target("an NVIDIA H200 141 GB (sm_90)", True, ("fp32", "fp16", "bf16"), 141e9),
}
