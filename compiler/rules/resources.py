"""Memory against the budget, and whether the test split can resolve a gate (DOMAIN.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from ftc.compiler import estimate as est
from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.rules.base import ERROR, WARNING, Hit, rule


@rule("FT160", "memory-over-budget", ERROR)
def memory_over_budget(c: CheckedSpec) -> Iterator[Hit]:
    """The estimated training memory per GPU exceeds `budget.gpu_memory`.

    Why:
    A run that cannot fit fails after the data is loaded and the base downloaded, or worse, after
    hours. Tight memory calls for QLoRA, a smaller micro-batch with gradient accumulation,
    gradient checkpointing, or more GPUs with sharding. The estimate reads the base's config.json
    when it is a local folder, else the declared `params`; `ftc explain FT160` and
    compiler/estimate.py document the model.

    Example:
        model { modality text; base "hf:org/big"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 7B }
        method full { }
        train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "data/general.jsonl" }

    Use instead:
        model { modality text; base "hf:org/big"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 7B }
        method qlora { rank 16 }
        train { epochs 3; learning_rate 2e-4; batch_size 4; grad_accum 4; gradient_checkpointing true; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    spec = c.spec
    budget, model = spec.budget, spec.model
    if budget is None or budget.gpu_memory is None or model is None or spec.method is None:
        return
    shape = est.model_shape(model, c.dir_of(model.at("base")))
    if shape is None:
        return
    e = est.estimate(spec, shape, est.default_seq_len(spec))
    if e.total <= budget.gpu_memory:
        return
    parts = ", ".join(f"{name} {est.fmt_bytes(v)}" for name, v in e.parts())
    advice = []
    if spec.method.kind != "qlora" and model.modality == "text":
        advice.append("`method qlora`")
    tr = spec.train or s.Train()
    if tr.batch_size > 1:
        advice.append(f"a smaller `batch_size` with `grad_accum` (now {tr.batch_size})")
    if not tr.gradient_checkpointing:
        advice.append("`gradient_checkpointing true`")
    advice.append("more `gpus` with `strategy fsdp`")
    yield Hit(f"estimated memory {est.fmt_bytes(e.total)} per GPU exceeds the budget of "
              f"{est.fmt_bytes(budget.gpu_memory)}", budget.at("gpu_memory"),
              detail=f"estimate: {parts} ({shape.params / 1e9:.2f}B params from {shape.source}, "
                     f"{e.trainable / 1e6:.1f}M trainable, sequence {est.default_seq_len(spec)})",
              help="try " + ", ".join(advice))


@rule("FT161", "memory-unknown", WARNING)
def memory_unknown(c: CheckedSpec) -> Iterator[Hit]:
    """A memory budget that cannot be checked: the parameter count is unknown.

    Why:
    The budget is checked only when ftc knows the model's size: from a local base's config.json
    or the headers of its safetensors weights (a timm or open_clip folder), or from `params`
    declared in `model`.

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"] }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """
    budget, model = c.spec.budget, c.spec.model
    if budget is None or budget.gpu_memory is None or model is None:
        return
    if est.model_shape(model, c.dir_of(model.at("base"))) is None:
        yield Hit("the memory budget cannot be checked: the model's parameter count is unknown",
                  budget.at("gpu_memory"), help="declare it in `model`, e.g. `params 7B`, or use a local base folder")


def _test_size(data: s.Data) -> int | None:
    if data.test is not None:
        return data.test.rows
    if (data.source is not None and data.source.rows is not None and data.split is not None
            and len(data.split.ratios) == 3):
        return int(data.source.rows * data.split.ratios[2])
    return None


def needed_examples(threshold: float, confidence: float = 0.95) -> int:
    """Smallest n for which a perfect score on n examples shows the metric >= threshold."""
    return math.ceil(math.log(1 - confidence) / math.log(threshold))


@rule("FT170", "gate-unresolvable", WARNING)
def gate_unresolvable(c: CheckedSpec) -> Iterator[Hit]:
    """A gate threshold that the test split is too small to resolve at 95% confidence.

    Why:
    Even a perfect score on n examples shows, at 95% confidence, only that the true rate is at
    least 0.05^(1/n) (the exact one-sided bound); `accuracy >= 0.99` needs at least 299 test
    examples, so on 50 the gate passes by luck or fails by noise. The size is the real test split's
    when the data is read, else the `rows` declared on the test file (or source and split).

    Example:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 50 }
        eval { metric accuracy; gate accuracy >= 0.99 on test }

    Use instead:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 400 }
        eval { metric accuracy; gate accuracy >= 0.99 on test }
    """
    data, ev = c.spec.data, c.spec.eval
    if data is None or ev is None:
        return
    n = c.sizes.get("test") if c.sizes else _test_size(data)
    if not n:
        return  # unknown, or an empty split (FT220)
    for g in ev.gates:
        if g.metric not in s.HIGHER_IS_BETTER or g.split not in (None, "test") or g.slice is not None or g.versus:
            continue
        if g.op not in (">=", ">") or not 0 < g.threshold < 1:
            continue
        need = needed_examples(g.threshold)
        if n < need:
            yield Hit(f"{n} test examples cannot resolve `{g.metric} {g.op} {g.threshold_text}` at 95% confidence",
                      g.span, help=f"use at least {need} test examples, or a threshold the split can resolve "
                                   f"(≤ {0.05 ** (1 / n):.3f} with {n})")
