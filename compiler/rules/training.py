"""Contradictions in method and training settings, and training practice (DOMAIN.md, 'Training practice')."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler import basemodel as bm
from ftc.compiler import hub
from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.rules.base import ERROR, WARNING, Hit, related, rule

FULL_FT_MAX_LR = 5e-5  # DOMAIN.md: a full fine-tune only with a small learning rate


@rule("FT130", "qlora-needs-4bit", ERROR)
def qlora_needs_4bit(c: CheckedSpec) -> Iterator[Hit]:
    """QLoRA without a 4-bit base.

    Why:
    QLoRA is LoRA over a base quantised to 4 bits (NF4 or FP4). With another bit width it is not
    QLoRA, and the memory estimate and runtime would disagree with the spec.

    Example:
        method qlora { rank 16; bits 8 }

    Use instead:
        method qlora { rank 16; bits 4; quant_type nf4 }
    """
    method, model = c.spec.method, c.spec.model
    if method is None or method.kind != "qlora":
        return
    if method.bits != 4:
        yield Hit(f"QLoRA needs a 4-bit base; `bits {method.bits}` is given", method.at("bits"),
                  help="set `bits 4`, or use `method lora` over an 8-bit base (`quantize 8bit`)")
    elif model is not None and model.quantize in ("8bit", "none"):
        yield Hit(f"QLoRA needs a 4-bit base, but the model sets `quantize {model.quantize}`", model.at("quantize"),
                  help="remove `quantize` from `model` (QLoRA loads the base in 4 bits) or use `method lora`")


def _quantized(c: CheckedSpec) -> bool:
    method, model = c.spec.method, c.spec.model
    return (method is not None and method.kind == "qlora") or (
        model is not None and model.quantize in ("4bit", "8bit"))


@rule("FT131", "merge-quantized", ERROR)
def merge_quantized(c: CheckedSpec) -> Iterator[Hit]:
    """Merging an adapter into a quantised base.

    Why:
    Merging LoRA weights into 4-bit or 8-bit weights rounds the update away or needs a silent
    de-quantisation; the merged model is not the one that was evaluated. Export the adapter, or
    merge into a full-precision copy of the base as a separate, evaluated step.

    Example:
        method qlora { rank 16; merge true }

    Use instead:
        method qlora { rank 16; merge false }
    """
    method = c.spec.method
    if method is not None and getattr(method, "merge", False) and _quantized(c):
        yield Hit("merging into a quantised base is refused", method.at("merge"),
                  help="set `merge false` and ship the adapter, or train `method lora` on a full-precision base")


@rule("FT132", "quantized-needs-adapter", ERROR)
def quantized_needs_adapter(c: CheckedSpec) -> Iterator[Hit]:
    """A quantised base with a full fine-tune.

    Why:
    Quantised weights cannot be trained directly: a quantised base needs an adapter method
    (LoRA, QLoRA, adapters, prompt or prefix tuning) that trains full-precision weights beside it.

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M; quantize 8bit }
        method full { }
        train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "data/general.jsonl" }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M; quantize 8bit }
        method lora { rank 8 }
    """
    method, model = c.spec.method, c.spec.model
    if method is not None and model is not None and method.kind == "full" and model.quantize in ("4bit", "8bit"):
        yield Hit(f"a {model.quantize} base cannot be fully fine-tuned", model.at("quantize"),
                  help="use `method lora` (or qlora for 4-bit), or drop `quantize`",
                  related=related(method.kind_span, "full fine-tune here"))


@rule("FT133", "packing-with-preference", ERROR)
def packing_with_preference(c: CheckedSpec) -> Iterator[Hit]:
    """Sequence packing with a preference signal (DPO, RLHF).

    Why:
    Preference losses compare a chosen and a rejected completion of the same prompt; packing
    several examples into one sequence mixes them and breaks that comparison.

    Example:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }
        signal dpo { prompt "prompt"; chosen "chosen"; rejected "rejected" }
        train { epochs 1; learning_rate 5e-6; packing true; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric loss; gate loss <= 2.0 on test }

    Use instead:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }
        signal dpo { prompt "prompt"; chosen "chosen"; rejected "rejected" }
        train { epochs 1; learning_rate 5e-6; packing false; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric loss; gate loss <= 2.0 on test }
    """
    sig, tr = c.spec.signal, c.spec.train
    if sig is not None and tr is not None and tr.packing and sig.kind in ("dpo", "rlhf"):
        yield Hit(f"packing is refused with `signal {sig.kind}`", tr.at("packing"),
                  help="set `packing false`")


@rule("FT134", "deepspeed-and-fsdp", ERROR)
def deepspeed_and_fsdp(c: CheckedSpec) -> Iterator[Hit]:
    """DeepSpeed and FSDP settings together.

    Why:
    Both shard parameters, gradients and optimizer state; they cannot drive one run together.
    Keep the settings of the strategy you use.

    Example:
        budget { gpu_memory 24GB; gpus 2; strategy fsdp; deepspeed_stage 3 }

    Use instead:
        budget { gpu_memory 24GB; gpus 2; strategy fsdp; fsdp_sharding full }

    Fires with:
        FT127: ftc's runtime runs one process today, so any distribution strategy is refused too.
    """
    b = c.spec.budget
    if b is None:
        return
    if b.deepspeed_stage is not None and (b.strategy == "fsdp" or b.fsdp_sharding is not None):
        yield Hit("DeepSpeed and FSDP are both configured", b.at("deepspeed_stage"),
                  help="choose one: `strategy deepspeed` with `deepspeed_stage`, or `strategy fsdp` with `fsdp_sharding`")
    elif b.fsdp_sharding is not None and b.strategy == "deepspeed":
        yield Hit("DeepSpeed and FSDP are both configured", b.at("fsdp_sharding"),
                  help="choose one: `strategy deepspeed` with `deepspeed_stage`, or `strategy fsdp` with `fsdp_sharding`")
    elif b.strategy in ("ddp", "fsdp", "deepspeed") and b.gpus * b.nodes == 1:
        return  # a strategy on one GPU is harmless; nothing to say


@rule("FT135", "global-batch-mismatch", ERROR)
def global_batch_mismatch(c: CheckedSpec) -> Iterator[Hit]:
    """A global batch that micro-batch × accumulation × GPUs × nodes cannot make.

    Why:
    The global batch is what the learning rate is tuned for. If it is not divisible by
    micro-batch × devices, the run silently trains with a different one.

    Example:
        train { epochs 3; learning_rate 2e-4; batch_size 16; global_batch 100; early_stopping patience 2 on val.loss; checkpoints keep 2 }

    Use instead:
        train { epochs 3; learning_rate 2e-4; batch_size 16; grad_accum 4; global_batch 64; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    tr, b = c.spec.train, c.spec.budget
    if tr is None or tr.global_batch is None:
        return
    devices = (b.gpus * b.nodes) if b is not None else 1
    per_step = tr.batch_size * devices
    if tr.global_batch % per_step:
        yield Hit(f"global batch {tr.global_batch} is not divisible by batch_size {tr.batch_size} × "
                  f"{devices} device(s) = {per_step}", tr.at("global_batch"),
                  help=f"use a multiple of {per_step}, e.g. `global_batch {max(per_step, tr.global_batch // per_step * per_step)}`")
        return
    accum = tr.global_batch // per_step
    if tr.given("grad_accum") and tr.grad_accum != accum:
        yield Hit(f"global batch {tr.global_batch} needs grad_accum {accum}, but `grad_accum {tr.grad_accum}` is set",
                  tr.at("grad_accum"), help=f"set `grad_accum {accum}` or drop it (ftc derives it)")
    elif not tr.given("grad_accum") and accum != 1:
        yield Hit(f"global batch {tr.global_batch} needs grad_accum {accum}, which is not set",
                  tr.at("global_batch"), help=f"add `grad_accum {accum}`")


@rule("FT136", "epochs-and-steps", ERROR)
def epochs_and_steps(c: CheckedSpec) -> Iterator[Hit]:
    """Both `epochs` and `steps`, which contradict each other.

    Why:
    Training length must have one definition, or the learning-rate schedule is built for a run
    that never happens.

    Example:
        train { epochs 3; steps 1000; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }

    Use instead:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    tr = c.spec.train
    if tr is not None and tr.epochs is not None and tr.steps is not None:
        yield Hit("`epochs` and `steps` are both given", tr.at("steps"), help="keep one of them",
                  related=related(tr.at("epochs"), "epochs set here"))


VIRTUAL_KEYS = {"prompt_tuning": "virtual_tokens", "prefix_tuning": "prefix_length"}


def base_positions(c: CheckedSpec) -> int | None:
    """The positions a local (or cached `hf:`) text base has, from its config.json."""
    folder = hub.resolve_base(c)
    cfg = bm.config(folder) if folder is not None else None
    n = (cfg or {}).get("n_positions") or (cfg or {}).get("max_position_embeddings")
    return n if isinstance(n, int) and n > 0 else None


def _max_lengths(c: CheckedSpec) -> Iterator[s.MaxLength]:
    """The `max_length` of the spec's data and of an RLHF reward stage's own data."""
    sig = c.spec.signal
    reward = sig.reward if sig is not None and sig.kind == "rlhf" else None
    for data in (c.spec.data, reward.data if reward is not None else None):
        if data is not None and data.max_length is not None:
            yield data.max_length


@rule("FT137", "virtual-tokens-over-positions", ERROR, stage="files")
def virtual_tokens_over_positions(c: CheckedSpec) -> Iterator[Hit]:
    """Prompt or prefix tuning whose virtual tokens leave the text fewer positions than it needs:
    none at all, or fewer than the data's `max_length`.

    Why:
    Prompt tuning's virtual tokens (and prefix tuning's prefix, which shifts the text's position
    ids) sit before the text and take positions of the base: a BERT with 512 positions and 500
    virtual tokens leaves 12 for the text. The run cuts each text to what is left (a declared
    `max_length` then silently not honoured), and with no room left it trains on nothing and stops
    with an error after the base evaluation. ftc reads the positions from the base's config.json
    (`n_positions` or `max_position_embeddings`).

    Example:
        method prompt_tuning { virtual_tokens 512 }

    Use instead:
        method prompt_tuning { virtual_tokens 20 }
    """
    m, method = c.spec.model, c.spec.method
    if m is None or m.modality != "text" or method is None or method.kind not in VIRTUAL_KEYS:
        return
    key = VIRTUAL_KEYS[method.kind]
    virtual, positions = int(getattr(method, key)), base_positions(c)
    if positions is None:
        return
    if virtual >= positions:
        yield Hit(f"`{key} {virtual}` takes every position of the base ({positions}): none is left for the text",
                  method.at(key), help=f"use far fewer than {positions} (20 to 100 is usual)")
        return
    for ml in _max_lengths(c):
        if ml.tokens + virtual > positions:
            yield Hit(f"`max_length {ml.tokens}` with `{key} {virtual}` needs {ml.tokens + virtual} positions; "
                      f"the base has {positions}", ml.span, related=related(method.at(key), f"`{key}` set here"),
                      help=f"lower `max_length` to {positions - virtual} or `{key}` to {positions - ml.tokens}")


@rule("FT140", "full-finetune-high-lr", WARNING)
def full_finetune_high_lr(c: CheckedSpec) -> Iterator[Hit]:
    """A full fine-tune with a learning rate above 5e-5.

    Why:
    Updating every weight with a large step erases what the base model knew (catastrophic
    forgetting). Full fine-tunes use small learning rates (1e-5 to 5e-5); large rates are for
    adapters such as LoRA. When the data is read and holds 10,000 rows or more, the rule is quiet.

    Example:
        method full { }
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "data/general.jsonl" }

    Use instead:
        method full { }
        train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "data/general.jsonl" }
    """
    method, tr = c.spec.method, c.spec.train
    if c.sizes.get("train", 0) >= 10_000:
        return  # with 10,000+ rows a full fine-tune may use a larger rate (DOMAIN.md)
    if method is not None and tr is not None and method.kind == "full" and tr.learning_rate > FULL_FT_MAX_LR:
        yield Hit(f"learning rate {tr.learning_rate:g} is high for a full fine-tune (above {FULL_FT_MAX_LR:g})",
                  tr.at("learning_rate"),
                  help="use 1e-5 to 5e-5 for a full fine-tune, or switch to `method lora`")


@rule("FT141", "full-finetune-no-regression-gate", WARNING)
def full_finetune_no_regression_gate(c: CheckedSpec) -> Iterator[Hit]:
    """A full fine-tune without a regression gate.

    Why:
    A full fine-tune risks catastrophic forgetting; it pays off only with solid evaluation and
    regression tests against the base model or a general set.

    Example:
        method full { }
        train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }

    Use instead:
        method full { }
        train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "data/general.jsonl" }
    """
    method, ev = c.spec.method, c.spec.eval
    if method is None or ev is None or method.kind != "full":
        return
    if not any(g.metric == "regression" for g in ev.gates):
        yield Hit("a full fine-tune without a regression gate", method.kind_span,
                  help='add `gate regression <= 0.02 vs base on "data/general.jsonl"` to `eval`')


@rule("FT142", "no-early-stopping", WARNING)
def no_early_stopping(c: CheckedSpec) -> Iterator[Hit]:
    """Training without early stopping.

    Why:
    Early stopping is mandatory in small-data regimes: without it, training runs past the point
    where validation loss starts rising and the model overfits. When the data is read and holds
    fewer than 10,000 training rows, FT217 refuses the spec instead.

    Example:
        train { epochs 3; learning_rate 2e-4; checkpoints keep 2 }

    Use instead:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    tr = c.spec.train
    if 0 < c.sizes.get("train", 0) < 10_000:
        return  # FT217 refuses this on small data
    if tr is not None and tr.early_stopping is None:
        yield Hit("no early stopping", tr.span or (c.spec.data.span if c.spec.data else None),
                  help="add `early_stopping patience 2 on val.loss` to `train`")


