"""What each runtime backend can run, as plain data that `ftc check` imports without torch.

This is the one table both sides read: the compatibility rules (compiler/rules/compat.py, FT120–FT126,
and FT127 for distribution settings) refuse what no backend runs, and the executor
(runtime/executor.py) picks the backend of a spec from it and calls the step functions it names.
Two lists that had to agree drifted before (a vision `embedding` task passed `ftc check` and the
vision backend refused it at run time); a combination is runnable here exactly when a row below
says so.

A backend is chosen by modality and signal (`backend_for`); its row says which tasks, methods,
devices, precisions and distribution strategies it runs, and which module and functions the
executor calls for each plan node kind. The keys of the language each backend applies are in
compiler/honoured.py (HONOURED), proven by tests/runtime/test_key_coverage.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TEXT_METHODS = ("full", "lora", "qlora", "adapters", "prompt_tuning", "prefix_tuning")
# Every backend evaluates a split, a data file named by a gate, and measures latency with these.
EVAL_STEPS = {"evaluate": "evaluate", "evaluate_file": "evaluate_file", "latency": "measure_latency"}


@dataclass(frozen=True)
class Backend:
    """One runtime backend: what it trains, and the functions of `module` that do each step.

    train_steps: plan node kind -> function name in `module` for the training kinds; with
        EVAL_STEPS, every function the executor calls on the backend.
    strategies: the `budget { strategy ... }` values it runs; "none" is one process on one device,
        "ddp" one process per GPU launched through torchrun (runtime/launch.py), each holding the model.
    max_processes: `budget { gpus × nodes }` it can launch (1: one process only).
    max_nodes: machines it launches on (`ftc run` starts every process on this machine).
    methods_distributed: the methods it trains in several processes (the others: one process only).
    """

    name: str
    module: str
    modality: str
    signals: tuple[str, ...]
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    train_steps: Mapping[str, str]
    devices: tuple[str, ...] = ("cpu", "cuda")
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    strategies: tuple[str, ...] = ("none",)
    max_processes: int = 1
    max_nodes: int = 1
    methods_distributed: tuple[str, ...] = ()
    eval_module: str = ""  # where the EVAL_STEPS functions are, when not in `module`

    def step(self, kind: str) -> str | None:
        """The function name for a plan node kind, or None when this backend has no such step."""
        return self.train_steps.get(kind) or EVAL_STEPS.get(kind)

    def module_of(self, kind: str) -> str:
        """The module holding the function for a plan node kind."""
        return self.eval_module if kind in EVAL_STEPS and self.eval_module else self.module


BACKENDS: tuple[Backend, ...] = (
    Backend("text.sft", "ftc.runtime.backends.text", "text", ("sft",),
            ("generation", "classification", "extraction"), TEXT_METHODS, {"train": "train_sft"},
            eval_module="ftc.runtime.backends.text_eval", strategies=("none", "ddp"), max_processes=64,
            methods_distributed=("full", "lora", "adapters", "prompt_tuning", "prefix_tuning")),
    Backend("text.dpo", "ftc.runtime.backends.preference", "text", ("dpo",),
            ("generation", "preference"), TEXT_METHODS, {"train": "train_dpo"}),
    # prompt and prefix tuning fail in RLHF's stages today (the reward classifier refuses a prefix:
    # "Model does not support past key values"; a prompt-tuned policy raises an IndexError)
    Backend("text.rlhf", "ftc.runtime.backends.preference", "text", ("rlhf",),
            ("generation", "preference"), ("full", "lora", "qlora", "adapters"),
            {"train_reward": "train_reward", "train_policy": "train_policy"}),
    Backend("text.contrastive", "ftc.runtime.backends.embedding", "text", ("contrastive",),
            ("embedding",), TEXT_METHODS, {"train": "train_contrastive"}),
    Backend("vision", "ftc.runtime.backends.vision", "vision", ("sft",),
            ("image_classification",), ("full", "lora"), {"train": "train"}),
    Backend("multimodal", "ftc.runtime.backends.multimodal", "multimodal", ("contrastive",),
            ("image_text_contrastive",), ("full", "lora"), {"train": "train"}),
)

BY_NAME: Mapping[str, Backend] = {b.name: b for b in BACKENDS}
MODALITIES = tuple(dict.fromkeys(b.modality for b in BACKENDS))
SIGNALS = tuple(dict.fromkeys(sig for b in BACKENDS for sig in b.signals))


def backend_for(modality: str | None, signal: str | None) -> Backend | None:
    """The backend that trains this modality with this signal, or None when none does."""
    for b in BACKENDS:
        if b.modality == modality and signal in b.signals:
            return b
    return None


def _union(values: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for vs in values for v in vs))


def tasks_for_modality(modality: str) -> tuple[str, ...]:
    return _union([b.tasks for b in BACKENDS if b.modality == modality])


def methods_for_modality(modality: str) -> tuple[str, ...]:
    return _union([b.methods for b in BACKENDS if b.modality == modality])


def tasks_for_signal(signal: str) -> tuple[str, ...]:
    return _union([b.tasks for b in BACKENDS if signal in b.signals])


def signals_for_modality(modality: str) -> tuple[str, ...]:
    return _union([b.signals for b in BACKENDS if b.modality == modality])
