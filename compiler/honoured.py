"""Which keys each runtime backend applies: the `run` keys of the schema, per backend, as plain data.

A key is spelled as its dotted path of field names (schema.key_paths): `train.learning_rate`,
`method.lora.rank` (a variant block's kind is part of the path), `signal.rlhf.policy.kl_coef`,
`signal.rlhf.reward.data.dedup`, `eval.metrics` (the field, not the word `metric`), `data.fields`
(the mapping block is one key). For RLHF, `train.X` is the spec's train block, merged into both
stages (a stage's own `signal.rlhf.reward.train.X` wins there).

HONOURED[backend] holds the keys that backend applies, observably: they reach the trainer's
arguments, the model (the peft config, which parameters train), the rows that reach training
(read, split, deduplicated, cut to length), the evaluation, the gates, the run's record or the
MLflow mirror. tests/runtime/test_key_coverage.py runs tiny specs and observes each one; a key
listed here without an observation fails it. A `run` key a backend does not list is not applied
there, so `ftc check` refuses it for specs on that backend (compiler/capabilities.py). Keys whose
role is not `run` (check, estimate, record) are never refused: schema.py says who reads them.

NOT_FOR_TASK narrows a backend by task where one backend serves several (text.sft trains
classification, generation and extraction); UNHONOURED names every `run` key no backend applies
yet and why, so that a new key is either applied somewhere, given another role, or listed there
(tests/unit/test_key_roles.py).

Backends (the runtime modules that apply them):
    text.sft          runtime/backends/text.py: classification, generation, extraction (Trainer, TRL SFT)
    text.dpo          runtime/backends/dpo.py (preference.train_dpo)
    text.rlhf         runtime/backends/reward.py + policy.py (preference.train_reward, train_policy)
    text.contrastive  runtime/backends/embedding.py + embedding_loop.py
    vision            runtime/backends/vision*.py (timm)
    multimodal        runtime/backends/multimodal*.py (open_clip)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ftc.compiler import schema as s
from ftc.compiler.source import Span

BACKENDS = ("text.sft", "text.dpo", "text.rlhf", "text.contrastive", "vision", "multimodal")


def _keys(prefix: str, names: Iterable[str]) -> frozenset[str]:
    return frozenset(f"{prefix}.{n}" for n in names)


# Applied around every backend: the data read and split by the compiler and handed to training as
# ctx.parts (compiler/data/analyze.py), the gates (runtime/gates.py), the run's record (`ftc gc`
# applies `artifacts keep` from it) and the MLflow mirror (runtime/tracking.py). The backend is
# chosen by modality, task and signal (runtime/executor.py).
PIPELINE = frozenset({
    "model.modality", "model.task",
    *_keys("data", ("format", "train", "val", "test", "source", "split", "seed", "stratify", "fields")),
    "eval.gates", "train.artifacts",
    "budget.max_time",  # runtime/api.py TimeLimit: the Trainer's callback, ftc's own loop
    *_keys("tracking", ("mlflow", "experiment", "register", "alias", "artifacts")),
})

# What every backend applies itself: its base, run-time deduplication of the train split by the
# signal's input field (the plan's dedup step, compiler/data/dedup.py), and its evaluation
# (declared metrics, slices, latency).
EVALUATED = frozenset({"model.base", "data.dedup", "data.slices", "eval.metrics", "eval.latency_warmup"})

# The optimisation settings: TrainingArguments (runtime/backends/hf.py training_arguments) for the
# Trainer-based backends, runtime/backends/loop.py for the hand-written loop.
OPTIMISATION = ("epochs", "steps", "learning_rate", "schedule", "warmup", "batch_size", "grad_accum", "precision",
                "optimizer", "weight_decay", "max_grad_norm", "gradient_checkpointing", "seed", "early_stopping",
                "checkpoints")
TRAIN = _keys("train", OPTIMISATION)

LORA = ("rank", "alpha", "dropout", "targets", "bias")
QLORA = (*LORA, "bits", "quant_type", "double_quant", "compute_dtype")
PEFT_TEXT = frozenset({
    *_keys("method.full", ("freeze", "unfreeze")),
    *_keys("method.lora", (*LORA, "merge")),
    *_keys("method.qlora", QLORA),  # `merge` is refused on a quantised base (FT131)
    *_keys("method.adapters", ("bottleneck", "placement", "dropout")),
    *_keys("method.prompt_tuning", ("virtual_tokens", "init_text")),
    *_keys("method.prefix_tuning", ("prefix_length", "projection")),
})
# revision: an `hf:` base loads from the snapshot of that commit in the Hugging Face cache (compiler/hub.py)
TEXT_MODEL = _keys("model", ("trust_remote_code", "quantize", "revision"))

_REWARD_DATA = ("format", "train", "val", "test", "source", "split", "seed", "stratify", "fields", "max_length",
                "dedup")  # dedup: the plan's dedup node (runtime/executor.py) deduplicates the stage's train split

# TRL's DPO and reward trainers (disable_dropout, on by default) and ftc's policy stage
# (runtime/backends/policy.py) set every dropout of the model to 0 before training: the methods'
# dropout settings do not reach the preference stages.
NO_DROPOUT = frozenset({"method.lora.dropout", "method.qlora.dropout", "method.adapters.dropout"})
# TRL clones the adapter as the KL reference (DPO; RLHF's policy stage), and peft trains biases
# for one adapter only: `bias lora_only` or `all` fails when that stage starts ("LoraModel supports
# only 1 adapter with bias").
REF_NO_BIAS = frozenset({"method.lora.bias", "method.qlora.bias"})

# Prompt and prefix tuning do not run through RLHF today: the reward stage's GPT-2-style classifier
# refuses prefix tuning ("Model does not support past key values"), and a prompt-tuned policy fails
# with an IndexError (tests/runtime/test_matrix.py test_rlhf_pair fails for both).
RLHF_FAILS = frozenset({"method.prompt_tuning.virtual_tokens", "method.prompt_tuning.init_text",
                        "method.prefix_tuning.prefix_length", "method.prefix_tuning.projection"})

HONOURED: dict[str, frozenset[str]] = {
    "text.sft": PIPELINE | EVALUATED | TRAIN | PEFT_TEXT | TEXT_MODEL | frozenset({
        "train.packing", "model.labels", "model.output_schema", "data.max_length",
        "budget.gpus", "budget.strategy",  # `strategy ddp`: torchrun launches `gpus` processes (runtime/launch.py)
        *_keys("signal.sft", ("input", "target", "messages")),
    }),
    "text.dpo": PIPELINE | EVALUATED | TRAIN | TEXT_MODEL | (PEFT_TEXT - NO_DROPOUT - REF_NO_BIAS) | frozenset({
        "model.output_schema", "data.max_length",
        *_keys("signal.dpo", ("prompt", "chosen", "rejected", "beta")),
    }),
    "text.rlhf": PIPELINE | EVALUATED | TRAIN | (PEFT_TEXT - NO_DROPOUT - REF_NO_BIAS - RLHF_FAILS) | TEXT_MODEL | frozenset({
        "model.output_schema", "data.max_length",
        *_keys("signal.rlhf.reward", ("prompt", "chosen", "rejected")),
        *_keys("signal.rlhf.reward.data", _REWARD_DATA),
        *_keys("signal.rlhf.reward.train", OPTIMISATION),
        *_keys("signal.rlhf.policy", ("algorithm", "prompt", "generations", "kl_coef")),
        *_keys("signal.rlhf.policy.train", tuple(k for k in OPTIMISATION if k != "early_stopping")),
    }),
    "text.contrastive": PIPELINE | EVALUATED | TRAIN | TEXT_MODEL | frozenset({
        *(k for k in PEFT_TEXT if k != "method.lora.merge"),  # the LoRA update is always merged into model/
        "data.max_length",
        *_keys("signal.contrastive", ("anchor", "positive", "negative", "temperature")),
    }),
    "vision": PIPELINE | EVALUATED | TRAIN | frozenset({
        "train.augment", "model.labels", "data.image_root",
        *_keys("method.full", ("freeze", "unfreeze", "progressive", "unfreeze_every")),
        *_keys("method.lora", (*LORA, "merge")),
        *_keys("signal.sft", ("input", "target")),
    }),
    "multimodal": PIPELINE | EVALUATED | TRAIN | frozenset({
        "data.image_root",
        *_keys("method.full", ("freeze", "unfreeze")),
        *_keys("method.lora", (*LORA, "merge")),
        *_keys("signal.contrastive", ("image", "caption", "temperature")),
    }),
}

# Keys a backend applies for some of its tasks only: (backend, task) -> keys it does not apply there.
NOT_FOR_TASK: dict[tuple[str, str], frozenset[str]] = {
    # the classifier trains on input/target through the Trainer: no packing, no chat messages, no decoding;
    # prefix tuning fails in a BERT-style classifier's forward ("Model does not support past key values
    # which are required for prefix tuning": tests/runtime/test_text_methods.py, classification case)
    ("text.sft", "classification"): frozenset({"train.packing", "signal.sft.messages", "model.output_schema",
                                               "method.prefix_tuning.prefix_length",
                                               "method.prefix_tuning.projection"}),
    # generation and extraction train on text targets: labels name classes of a classifier
    ("text.sft", "generation"): frozenset({"model.labels"}),
    ("text.sft", "extraction"): frozenset({"model.labels"}),
}

# `run` keys that no backend applies yet, and why (each is refused at check wherever it is written).
UNHONOURED: dict[str, str] = {
    "model.pretrained": "open_clip hub ids are refused at run time; a local open_clip folder holds its weights",
    "method.qlora.merge": "an update merged into a 4-bit base is rounded away: the run skips it (FT131)",
    "signal.rlhf.reward.data.slices": "the reward model's accuracy is not reported per slice",
    "signal.rlhf.reward.data.image_root": "the reward stage reads text pairs",
    "signal.rlhf.reward.train.augment": "image augmentation applies to vision models only",
    "signal.rlhf.reward.train.packing": "packing is refused with preference signals (FT133)",
    "signal.rlhf.reward.train.artifacts": "retention is the spec's `train { artifacts keep N }` (FT146)",
    "signal.rlhf.policy.train.early_stopping": "policy optimisation is not evaluated on val while it trains",
    "signal.rlhf.policy.train.augment": "image augmentation applies to vision models only",
    "signal.rlhf.policy.train.packing": "packing is refused with preference signals (FT133)",
    "signal.rlhf.policy.train.artifacts": "retention is the spec's `train { artifacts keep N }` (FT146)",
}


def honoured(backend: str, task: str | None = None) -> frozenset[str]:
    """The keys `backend` applies (for `task`, when given)."""
    keys = HONOURED[backend]
    return keys - NOT_FOR_TASK.get((backend, task), frozenset()) if task is not None else keys


def run_keys() -> frozenset[str]:
    """Every key of the schema whose role is `run`."""
    return frozenset(path for path, k in s.key_paths().items() if k.applies == "run")


def written_keys(node: s.Node, prefix: str = "") -> Iterator[tuple[str, Span]]:
    """(dotted path, span) of every key a spec (or block) writes, in schema order: blocks are
    walked into, not listed (a block filled with its defaults writes nothing)."""
    for name, f in s.schema_fields(type(node)).items():
        if not node.given(name):
            continue
        meta = f.metadata
        value = getattr(node, name)
        if "block" in meta and not meta["mapping"]:
            if isinstance(value, s.Node):
                inner = f"{prefix}{name}.{value.kind}." if meta["kinds"] else f"{prefix}{name}."
                yield from written_keys(value, inner)
            continue
        yield f"{prefix}{name}", node.spans[name]


def key_reference() -> str:
    """A Markdown table of every key: its role, the backends that apply a `run` key (or why none
    does), and for the other roles who reads it and why."""
    out = ["| key | role | applied by / why not |", "| --- | --- | --- |"]
    for path, k in s.key_paths().items():
        if k.applies == "run":
            where = ", ".join(b for b in BACKENDS if path in HONOURED[b]) or f"none: {UNHONOURED.get(path, '?')}"
        else:
            where = k.reason or ""
        out.append(f"| `{path}` | {k.applies} | {where.replace('|', '/')} |")
    return "\n".join(out) + "\n"
