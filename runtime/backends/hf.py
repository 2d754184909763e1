"""Shared plumbing for the Hugging Face trainers (Trainer, TRL's SFT/DPO/reward trainers).

Recorder (events to history and ctx.log), the spec's `train` block as TrainingArguments (or a TRL
config class), callbacks (monitoring, early stopping), resume from the last complete checkpoint,
and trainer classes with atomic checkpoints. Re-exported by text.py, which other backends use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime.api import TrainContext

Emit = Callable[[dict[str, Any]], None]


class Recorder:
    """Records every event in `history` and forwards it to the executor's `ctx.log`."""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.history: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        self.ctx.log(event)

    def note(self, message: str, **extra: Any) -> None:
        self({"event": "note", "message": message, **extra})


def train_block(ctx: TrainContext) -> s.Train:
    return ctx.spec.train if ctx.spec.train is not None else s.Train()


def task_of(ctx: TrainContext, for_task: str | None = None) -> str:
    return for_task or ctx.spec.model.task


def is_classification(task: str) -> bool:
    return task == "classification"


def device_of(ctx: TrainContext) -> str:
    import torch

    if ctx.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {ctx.device!r} was asked for, but CUDA is not available here")
    return ctx.device


def resolve_precision(ctx: TrainContext, emit: Emit | None = None) -> str:
    """The precision this run uses: the spec's when the device supports it, else fp32 (said)."""
    import torch

    wanted = train_block(ctx).precision
    used = wanted
    if wanted != "fp32":
        cuda = device_of(ctx).startswith("cuda")
        if not cuda:
            used = "fp32"  # mixed precision through the Trainer needs a GPU; CPU autocast would be slow
        elif wanted == "bf16" and not torch.cuda.is_bf16_supported():
            used = "fp16"
    if used != wanted and emit is not None:
        emit({"event": "note", "message": f"precision {wanted} is not supported on {ctx.device}; "
                                          f"training in {used}", "precision": used, "requested_precision": wanted})
    return used


def _optimizer(ctx: TrainContext, emit: Emit | None) -> str:
    name = train_block(ctx).optimizer
    mapped = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "sgd": "sgd"}[name]
    if name in ("adamw_8bit", "paged_adamw_8bit") and not device_of(ctx).startswith("cuda"):
        if emit is not None:
            emit({"event": "note", "message": f"optimizer {name} needs CUDA; using adamw on {ctx.device}"})
        return "adamw_torch"
    return mapped


def steps_per_epoch(ctx: TrainContext, n_train: int) -> int:
    tr = train_block(ctx)
    return max(1, math.ceil(math.ceil(n_train / tr.batch_size) / tr.grad_accum))


def total_steps(ctx: TrainContext, n_train: int) -> int:
    tr = train_block(ctx)
    planned = tr.steps if tr.steps else steps_per_epoch(ctx, n_train) * (tr.epochs or 1)
    return min(planned, ctx.max_steps) if ctx.max_steps else planned


def early_stopping_metric(ctx: TrainContext) -> tuple[str, bool] | None:
    """(metric name as the trainer reports it without `eval_`, greater is better) or None."""
    es = train_block(ctx).early_stopping
    if es is None:
        return None
    name = es.metric.removeprefix("val.")
    if name in ("precision", "recall", "f1"):
        declared = {m.name: m.average for m in ctx.spec.eval.metrics} if ctx.spec.eval else {}
        name = f"{name}.{declared.get(name) or 'macro'}"
    return name, name.split(".")[0] in s.HIGHER_IS_BETTER