@rule("FT143", "no-checkpoint-retention", WARNING)
def no_checkpoint_retention(c: CheckedSpec) -> Iterator[Hit]:
    """Training without a checkpoint retention policy.

    Why:
    Checkpoints balloon: without a retention policy every checkpoint stays on disk.

    Example:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss }

    Use instead:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    tr = c.spec.train
    if tr is not None and tr.checkpoints is None:
        yield Hit("no checkpoint retention", tr.span or (c.spec.data.span if c.spec.data else None),
                  help="add `checkpoints keep 3` to `train`")


@rule("FT144", "early-stopping-metric-unknown", ERROR)
def early_stopping_metric_unknown(c: CheckedSpec) -> Iterator[Hit]:
    """Early stopping on a metric that is not computed on the validation split.

    Why:
    Early stopping watches a validation metric; if the metric is never computed, training never
    stops early. Use `val.loss` or a metric the `eval` block declares, on `val`. RLHF's `reward`
    and `reward_accuracy` are measured only when the run evaluates, so they cannot be watched.

    Example:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.accuracy; checkpoints keep 2 }

    Use instead:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.f1; checkpoints keep 2 }
    """
    tr, ev, data = c.spec.train, c.spec.eval, c.spec.data
    if tr is None or tr.early_stopping is None:
        return
    es = tr.early_stopping
    parts = es.metric.split(".")
    split, metric = (parts[0], parts[1]) if len(parts) == 2 else ("val", parts[0])
    names = {m.name for m in ev.metrics} if ev else set()
    if split != "val":
        yield Hit(f"early stopping watches `{es.metric}`; it must watch the validation split", es.span,
                  help="write `on val.loss` (or `on val.<metric>`)")
    elif data is not None and "val" not in data.split_names():
        yield Hit("early stopping needs a validation split, and the data has none", es.span,
                  help='add `val "data/val.jsonl"` or a three-way `split 80/10/10`')
    elif metric in s.RLHF_METRICS:
        yield Hit(f"early stopping on `{metric}`: the reward model scores replies only at evaluation, not while "
                  "training", es.span, help="watch `val.loss`")
    elif metric != "loss" and metric not in names:
        yield Hit(f"early stopping on `{metric}`, which `eval` never computes", es.span,
                  help=f"add `metric {metric}` to `eval`, or watch `val.loss`")


@rule("FT145", "vision-only-setting", ERROR)
def vision_only_setting(c: CheckedSpec) -> Iterator[Hit]:
    """Image augmentation or progressive unfreezing on a model that does not apply them: a text
    model, or an image-text (multimodal) model.

    Why:
    Augmentations such as flips and crops and progressive unfreezing schedules apply to vision
    classifiers; on a text model they would be silently ignored. ftc trains CLIP-style models on
    their evaluation preprocessing, because a flip or a crop can contradict a caption that says
    where things are ("the arrow on the left"), and unfreezes their towers all at once; there
    too the settings would do nothing.

    Example:
        train { epochs 3; learning_rate 2e-4; augment ["flip"]; early_stopping patience 2 on val.loss; checkpoints keep 2 }

    Use instead:
        train { epochs 3; learning_rate 2e-4; early_stopping patience 2 on val.loss; checkpoints keep 2 }
    """
    m, tr, method = c.spec.model, c.spec.train, c.spec.method
    if m is None or m.modality == "vision":
        return
    kind = "a text model" if m.modality == "text" else "image-text pairs"
    if tr is not None and tr.augment:
        yield Hit(f"image augmentation is not applied to {kind}", tr.at("augment"),
                  help="remove `augment`" + (", or use a vision model" if m.modality == "text" else
                                              ": a flip or crop can contradict a caption; ftc trains CLIP models "
                                              "on their evaluation preprocessing"))
    if method is not None and method.kind == "full" and method.progressive:
        yield Hit(f"progressive unfreezing is a vision-classifier schedule, not applied to {kind}",
                  method.at("progressive"), help="use `freeze`/`unfreeze` patterns instead")


@rule("FT146", "stage-artifacts-keep", ERROR)
def stage_artifacts_keep(c: CheckedSpec) -> Iterator[Hit]:
    """`artifacts keep` inside an RLHF stage's own `train` block.

    Why:
    Artifact retention applies to a spec's runs as a whole (`ftc gc` keeps the artifacts of its N
    newest never-promoted runs), not to one stage of a run; inside a stage it would be silently
    ignored.

    Example:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 124M }
        signal rlhf { reward { prompt "prompt"; chosen "chosen"; rejected "rejected"; train { artifacts keep 3 } }; policy { algorithm rloo; prompt "prompt" } }
        eval { metric loss; gate loss <= 2.0 on test }

    Use instead:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 124M }
        signal rlhf { reward { prompt "prompt"; chosen "chosen"; rejected "rejected" }; policy { algorithm rloo; prompt "prompt" } }
        eval { metric loss; gate loss <= 2.0 on test }
        train { epochs 3; learning_rate 2e-4; batch_size 16; early_stopping patience 2 on val.loss; checkpoints keep 2; artifacts keep 3 }
    """
    sig = c.spec.signal
    if sig is None or sig.kind != "rlhf":
        return
    for stage in (sig.reward, sig.policy):
        tr = getattr(stage, "train", None) if stage is not None else None
        if tr is not None and tr.artifacts is not None:
            yield Hit("`artifacts keep` applies to the whole spec, not to one RLHF stage", tr.at("artifacts"),
                      help="move `artifacts keep N` to the top-level `train` block")


_ = s
