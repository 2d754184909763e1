"""The contract between the executor and the backends (heavy imports live only in backends/).

The executor builds a TrainContext per train node and calls the backend's functions; backends
return plain results. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec
    from ftc.compiler.data.splits import Part


def now() -> float:
    """The clock `budget { max_time }` is measured on (monotonic; tests replace it)."""
    return time.monotonic()


@dataclass(frozen=True)
class TimeLimit:
    """`budget { max_time 2h }`: training stops at the first optimizer step taken after `seconds`
    have passed since the run began (every training node of the run counts against the one
    budget; a resumed run starts a new one). The model trained so far is then evaluated and gated
    as usual, and the stop is an event in the run's history."""

    seconds: float
    started: float

    @classmethod
    def of(cls, spec: Any) -> TimeLimit | None:
        budget = getattr(spec, "budget", None)
        seconds = getattr(budget, "max_time", None)
        return cls(float(seconds), now()) if seconds else None

    def spent(self) -> bool:
        return now() - self.started >= self.seconds

    def note(self, step: int) -> dict[str, Any]:
        return {"event": "note", "kind": "max_time", "step": step,
                "message": f"max_time ({self.seconds:g} s) reached at step {step}: training stops, and the model "
                           "trained so far is evaluated"}


@dataclass
class TrainContext:
    """Everything a backend needs to train and evaluate one model.

    parts:      realised splits ("train", "val", "test"), rows already renamed by `fields`
    stage_parts: RLHF reward-stage splits when the reward stage has its own data
    run_dir:    the run's folder: checkpoints/, artifacts/, metrics.jsonl live below it
    log:        called with one dict per event: {"event": "step", "step", "of", "loss", "lr",
                "grad_norm", "samples_per_s" | "tokens_per_s", "rss_mb", "gpu_mb"?} or
                {"event": "eval", "step", "split", metrics...}; the executor prints and records it
    resume:     continue from the last complete checkpoint under run_dir/checkpoints
    """

    checked: CheckedSpec
    parts: dict[str, Part]
    run_dir: Path
    log: Callable[[dict[str, Any]], None]
    resume: bool = False
    device: str = "cpu"
    stage_parts: dict[str, Part] = field(default_factory=dict)
    max_steps: int | None = None  # a cap for tests and dry walks; None = what the spec says
    base_dir: Path | None = None  # the base's folder as the plan's load_base step located it
    time_limit: TimeLimit | None = None  # `budget { max_time }`, shared by the run's training nodes

    @property
    def spec(self) -> Any:
        return self.checked.spec

    def split_rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of a realised split; a split the spec does not have is a clear error."""
        part = self.parts.get(split)
        if part is None:
            raise ValueError(f"no `{split}` split to evaluate on (splits: {', '.join(sorted(self.parts)) or 'none'})")
        return part.rows

    def base_path(self) -> Path:
        """The base model's folder: where the plan's load_base step located and verified it (an
        `hf:` base's snapshot in the Hugging Face cache, or a local folder); without that step (a
        backend called directly), the local folder the spec names."""
        if self.base_dir is not None:
            return self.base_dir
        model = self.spec.model
        return self.checked.resolve_path(model.base, model.at("base"))


@dataclass
class TrainResult:
    model_dir: Path  # the artifact: an adapter folder (peft) or a full model folder, safetensors only
    kind: str  # "adapter" | "full" | "reward" | "embedding"
    merged_dir: Path | None = None  # a merged full model when the method allows and the spec asks
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    best_checkpoint: Path | None = None


@dataclass
class EvalResult:
    split: str
    metrics: dict[str, float]  # e.g. {"f1": 0.91, "accuracy": 0.93, "loss": 0.4}
    slices: dict[str, dict[str, float]] = field(default_factory=dict)  # slice name -> metrics
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. confusion matrix, predictions sample