def training_arguments(ctx: TrainContext, n_train: int, *, config_cls: Any = None, emit: Emit | None = None,
                       has_val: bool = True, **extra: Any) -> Any:
    """TrainingArguments (or a TRL config class) from the spec's `train` block.

    Epochs or steps (`ctx.max_steps` caps either), schedule and warm-up, batch and accumulation,
    precision, optimizer, clipping, seed; evaluation and checkpoints every epoch or every
    `checkpoints every N steps`, retention `keep N`; early stopping keeps the best checkpoint.
    """
    from transformers import TrainingArguments

    cls = config_cls or TrainingArguments
    tr = train_block(ctx)
    precision = resolve_precision(ctx, emit)
    steps = total_steps(ctx, n_train)
    ck = tr.checkpoints
    interval: dict[str, Any]
    if ck is not None and ck.every:
        interval = {"save_strategy": "steps", "save_steps": ck.every, "eval_steps": ck.every,
                    "eval_strategy": "steps" if has_val else "no"}
    else:
        interval = {"save_strategy": "epoch", "eval_strategy": "epoch" if has_val else "no"}
    es = early_stopping_metric(ctx) if has_val else None
    if es is not None:
        interval.update(load_best_model_at_end=True, metric_for_best_model=es[0], greater_is_better=es[1])
    schedule = {"constant": "constant_with_warmup" if tr.warmup else "constant", "linear": "linear",
                "cosine": "cosine"}[tr.schedule]
    cuda = device_of(ctx).startswith("cuda")
    args: dict[str, Any] = dict(
        output_dir=str(ctx.run_dir / "checkpoints"),
        # epochs run as epochs (the Trainer counts the steps); `steps` or a cap fix max_steps
        max_steps=steps if (tr.steps or ctx.max_steps) else -1,
        num_train_epochs=float(tr.epochs or 1),
        learning_rate=tr.learning_rate,
        lr_scheduler_type=schedule,
        # an int is a number of steps, a float below 1 a fraction of the run (transformers 5)
        warmup_steps=(math.ceil(steps * tr.warmup) if (tr.steps or ctx.max_steps) else min(tr.warmup, 0.999))
        if tr.warmup else 0,
        per_device_train_batch_size=tr.batch_size,
        per_device_eval_batch_size=tr.batch_size,
        gradient_accumulation_steps=tr.grad_accum,
        weight_decay=tr.weight_decay,
        max_grad_norm=tr.max_grad_norm,
        optim=_optimizer(ctx, emit),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=tr.seed,
        data_seed=tr.seed,
        save_total_limit=ck.keep if ck is not None else None,
        logging_strategy="steps",
        logging_steps=max(1, round(steps / 100)),
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        dataloader_num_workers=0,
        restore_callback_states_from_checkpoint=True,
        **interval,
    )
    # transformers 5.2x renamed gradient_checkpointing (now a deprecated alias) to activation_checkpointing
    fields = getattr(cls, "__dataclass_fields__", {})
    args["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = (
        tr.gradient_checkpointing)
    args.update(_distributed(cuda))
    args.update(extra)
    return cls(**args)


def _distributed(cuda: bool) -> dict[str, Any]:
    """In a process torchrun started (runtime/launch.py): DDP over gloo on the CPU (NCCL on CUDA is
    the Trainer's own choice), and each process's loss averaged over its own rows, so that the loss
    of one step is the mean over the global batch, as in one process with the same global batch."""
    from ftc.runtime import dist

    if not dist.distributed():
        return {}
    return {"ddp_backend": None if cuda else "gloo", "average_tokens_across_devices": False}


def trainer_callbacks(ctx: TrainContext, emit: Emit, *, has_val: bool = True) -> list[Any]:
    from ftc.runtime.backends.monitor import MonitorCallback, time_limit_callbacks
    from transformers import EarlyStoppingCallback

    out: list[Any] = [MonitorCallback(emit), *time_limit_callbacks(ctx.time_limit, emit)]
    es = train_block(ctx).early_stopping
    if es is not None and has_val:
        out.append(EarlyStoppingCallback(early_stopping_patience=es.patience, early_stopping_threshold=es.min_delta))
    elif es is not None:
        emit({"event": "note", "message": "early stopping needs a validation split; there is none, so it is off"})
    return out


def quiet(trainer: Any) -> Any:
    """Drop transformers' printing callbacks: the executor prints ftc's events."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def resume_checkpoint(ctx: TrainContext, emit: Emit) -> str | None:
    """The checkpoint to resume from (`ctx.resume`), or None; a fresh run clears old checkpoints."""
    from ftc.runtime import checkpoints, dist

    folder = ctx.run_dir / "checkpoints"
    if not ctx.resume:
        n = checkpoints.remove_all(folder) if dist.is_main() else 0  # one process tidies the shared folder
        dist.barrier()
        if n:
            emit({"event": "note", "message": f"removed {n} checkpoint(s) of an earlier run in {folder}"})
        return None
    for gone in checkpoints.remove_incomplete(folder) if dist.is_main() else []:
        emit({"event": "note", "message": f"ignored incomplete checkpoint {gone.name}"})
    dist.barrier()
    last = checkpoints.last_complete(folder)
    if last is None:
        emit({"event": "note", "message": "nothing to resume from: no complete checkpoint; starting fresh"})
        return None
    emit({"event": "note", "message": f"resuming from {last.name}", "checkpoint": str(last)})
    return str(last)


def make_trainer_class(base: type) -> type:
    """`base` (Trainer, SFTTrainer, DPOTrainer, ...) with atomic checkpoints."""
    from ftc.runtime.checkpoints import AtomicCheckpoints

    return type(f"Ftc{base.__name__}", (AtomicCheckpoints, base), {})

