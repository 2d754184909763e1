"""Which method, signal, task and modality go together, and why (DOMAIN.md, 'methods' and 'signals')."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler import capabilities as cap
from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.rules.base import ERROR, Hit, rule

# Derived from the backend table (compiler/capabilities.py): what a runtime backend runs.
TASKS_BY_MODALITY = {m: cap.tasks_for_modality(m) for m in s.MODALITIES}
METHODS_BY_MODALITY = {m: cap.methods_for_modality(m) for m in s.MODALITIES}
TASKS_BY_SIGNAL = {sig: cap.tasks_for_signal(sig) for sig in s.SIGNALS}
METRICS_BY_TASK = {
    "classification": ("accuracy", "precision", "recall", "f1", "auc", "loss"),
    "image_classification": ("accuracy", "precision", "recall", "f1", "auc", "loss"),
    "generation": ("loss", "perplexity", "exact_match", "accuracy", "f1", "format_validity", "reward",
                   "reward_accuracy"),
    "extraction": ("exact_match", "format_validity", "f1", "accuracy", "loss"),
    "preference": ("accuracy", "loss", "reward", "reward_accuracy"),
    "embedding": ("recall_at_k", "accuracy", "loss"),
    "image_text_contrastive": ("recall_at_k", "zero_shot_accuracy", "loss"),
}


def metrics_for(task: str, signal: str | None) -> tuple[str, ...]:
    """The metrics a spec of this task and signal may declare: the task's, less RLHF's reward
    metrics unless the signal is `rlhf` (only its first stage trains a reward model)."""
    return tuple(m for m in METRICS_BY_TASK[task] if signal == "rlhf" or m not in s.RLHF_METRICS)


def _names(xs: tuple[str, ...]) -> str:
    return ", ".join(f"`{x}`" for x in xs)


@rule("FT120", "method-modality", ERROR)
def method_modality(c: CheckedSpec) -> Iterator[Hit]:
    """A method that does not apply to the model's modality.

    Why:
    Prompt tuning and prefix tuning learn token embeddings or attention key/value prefixes, so
    they exist only for text transformers. QLoRA quantises through bitsandbytes and transformers,
    and bottleneck adapters are inserted into transformer text blocks: for timm and open_clip
    models use LoRA or a full fine-tune.

    Example:
        model { modality vision; base "timm:resnet18"; revision "5f8b7d3"; task image_classification; labels ["cat", "dog"]; params 11M }
        method prompt_tuning { virtual_tokens 20 }
        eval { metric accuracy; gate accuracy >= 0.9 on test }

    Use instead:
        model { modality vision; base "timm:resnet18"; revision "5f8b7d3"; task image_classification; labels ["cat", "dog"]; params 11M }
        method lora { rank 8 }
        eval { metric accuracy; gate accuracy >= 0.9 on test }
    """
    m, method = c.spec.model, c.spec.method
    if m is None or method is None:
        return
    allowed = METHODS_BY_MODALITY[m.modality]
    backend = cap.backend_for(m.modality, c.spec.signal.kind if c.spec.signal is not None else None)
    if method.kind not in allowed:
        yield Hit(f"`method {method.kind}` does not apply to {m.modality} models", method.kind_span,
                  help=f"for {m.modality} use one of {_names(allowed)}")
    elif backend is not None and method.kind not in backend.methods:
        yield Hit(f"`method {method.kind}` is not run by ftc's `{backend.name}` runtime", method.kind_span,
                  help=f"with `signal {c.spec.signal.kind}` use one of {_names(backend.methods)}")


@rule("FT121", "task-modality", ERROR)
def task_modality(c: CheckedSpec) -> Iterator[Hit]:
    """A task that the modality cannot do (an image task on a text model, and so on).

    Why:
    The task picks the model head, the data contract and the metrics; it must match the modality.

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task image_classification; labels ["a", "b"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """
    m = c.spec.model
    if m is None:
        return
    allowed = TASKS_BY_MODALITY[m.modality]
    if m.task not in allowed:
        yield Hit(f"task `{m.task}` is not a {m.modality} task", m.at("task"),
                  help=f"{m.modality} tasks: {_names(allowed)}")


@rule("FT122", "classification-needs-labels", ERROR)
def classification_needs_labels(c: CheckedSpec) -> Iterator[Hit]:
    """A classification task without its label set.

    Why:
    The label set fixes the classifier head and the data contract: a row whose label is not in the
    set is an error, not a new class.

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }
    """
    m = c.spec.model
    if m is None or m.task not in ("classification", "image_classification"):
        return
    if not m.labels:
        yield Hit(f"task `{m.task}` needs its labels", m.at("task"),
                  help='add `labels ["billing", "bug", "account"]` to `model`')
    elif len(set(m.labels)) != len(m.labels) or len(m.labels) < 2:
        yield Hit("labels must be at least two distinct names", m.at("labels"),
                  help="list each class once")


@rule("FT123", "signal-task-mismatch", ERROR)
def signal_task_mismatch(c: CheckedSpec) -> Iterator[Hit]:
    """A training signal that does not fit the task.

    Why:
    DPO and RLHF optimise a generative model's outputs, so they need a generative text model.
    Contrastive training needs an embedding model (or an image-text model). SFT fits generation,
    classification, extraction and image classification.

    Example:
        signal dpo { prompt "prompt"; chosen "chosen"; rejected "rejected" }

    Use instead:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }
        signal dpo { prompt "prompt"; chosen "chosen"; rejected "rejected" }
        eval { metric loss; gate loss <= 2.0 on test }
    """
    m, sig = c.spec.model, c.spec.signal
    if m is None or sig is None:
        return
    allowed = TASKS_BY_SIGNAL[sig.kind]
    if m.task not in allowed:
        why = {"dpo": "DPO needs a generative text model", "rlhf": "RLHF needs a generative text model",
               "contrastive": "contrastive training needs an embedding or image-text model"}.get(
            sig.kind, f"`{sig.kind}` does not train a `{m.task}` model")
        yield Hit(f"`signal {sig.kind}` does not fit task `{m.task}`: {why}", sig.kind_span,
                  help=f"`signal {sig.kind}` fits tasks {_names(allowed)}",
                  related=())
        return
    backend = cap.backend_for(m.modality, sig.kind)
    if m.task in TASKS_BY_MODALITY[m.modality] and (backend is None or m.task not in backend.tasks):
        runs = cap.signals_for_modality(m.modality)
        yield Hit(f"ftc has no runtime that trains a {m.modality} `{m.task}` model with `signal {sig.kind}`",
                  sig.kind_span, help=f"{m.modality} models train with {_names(runs)}")


@rule("FT124", "signal-fields", ERROR)
def signal_fields(c: CheckedSpec) -> Iterator[Hit]:
    """A signal without the data fields it trains on, or with two conflicting field sets.

    Why:
    SFT reads input/target pairs or chat messages; contrastive training reads anchor/positive
    (text) or image/caption (image-text) pairs. Naming the fields makes the data contract
    checkable before any GPU is used.

    Example:
        signal sft { input "text" }

    Use instead:
        signal sft { input "text"; target "label" }
    """
    sig, m = c.spec.signal, c.spec.model
    if sig is None:
        return
    if sig.kind == "sft":
        pair = sig.input is not None or sig.target is not None
        if sig.messages is not None and pair:
            yield Hit("`messages` and `input`/`target` are both given", sig.at("messages"),
                      help="use chat `messages`, or an `input`/`target` pair, not both")
        elif sig.messages is None and (sig.input is None or sig.target is None):
            missing = "target" if sig.input is not None else "input"
            yield Hit(f"`signal sft` is missing `{missing}`", sig.span,
                      help='name both fields (`input "text"; target "label"`) or a chat field (`messages "messages"`)')
    elif sig.kind == "contrastive":
        text = sig.anchor is not None or sig.positive is not None
        image = sig.image is not None or sig.caption is not None
        if text and image:
            yield Hit("text pair fields and image/caption fields are both given", sig.span,
                      help="use `anchor`/`positive` (text) or `image`/`caption` (image-text)")
        elif image and (sig.image is None or sig.caption is None):
            yield Hit("image-text training needs both `image` and `caption`", sig.span,
                      help='add `image "image"; caption "caption"`')
        elif not image and (sig.anchor is None or sig.positive is None):
            yield Hit("contrastive training needs `anchor` and `positive` fields", sig.span,
                      help='add `anchor "query"; positive "positive"` (and `negative` for triplets)')
        elif image and m is not None and m.modality != "multimodal":
            yield Hit("image/caption pairs need a multimodal model", sig.at("image"),
                      help="set `modality multimodal` with an open_clip base")
        elif not image and m is not None and m.modality == "multimodal":
            yield Hit("a multimodal (image-text) model trains on image/caption pairs, not text pairs",
                      sig.at("anchor"), help='name the fields `image "image"; caption "caption"`')


@rule("FT125", "extraction-needs-schema", ERROR)
def extraction_needs_schema(c: CheckedSpec) -> Iterator[Hit]:
    """An extraction task without the JSON Schema its outputs must satisfy.

    Why:
    Extraction is judged by strict parsers: format validity (parses and validates against the
    schema) is a gate-worthy metric only if the schema is declared.

    Example:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task extraction; params 125M }
        signal sft { input "text"; target "json" }
        eval { metric format_validity; gate format_validity >= 0.99 on test }

    Use instead:
        model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task extraction; output_schema "schemas/invoice.json"; params 125M }
        signal sft { input "text"; target "json" }
        eval { metric format_validity; gate format_validity >= 0.99 on test }
    """
    m = c.spec.model
    if m is not None and m.task == "extraction" and m.output_schema is None:
        yield Hit("task `extraction` needs the JSON Schema of its output", m.at("task"),
                  help='add `output_schema "schemas/output.json"` to `model`')


@rule("FT126", "metric-task-mismatch", ERROR)
def metric_task_mismatch(c: CheckedSpec) -> Iterator[Hit]:
    """A metric that the task or signal cannot produce (perplexity of a classifier, recall@k of a
    generator, `reward` without a reward model).

    Why:
    A metric that cannot be computed for the task leaves its gates undecidable. `reward` (the
    mean score of the trained reward model on the model's replies) and `reward_accuracy` (that
    reward model's accuracy on the split's preference pairs) exist only under `signal rlhf`,
    whose first stage trains the reward model.

    Example:
        eval { metric perplexity; metric f1 macro; gate f1 >= 0.85 on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    m, ev, sig = c.spec.model, c.spec.eval, c.spec.signal
    if m is None or ev is None:
        return
    allowed = metrics_for(m.task, sig.kind if sig else None)
    for metric in ev.metrics:
        if metric.name not in METRICS_BY_TASK[m.task]:
            yield Hit(f"metric `{metric.name}` does not apply to task `{m.task}`", metric.span,
                      help=f"metrics for `{m.task}`: {_names(allowed)}")
        elif metric.name not in allowed and sig is not None:  # a reward metric without a reward model
            yield Hit(f"metric `{metric.name}` needs a reward model, and `signal {sig.kind}` trains none",
                      metric.span, help="gate on `accuracy` or `loss`, or train a reward model with `signal rlhf`")


@rule("FT127", "distribution-not-run", ERROR)
def distribution_not_run(c: CheckedSpec) -> Iterator[Hit]:
    """Distribution settings (`gpus`, `nodes`, `strategy`) that ftc's runtime does not launch as written.

    Why:
    `ftc run` launches `gpus` processes on this machine through torchrun for a backend and strategy
    that run that way (`strategy ddp` for supervised text fine-tuning today: compiler/capabilities.py
    says which). Anything else would train on one device, silently, while the memory estimate
    shards the model over devices it never gets: a spec that cannot run as written is refused here,
    before any GPU is paid for. Several processes need a strategy that says how they share the work,
    and a strategy needs several processes.

    Example:
        budget { gpu_memory 80GB; gpus 4; strategy fsdp }

    Use instead:
        budget { gpu_memory 80GB }
    """
    m, sig, b = c.spec.model, c.spec.signal, c.spec.budget
    if m is None or sig is None or b is None:
        return
    backend = cap.backend_for(m.modality, sig.kind)
    if backend is None:
        return  # FT123 says why
    yield from _processes(c, backend, b)
    if b.strategy not in backend.strategies:
        yield Hit(f"`strategy {b.strategy}` is not run by ftc's `{backend.name}` runtime (it runs "
                  f"{_names(backend.strategies)})", b.at("strategy"),
                  help="remove `strategy` (and `gpus`, `deepspeed_stage`, `fsdp_sharding`)"
                       + (" or use `strategy ddp`" if "ddp" in backend.strategies else ""))
    for key in ("deepspeed_stage", "fsdp_sharding"):  # with the other strategy: FT134
        if b.given(key) and b.strategy == "none":
            wanted = "deepspeed" if key == "deepspeed_stage" else "fsdp"
            yield Hit(f"`{key}` has no effect without `strategy {wanted}`", b.at(key), help=f"remove `{key}`")


def _processes(c: CheckedSpec, backend: cap.Backend, b: s.Budget) -> Iterator[Hit]:
    """How many processes the spec asks for, against what the backend launches."""
    processes = b.gpus * b.nodes
    if b.nodes > backend.max_nodes:
        yield Hit(f"`nodes {b.nodes}`: ftc's `{backend.name}` runtime launches on {backend.max_nodes} machine(s)",
                  b.at("nodes"), help="remove `nodes` (multi-node launch files are not built yet)")
    elif processes > backend.max_processes:
        asked = " × ".join(f"`{k} {getattr(b, k)}`" for k in ("gpus", "nodes") if getattr(b, k) > 1)
        yield Hit(f"{asked} asks for {processes} processes, but ftc's `{backend.name}` runtime runs "
                  f"{backend.max_processes}: the run would train on one device", b.at("gpus"),
                  help="remove `gpus` (the estimate then counts one device)")
    elif processes > 1 and b.strategy == "none":
        yield Hit(f"`gpus {b.gpus}` asks for {processes} processes but no `strategy` says how they share the "
                  "training", b.at("gpus"),
                  help="add `strategy ddp` (each process holds the whole model and trains on its share of "
                       "each batch), or remove `gpus`")
    elif processes == 1 and b.strategy == "ddp":
        yield Hit("`strategy ddp` with one process changes nothing", b.at("strategy"),
                  help="set `gpus` to the number of GPUs to train on, or remove `strategy`")
    method = c.spec.method
    if processes > 1 and method is not None and method.kind not in backend.methods_distributed \
            and b.strategy in backend.strategies and b.strategy != "none":
        yield Hit(f"`method {method.kind}` is not trained in several processes by ftc's `{backend.name}` "
                  f"runtime (it distributes {_names(backend.methods_distributed)})", b.at("gpus"),
                  help="remove `gpus` and `strategy` (one process), or use `method lora`")


# Keys whose refusal on some backends a rule of its own words better: FT128 leaves them to it.
REFUSED_ELSEWHERE = {
    "train.augment": "FT145", "method.full.progressive": "FT145", "method.full.unfreeze_every": "FT145",
    "method.qlora.merge": "FT131", "train.packing": "FT133",
    "signal.rlhf.reward.train.packing": "FT133", "signal.rlhf.policy.train.packing": "FT133",
    "signal.rlhf.reward.train.artifacts": "FT146", "signal.rlhf.policy.train.artifacts": "FT146",
    "budget.gpus": "FT127", "budget.nodes": "FT127", "budget.strategy": "FT127",
    "budget.deepspeed_stage": "FT127", "budget.fsdp_sharding": "FT127",
    "model.revision": "FT152/FT155",  # a revision on a local folder, or on a timm/open_clip hub name
    # text pair fields on an image-text model, image fields on a text model
    **{f"signal.contrastive.{k}": "FT124" for k in ("anchor", "positive", "negative", "image", "caption")},
}


@rule("FT128", "setting-not-applied", ERROR)
def setting_not_applied(c: CheckedSpec) -> Iterator[Hit]:
    """A setting that the runtime training this spec does not apply.

    Why:
    What a spec declares is what happens: a setting written but silently ignored makes a reviewed
    spec lie about the run (the most common complaint against YAML fine-tuning configs is a key
    dropped without a word). Each runtime backend lists the keys it applies (compiler/honoured.py,
    proven by tests that run tiny specs and observe each key); a key the spec's backend does not
    apply is refused here, with why, before any GPU is paid for. Keys that only `ftc check`, the
    estimate or the record read are never refused (`ftc explain` and the key reference say who
    reads them).

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M; pretrained "laion2b_s34b_b79k" }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """
    from ftc.compiler import honoured as h

    m, sig = c.spec.model, c.spec.signal
    if m is None or sig is None:
        return
    backend = cap.backend_for(m.modality, sig.kind)
    method = c.spec.method
    if backend is None or m.task not in backend.tasks or (method is not None and method.kind not in backend.methods):
        return  # FT120/FT121/FT123 say why
    applied, run_keys = h.honoured(backend.name, m.task), h.run_keys()
    for path, span in h.written_keys(c.spec):
        if path not in run_keys or path in applied or path in REFUSED_ELSEWHERE:
            continue
        others = tuple(b for b in h.BACKENDS if path in h.honoured(b) and b != backend.name)
        if path in h.UNHONOURED:
            detail = h.UNHONOURED[path]
        elif path in h.honoured(backend.name):
            detail = f"`{backend.name}` applies it to other tasks than `{m.task}`"
        else:
            detail = f"it is applied by {_names(others)}" if others else ""
        yield Hit(f"`{path}` is not applied by ftc's `{backend.name}` runtime ({m.modality} `{m.task}`): "
                  "the run would ignore it", span, detail=detail,
                  help=f"remove `{path.rsplit('.', 1)[-1]}`")
