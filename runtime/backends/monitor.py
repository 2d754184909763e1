"""Training telemetry: a TrainerCallback that turns transformers' logs into ftc events.

Events (each passed to `emit`, which records it and calls the executor's `ctx.log`):
  {"event": "step", "step", "of", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"?,
   "rss_mb", "gpu_mb"?}         every `logging_steps` optimizer steps; speeds count training time
                                 only; gpu_mb: peak allocated since the previous step event (CUDA)
  {"event": "eval", "step", "split": "val", "loss", <metrics>...}
  {"event": "warning", "kind": "divergence", "step", "message"}   validation loss rose for
                                 `window` evaluations in a row while training loss fell (overfitting)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

Emit = Callable[[dict[str, Any]], None]
_SKIP = {"runtime", "samples_per_second", "steps_per_second", "num_tokens"}


def rss_mb() -> float:
    try:
        import psutil  # type: ignore[import-untyped]

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        import resource

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def gpu_mb(device: Any = None) -> float | None:
    """Peak GPU memory allocated since the last call (MB) when training runs on a GPU (`device`;
    None: the current CUDA device, if CUDA is in use)."""
    import torch

    if not torch.cuda.is_available():
        return None
    if device is None:
        if not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            return None
        device = torch.device("cuda", torch.cuda.current_device())
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return None
    peak = float(torch.cuda.max_memory_allocated(device)) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MonitorCallback(TrainerCallback):
    def __init__(self, emit: Emit, *, split: str = "val", window: int = 2) -> None:
        self.emit = emit
        self.split = split
        self.window = window
        self._train_time = 0.0
        self._step_start: float | None = None
        self._last_step = 0
        self._last_tokens = 0
        self._train_losses: list[float] = []  # since the last evaluation
        self._evals: list[tuple[float, float]] = []  # (val loss, mean train loss before it)
        self._warned_at = -1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last_step = state.global_step
        self._last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._step_start is not None:
            self._train_time += time.perf_counter() - self._step_start
            self._step_start = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            self._step(args, state, logs)
        elif any(k.startswith("eval_") for k in logs):
            self._eval(state, logs)

    def _step(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
        steps = state.global_step - self._last_step
        dt = max(self._train_time, 1e-9)
        samples = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        of = int(getattr(state, "max_steps", 0) or 0)
        event: dict[str, Any] = {"event": "step", "step": state.global_step, **({"of": of} if of > 0 else {}),
                                 "epoch": state.epoch,
                                 "loss": _num(logs.get("loss")), "lr": logs.get("learning_rate"),
                                 "grad_norm": _num(logs.get("grad_norm")), "samples_per_s": samples / dt}
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if tokens:
            event["tokens_per_s"] = (tokens - self._last_tokens) / dt
        event["rss_mb"] = round(rss_mb(), 1)
        gpu = gpu_mb(getattr(args, "device", "cpu"))
        if gpu is not None:
            event["gpu_mb"] = round(gpu, 1)
        self._last_step, self._last_tokens, self._train_time = state.global_step, tokens, 0.0
        if isinstance(event["loss"], float):
            self._train_losses.append(event["loss"])
        self.emit(event)

    def _eval(self, state: Any, logs: dict[str, Any]) -> None:
        metrics = {k[len("eval_"):]: _num(v) for k, v in logs.items() if k.startswith("eval_")}
        event = {"event": "eval", "step": state.global_step, "split": self.split,
                 **{k: v for k, v in metrics.items() if k not in _SKIP}}
        self.emit(event)
        val = metrics.get("loss")
        if isinstance(val, float) and self._train_losses:
            self._evals.append((val, sum(self._train_losses) / len(self._train_losses)))
            self._train_losses = []
            self._check_divergence(state.global_step)

    def _check_divergence(self, step: int) -> None:
        recent = self._evals[-(self.window + 1):]
        if len(recent) < self.window + 1 or self._warned_at >= len(self._evals) - self.window:
            return
        pairs = list(itertools.pairwise(recent))
        if all(b[0] > a[0] and b[1] < a[1] for a, b in pairs):
            self._warned_at = len(self._evals) - 1
            vals = " -> ".join(f"{v:.4f}" for v, _ in recent)
            trains = " -> ".join(f"{t:.4f}" for _, t in recent)
            self.emit({"event": "warning", "kind": "divergence", "step": step,
                       "message": f"validation loss rose for {self.window} evaluations ({vals}) while training "
                                  f"loss fell ({trains}): the model is overfitting",
                       "help": "stop earlier (early_stopping), lower the learning rate, or add data"})


class TimeLimitCallback(TrainerCallback):
    """`budget { max_time }` for the Trainer-based backends: after the step that spends the budget,
    training stops and a checkpoint is saved (runtime/api.py TimeLimit)."""

    def __init__(self, limit: Any, emit: Emit) -> None:
        self.limit, self.emit, self.stopped = limit, emit, False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.limit.spent():
            if not self.stopped:
                self.emit(self.limit.note(int(state.global_step)))
                self.stopped = True
            control.should_training_stop = True
            control.should_save = True
        return control


def time_limit_callbacks(limit: Any, emit: Emit) -> list[Any]:
    return [TimeLimitCallback(limit, emit)] if limit is not None else []

