"""Timing single inference requests: the loop every backend's `measure_latency` shares.

A request is one example end to end as a service would run it (tokenise, forward, and decode for a
generator); `warmup` requests run first, untimed (lazy initialisation, allocator and kernel caches),
then `n` timed ones, each synchronised with the GPU on CUDA so that the time covers the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import TrainContext

DEFAULT_REQUESTS = 50


def warmup_of(ctx: TrainContext, warmup: int | None) -> int:
    """`warmup`, else the spec's `latency_warmup` (5 when the spec has no eval block)."""
    if warmup is not None:
        return warmup
    return int(ctx.spec.eval.latency_warmup) if ctx.spec.eval is not None else 5


def model_name(model: Any) -> str:
    """The class that serves the requests (under a peft wrapper, the wrapped model's)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner).__name__


def time_requests(call: Callable[[int], None], device: Any, *, warmup: int, n: int = DEFAULT_REQUESTS,
                  **info: Any) -> dict[str, Any]:
    """p50/p95/p99 and mean seconds of `call(i)` for i in warmup..warmup+n-1, after `warmup`
    untimed calls; `info` is added to the result (what was timed, on which model)."""
    import torch

    if n < 1:
        raise ValueError("latency needs at least one timed request")
    cuda = getattr(device, "type", str(device)) == "cuda"
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + n):
            start = time.perf_counter()
            call(i)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {**metrics.percentiles(times), "mean": sum(times) / len(times), "n": n, "warmup": warmup,
            "device": str(device), "unit": "s", **info, "samples": [round(t, 7) for t in times]}
