"""The schema: every block and key of the language, its signature, default and documentation.

The dataclasses below are both the schema and the typed result (CheckedSpec): a field's metadata
holds its signature, its documentation, and whether it repeats. compiler/resolve.py decodes
statements against these tables; rules read the resulting frozen objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, fields, replace
from typing import Any

from ftc.compiler import ast
from ftc.compiler import types as t
from ftc.compiler.diagnostics import make
from ftc.compiler.record import record
from ftc.compiler.source import Span

# ---------------------------------------------------------------------------------------------
# Composite values (statements with clauses)


@record
class DataFile:
    path: str
    rows: int | None
    span: Span


@record
class Split:
    ratios: tuple[float, ...]  # fractions summing to 1: train, val, test
    by: str  # random | group | time
    key: str | None
    span: Span


@record
class Dedup:
    kind: str  # exact | near
    threshold: float | None
    span: Span


@record
class MaxLength:
    tokens: int
    policy: str  # truncate | drop
    span: Span


@record
class Condition:
    field: str
    op: str
    value: str | float
    span: Span


@record
class Slice:
    name: str
    conditions: tuple[Condition, ...]
    span: Span


@record
class EarlyStopping:
    patience: int
    metric: str
    min_delta: float
    span: Span


@record
class Checkpoints:
    keep: int
    every: int | None  # steps; None = every epoch
    span: Span


@record
class Artifacts:
    keep: int  # the newest `keep` never-promoted runs of the spec keep their artifacts at `ftc gc`
    span: Span


@record
class Metric:
    name: str
    average: str | None
    k: int | None
    span: Span


@record
class Gate:
    metric: str  # accuracy, f1, latency, regression, ...
    qualifier: str | None  # p95 for latency, macro for f1, loss for regression
    op: str
    threshold: float  # fractions for rates, seconds for latency
    threshold_text: str
    split: str | None
    slice: str | None
    dataset: str | None  # `on "data/general.jsonl"`
    versus: str | None  # `vs base`: the gate reads tuned - base (for `regression`, its own comparison)
    span: Span
    metric_span: Span


def _span(args: t.Args, used: int, key_span: Span) -> Span:
    return t.span_of(args, used, key_span)


def sig_data_file(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    path = t.string('"data/train.jsonl"')(args, key_span, key)
    used, rows = 1, None
    if t.keyword(args, 1, "rows"):
        rows = t.integer(0)(args[2:], args[1].span, "rows").value
        used = 3
    return t.Parsed(DataFile(path.value, rows, _span(args, used, key_span)), used, _span(args, used, key_span))


def sig_split(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "ratios such as `80/10/10`")
    if not isinstance(v, ast.Ratio):
        raise t._wrong(v, key, "ratios for train/val/test", "`split 80/10/10`")
    total = sum(v.parts)
    if len(v.parts) not in (2, 3) or total <= 0 or any(p <= 0 for p in v.parts):
        raise t.SigError(make("FT013", f"`split {v.text}` needs two or three positive parts (train/val/test)",
                              v.span, help="write `split 80/10/10` (train/val/test) or `split 90/10`"))
    ratios = tuple(p / total for p in v.parts)
    used, by, col = 1, "random", None
    if t.keyword(args, 1, "by"):
        if len(args) < 3:
            raise t.SigError(make("FT013", "`by` needs `random`, `group \"field\"` or `time \"field\"`",
                                  args[1].span, help='write `split 80/10/10 by group "customer_id"`'))
        by = t.enum_value(args[2], "split by", ("random", "group", "time"))
        used = 3
        if by != "random":
            col = t.string('"customer_id"')(args[3:], args[2].span, f"by {by}").value
            used = 4
    sp = _span(args, used, key_span)
    return t.Parsed(Split(ratios, by, col, sp), used, sp)


def sig_dedup(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    kind = t.enum("exact", "near", "none")(args, key_span, key).value
    used, threshold = 1, None
    if kind == "near":
        threshold = 0.85
        if len(args) > 1 and isinstance(args[1], ast.Num):
            threshold = t.number(0.5, 1.0)(args[1:], args[0].span, "dedup near").value
            used = 2
    sp = _span(args, used, key_span)
    return t.Parsed(Dedup(kind, threshold, sp), used, sp)


def sig_max_length(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    tokens = t.integer(1)(args, key_span, key).value
    used, policy = 1, "truncate"
    if len(args) > 1 and isinstance(args[1], ast.Name) and args[1].text in ("truncate", "drop"):
        policy, used = args[1].text, 2
    sp = _span(args, used, key_span)
    return t.Parsed(MaxLength(tokens, policy, sp), used, sp)


def _condition(v: ast.Value) -> Condition:
    if not isinstance(v, ast.Compare) or not isinstance(v.left, ast.Name):
        raise t._wrong(v, "where", 'a comparison such as `channel == "email"`', '`where channel == "email"`')
    right = v.right
    if isinstance(right, ast.Str):
        value: str | float = right.value
    elif isinstance(right, ast.Num):
        value = right.value
    elif isinstance(right, ast.Name) and right.text in ("true", "false"):
        value = right.text
    else:
        raise t._wrong(right, "where", "a string or a number", '`where channel == "email"`')
    return Condition(v.left.text, v.op, value, v.span)


def sig_slice(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "a name and a filter")
    if not isinstance(v, ast.Name) or len(v.parts) != 1:
        raise t._wrong(v, key, "a slice name", '`slice email where channel == "email"`')
    if not t.keyword(args, 1, "where") or len(args) < 3:
        raise t.SigError(make("FT013", f"`slice {v.text}` needs a filter", v.span,
                              help=f'write `slice {v.text} where channel == "email"`'))
    conds = [_condition(args[2])]
    used = 3
    while t.keyword(args, used, "and") and used + 1 < len(args):
        conds.append(_condition(args[used + 1]))
        used += 2
    sp = _span(args, used, key_span)
    return t.Parsed(Slice(v.text, tuple(conds), sp), used, sp)


def sig_early_stopping(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    if not t.keyword(args, 0, "patience"):
        v = t._need(args, key_span, key, "`patience N`")
        raise t._wrong(v, key, "`patience N`", f"`{key} patience 2 on val.loss`")
    patience = t.integer(1)(args[1:], args[0].span, "patience").value
    used, metric, delta = 2, "val.loss", 0.0
    if t.keyword(args, used, "on"):
        m = t._need(args[used + 1:], args[used].span, "on", "a metric such as `val.loss`")
        if not isinstance(m, ast.Name):
            raise t._wrong(m, "on", "a metric such as `val.loss`", f"`{key} patience 2 on val.loss`")
        metric, used = m.text, used + 2
    if t.keyword(args, used, "min_delta"):
        delta = t.number(0)(args[used + 1:], args[used].span, "min_delta").value
        used += 2
    sp = _span(args, used, key_span)
    return t.Parsed(EarlyStopping(patience, metric, delta, sp), used, sp)


def sig_checkpoints(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    if not t.keyword(args, 0, "keep"):
        v = t._need(args, key_span, key, "`keep N`")
        raise t._wrong(v, key, "`keep N`", f"`{key} keep 3`")
    keep = t.integer(1)(args[1:], args[0].span, "keep").value
    used, every = 2, None
    if t.keyword(args, 2, "every"):
        if t.keyword(args, 3, "epoch"):
            used = 4
        else:
            every = t.integer(1)(args[3:], args[2].span, "every").value
            used = 5 if t.keyword(args, 4, "steps") else 4
    sp = _span(args, used, key_span)
    return t.Parsed(Checkpoints(keep, every, sp), used, sp)


def sig_artifacts(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    """`artifacts keep N`: retention of the artifacts of runs never promoted, applied by `ftc gc`."""
    example = f"`{key} keep 5`"
    why = "`ftc gc` keeps the artifacts of the 5 newest runs never promoted (`keep 0`: none)"
    if not t.keyword(args, 0, "keep"):
        v = t._need(args, key_span, key, "`keep N`")
        raise t._wrong(v, key, "`keep N`", f"{example}: {why}")
    if len(args) < 2:
        raise t.SigError(make("FT013", f"`{key} keep` needs a number of runs", _span(args, 1, key_span),
                              help=f"write {example}: {why}"))
    n = args[1]
    if not isinstance(n, ast.Num) or not n.is_int or n.value < 0:
        raise t.SigError(make("FT013", f"`{key} keep` expects a whole number of runs (0 or more), found "
                              f"{ast.describe(n)} `{n.show()}`", n.span, help=f"write {example}: {why}"))
    sp = _span(args, 2, key_span)
    return t.Parsed(Artifacts(int(n.value), sp), 2, sp)


METRICS = ("accuracy", "precision", "recall", "f1", "auc", "loss", "perplexity", "exact_match",
           "format_validity", "recall_at_k", "zero_shot_accuracy", "reward", "reward_accuracy")
# RLHF only: `reward` is the mean score the spec's trained reward model gives the model's greedy
# replies to the split's prompts (any real number); `reward_accuracy` is that reward model's own
# accuracy on the split's preference pairs.
RLHF_METRICS = ("reward", "reward_accuracy")
AVERAGES = ("micro", "macro", "weighted")
LATENCY = ("p50", "p95", "p99")
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "auc", "exact_match", "format_validity",
                    "recall_at_k", "zero_shot_accuracy", "reward_accuracy"}  # rates, between 0 and 1
UNBOUNDED_HIGHER = {"reward"}  # higher is better, any real number


def sig_metric(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "a metric name")
    name = t.enum_value(v, key, METRICS, {"json_validity": "format_validity", "em": "exact_match"})
    used, average, k = 1, None, None
    if name in ("precision", "recall", "f1"):
        average = "macro"
        if len(args) > 1 and isinstance(args[1], ast.Name) and args[1].text in AVERAGES:
            average, used = args[1].text, 2
    elif name == "recall_at_k":
        k = t.integer(1)(args[1:], v.span, "recall_at_k").value
        used = 2
    sp = _span(args, used, key_span)
    return t.Parsed(Metric(name, average, k, sp), used, sp)


def sig_gate(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "a comparison such as `f1 >= 0.85`")
    example = "`gate f1 >= 0.85 on test`"
    if not isinstance(v, ast.Compare) or not isinstance(v.left, ast.Name):
        raise t._wrong(v, key, "a comparison such as `f1 >= 0.85`", example)
    parts = v.left.parts
    metric = parts[0]
    qualifier = ".".join(parts[1:]) or None
    right = v.right
    if metric == "latency":
        threshold = t.quantity_value(right, "latency gate", "time")
    elif isinstance(right, ast.Percent):
        threshold = right.value / 100
    elif isinstance(right, ast.Num):
        threshold = right.value
    else:
        raise t._wrong(right, key, "a number (or a percentage) after the comparison", example)
    used, split, slc, dataset, versus = 1, None, None, None, None
    while used < len(args):
        if t.keyword(args, used, "vs") and used + 1 < len(args):
            target = args[used + 1]
            if isinstance(target, ast.Str):
                versus = target.value
            elif isinstance(target, ast.Name) and target.text == "base":
                versus = "base"
            else:
                raise t._wrong(target, "vs", "`base` or a model path", "`gate regression <= 0.02 vs base`")
            used += 2
        elif t.keyword(args, used, "on") and used + 1 < len(args):
            target = args[used + 1]
            if isinstance(target, ast.Str):
                dataset = target.value
            elif isinstance(target, ast.Name) and len(target.parts) <= 2:
                split = target.parts[0]
                slc = target.parts[1] if len(target.parts) == 2 else None
            else:
                raise t._wrong(target, "on", "a split (`test`, `test.email`) or a data file", example)
            used += 2
        else:
            break
    sp = _span(args, used, key_span)
    gate = Gate(metric, qualifier, v.op, threshold, right.show(), split, slc, dataset, versus, sp, v.left.span)
    return t.Parsed(gate, used, sp)


# ---------------------------------------------------------------------------------------------
# Blocks


# Roles: who reads a key. Every key says it, and every role but "run" says why (`reason`), so
# that no key is declared and then silently ignored (tests/unit/test_key_roles.py):
#   run       the runtime applies it: a backend (trainer arguments, the model, the data it trains
#             on), the data pipeline that hands rows to training, the gates, the run's record or
#             the MLflow mirror. compiler/honoured.py lists, per backend, the run keys it applies;
#             tests/runtime/test_key_coverage.py observes each one in tiny runs.
#   check     only `ftc check` reads it (a rule refuses or warns; nothing at run time depends on it)
#   estimate  only the memory and step estimate reads it (`ftc check`, `ftc plan`)
#   record    kept in the run's record for people (the spec text, the plan); nothing reads it
ROLES = ("run", "check", "estimate", "record")


def _role(applies: str, reason: str | None) -> dict[str, Any]:
    if applies not in ROLES:
        raise ValueError(f"unknown key role {applies!r} (roles: {', '.join(ROLES)})")
    if applies != "run" and not (reason and reason.strip()):
        raise ValueError(f"a `{applies}` key needs a reason: why the runtime need not apply it")
    if applies == "run" and reason is not None:
        raise ValueError("a `run` key takes no reason: the runtime applies it")
    return {"applies": applies, "reason": reason}


def key(sig: t.Sig, doc: str, default: Any = None, *, required: bool = False, repeat: bool = False,
        factory: Any = None, applies: str = "run", reason: str | None = None) -> Any:
    """A key of a block: its signature, documentation, default, and its role (ROLES above)."""
    meta = {"sig": sig, "doc": doc, "required": required, "repeat": repeat, **_role(applies, reason)}
    if repeat:
        return field(default_factory=tuple, metadata=meta)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def sub(cls: type, doc: str, *, kinds: Mapping[str, type] | None = None, required: bool = False,
        mapping: bool = False, applies: str = "run", reason: str | None = None) -> Any:
    """A nested block. `kinds` makes it a variant block (`method lora { ... }`); a `mapping`
    block (`fields { text "body" }`) is one key whose role is its own."""
    meta = {"block": cls, "doc": doc, "kinds": kinds, "required": required, "mapping": mapping,
            **_role(applies, reason)}
    return field(default=None, metadata=meta)


@record
class Node:
    """Every block carries its own span and the span of each key the user wrote."""

    span: Span | None = field(default=None, repr=False, compare=False)
    spans: Mapping[str, Span] = field(default_factory=dict, repr=False, compare=False)
    kind: str = field(default="", compare=False)  # `lora` in `method lora { ... }`
    kind_span: Span | None = field(default=None, repr=False, compare=False)

    def at(self, name: str) -> Span | None:
        return self.spans.get(name, self.span)

    def given(self, name: str) -> bool:
        return name in self.spans


@record
class Intent(Node):
    """Why this experiment exists: fine-tune for behaviour, never for knowledge."""

    goal: str = key(t.enum("behavior", "format", "style", "knowledge", aliases={"behaviour": "behavior"}),
                    "what fine-tuning should change: behavior, format, style (or knowledge, which is refused)",
                    required=True, applies="check",
                    reason="`ftc check` refuses `knowledge` (FT101); behavior, format and style train alike")
    stability: str = key(t.enum("stable", "evolving", "volatile"),
                         "how often the task's labels or rules change", "stable", applies="check",
                         reason="`ftc check` refuses a volatile task (FT102); training does not depend on it")
    owner: str | None = key(t.string('"support-ml"'), "the team or person who owns the model", applies="record",
                            reason="for people: kept with the spec text in each run's record; nothing reads it")


MODALITIES = ("text", "vision", "multimodal")
TASKS = ("generation", "classification", "extraction", "preference", "embedding",
         "image_classification", "image_text_contrastive")


@record
class Model(Node):
    """The base model and the task it is fine-tuned for."""

    modality: str = key(t.enum(*MODALITIES), "text, vision or multimodal", required=True)
    base: str = key(t.string('"hf:org/model"'),
                    'the base model: "hf:org/name" (hub id), "timm:name", "open_clip:arch", or a local path',
                    required=True)
    revision: str | None = key(t.string('"3f2a9c1"'), "the hub revision (commit) to pin")
    pretrained: str | None = key(t.string('"laion2b_s34b_b79k"'), "open_clip pretrained tag")
    task: str = key(t.enum(*TASKS, aliases={"causal_lm": "generation", "contrastive": "image_text_contrastive"}),
                    "what the model does", required=True)
    labels: tuple[str, ...] | None = key(t.list_of(t.string(), "strings", '["billing", "bug"]'),
                                         "class labels (classification)")
    output_schema: str | None = key(t.string('"schemas/invoice.json"'),
                                    "JSON Schema file that extraction outputs must satisfy")
    trust_remote_code: bool = key(t.boolean(), "run code shipped with the model (off unless said)", False)
    params: float | None = key(t.quantity("count"), "parameter count when no local config.json tells (e.g. 7B)",
                               applies="estimate",
                               reason="sizes the memory estimate; training counts the loaded model's own weights")
    quantize: str | None = key(t.enum("4bit", "8bit", "none"), "load the base quantised (4bit, 8bit)")


_LORA_TARGETS = t.list_of(t.string(), "module names", '["q_proj", "v_proj"]')


@record
class FullMethod(Node):
    """Full fine-tune: every weight not frozen trains."""

    freeze: tuple[str, ...] = key(_LORA_TARGETS, "module name patterns to keep frozen", factory=tuple)
    unfreeze: tuple[str, ...] = key(_LORA_TARGETS, "module name patterns that train (the rest frozen)", factory=tuple)
    progressive: tuple[str, ...] = key(_LORA_TARGETS, "vision: unfreeze these groups one at a time, head first",
                                       factory=tuple)
    unfreeze_every: int = key(t.integer(1), "epochs between progressive unfreezing steps", 1)


@record
class LoraMethod(Node):
    """LoRA: low-rank update matrices beside frozen weights."""

    rank: int = key(t.integer(1, 1024), "rank r of the update", 8)
    alpha: float = key(t.number(0), "scaling alpha (effective scale alpha/r)", 16)
    dropout: float = key(t.number(0, 0.9), "dropout on the LoRA path", 0.05)
    targets: tuple[str, ...] = key(_LORA_TARGETS, 'modules to adapt (["all-linear"] for every linear layer)',
                                   factory=lambda: ("all-linear",))
    bias: str = key(t.enum("none", "all", "lora_only"), "which biases train", "none")
    merge: bool = key(t.boolean(), "also export weights merged into the base", False)


@record
class QLoraMethod(LoraMethod):
    """QLoRA: LoRA over a base quantised to 4-bit."""

    bits: int = key(t.integer(1, 16), "bits of the quantised base (QLoRA needs 4)", 4)
    quant_type: str = key(t.enum("nf4", "fp4"), "4-bit data type", "nf4")
    double_quant: bool = key(t.boolean(), "quantise the quantisation constants too", True)
    compute_dtype: str = key(t.enum("bf16", "fp16", "fp32"), "dtype of the matmuls", "bf16")


@record
class AdaptersMethod(Node):
    """Bottleneck adapters inserted in each transformer block."""

    bottleneck: int = key(t.integer(1), "bottleneck width", 64)
    placement: str = key(t.enum("ffn", "attention", "both"), "where adapters sit in each block", "ffn")
    dropout: float = key(t.number(0, 0.9), "dropout inside the adapter", 0.0)


@record
class PromptTuningMethod(Node):
    """Prompt tuning: learned continuous prompt embeddings; the base stays frozen."""

    virtual_tokens: int = key(t.integer(1, 1024), "number of virtual tokens", 20)
    init_text: str | None = key(t.string('"Classify the ticket:"'), "initialise from this text")


@record
class PrefixTuningMethod(Node):
    """Prefix tuning: learned key/value prefixes in every layer."""

    prefix_length: int = key(t.integer(1, 1024), "prefix length in tokens", 30)
    projection: bool = key(t.boolean(), "reparametrise the prefix through an MLP", False)


METHODS: dict[str, type] = {"full": FullMethod, "lora": LoraMethod, "qlora": QLoraMethod,
                            "adapters": AdaptersMethod, "prompt_tuning": PromptTuningMethod,
                            "prefix_tuning": PrefixTuningMethod}
ADAPTER_METHODS = ("lora", "qlora", "adapters", "prompt_tuning", "prefix_tuning")


@record
class DataFields(Node):
    """Field mapping: canonical name -> column in the data (`fields { text "body" }`)."""

    mapping: Mapping[str, str] = field(default_factory=dict)


FORMATS = ("jsonl", "csv", "parquet", "hf_dataset", "image_folder", "image_table")


@record
class Data(Node):
    """Where the data is, how it is split, cleaned and sliced."""

    format: str | None = key(t.enum(*FORMATS), "file format (inferred from the extension if not given)")
    train: DataFile | None = key(sig_data_file, "training file (pre-split)")
    val: DataFile | None = key(sig_data_file, "validation file (pre-split)")
    test: DataFile | None = key(sig_data_file, "held-out test file (pre-split)")
    source: DataFile | None = key(sig_data_file, "one file that `split` divides")
    split: Split | None = key(sig_split, "ratios and strategy: `split 80/10/10 by group \"customer_id\"`")
    seed: int = key(t.integer(0), "seed of the split", 0)
    stratify: str | None = key(t.string('"label"'), "field to stratify the split by (classification)")
    group: str | None = key(t.string('"customer_id"'),
                            "rows sharing this field must stay in one split (checked across pre-split files)",
                            applies="check", reason="`ftc check` refuses groups shared across splits (FT207); "
                            "`split ... by group` is what assigns rows by group")
    time: str | None = key(t.string('"created_at"'), "time field: evaluation rows must come after training rows",
                           applies="check", reason="`ftc check` refuses evaluation rows older than training rows "
                           "(FT208); `split ... by time` is what orders the split")
    image_root: str | None = key(t.string('"data/images"'), "folder that image paths are relative to")
    dedup: Dedup | None = key(sig_dedup, "`exact` or `near 0.85` deduplication")
    max_length: MaxLength | None = key(sig_max_length, "max sequence length and `truncate`/`drop` policy")
    slices: tuple[Slice, ...] = key(sig_slice, "named evaluation slices: `slice email where channel == \"email\"`",
                                    repeat=True)
    fields: DataFields | None = sub(DataFields, "field mapping block", mapping=True)

    def split_names(self) -> tuple[str, ...]:
        if self.split is not None:
            return ("train", "val", "test")[: len(self.split.ratios)]
        return tuple(n for n in ("train", "val", "test") if getattr(self, n) is not None)


@record
class Train(Node):
    """Training settings."""

    epochs: int | None = key(t.integer(1), "passes over the training data")
    steps: int | None = key(t.integer(1), "optimizer steps (instead of epochs)")
    learning_rate: float = key(t.number(0, 10), "peak learning rate", 2e-4)
    schedule: str = key(t.enum("constant", "linear", "cosine"), "learning-rate schedule", "linear")
    warmup: float = key(t.number(0, 1, percent=True), "fraction of steps spent warming up", 0.0)
    batch_size: int = key(t.integer(1), "micro-batch size per device", 8)
    grad_accum: int = key(t.integer(1), "gradient accumulation steps", 1)
    global_batch: int | None = key(t.integer(1), "global batch (= batch_size × grad_accum × GPUs × nodes)",
                                   applies="check", reason="`ftc check` refuses one that batch_size × grad_accum × "
                                   "GPUs × nodes does not give (FT135); training uses batch_size and grad_accum")
    precision: str = key(t.enum("fp32", "fp16", "bf16"), "training precision", "bf16")
    optimizer: str = key(t.enum("adamw", "adamw_8bit", "paged_adamw_8bit", "sgd"), "optimizer", "adamw")
    weight_decay: float = key(t.number(0, 1), "weight decay", 0.0)
    max_grad_norm: float = key(t.number(0), "gradient clipping norm (0 = off)", 1.0)
    gradient_checkpointing: bool = key(t.boolean(), "recompute activations to save memory", False)
    seed: int = key(t.integer(0), "training seed", 42)
    early_stopping: EarlyStopping | None = key(sig_early_stopping, "`early_stopping patience 2 on val.loss`")
    checkpoints: Checkpoints | None = key(sig_checkpoints, "`checkpoints keep 3` (retention)")
    artifacts: Artifacts | None = key(sig_artifacts, "`artifacts keep 5`: `ftc gc` keeps the artifacts of the "
                                      "newest 5 runs never promoted (promoted and active ones: always)")
    augment: tuple[str, ...] = key(
        t.list_of(t.enum("flip", "crop", "color_jitter", "randaugment", "mixup", "cutmix", "rotate"),
                  "augmentations", '["flip", "crop"]'),
        "vision augmentations", factory=tuple)
    packing: bool = key(t.boolean(), "pack several short examples per sequence", False)


@record
class SftSignal(Node):
    """Supervised fine-tuning on input -> target pairs or chat messages."""

    input: str | None = key(t.string('"text"'), "input field")
    target: str | None = key(t.string('"label"'), "target field")
    messages: str | None = key(t.string('"messages"'), "chat messages field (instead of input/target)")


@record
class DpoSignal(Node):
    """Direct preference optimisation on prompt/chosen/rejected triples."""

    prompt: str = key(t.string('"prompt"'), "prompt field", "prompt")
    chosen: str = key(t.string('"chosen"'), "preferred answer field", "chosen")
    rejected: str = key(t.string('"rejected"'), "dispreferred answer field", "rejected")
    beta: float = key(t.number(0), "strength of the KL penalty", 0.1)


@record
class RewardStage(Node):
    """RLHF stage 1: a reward model trained on preference pairs."""

    prompt: str = key(t.string('"prompt"'), "prompt field", "prompt")
    chosen: str = key(t.string('"chosen"'), "preferred answer field", "chosen")
    rejected: str = key(t.string('"rejected"'), "dispreferred answer field", "rejected")
    data: Data | None = sub(Data, "the reward model's own data")
    train: Train | None = sub(Train, "the reward model's own training settings")


@record
class PolicyStage(Node):
    """RLHF stage 2: the policy optimised against the reward model of stage 1, on the prompts of
    the spec's `data` block."""

    algorithm: str = key(t.enum("rloo", "grpo"), "online policy optimiser (TRL)", "rloo")
    prompt: str = key(t.string('"prompt"'), "prompt field", "prompt")
    generations: int = key(t.integer(2), "completions sampled per prompt", 4)
    kl_coef: float = key(t.number(0), "KL penalty towards the reference policy", 0.05)
    train: Train | None = sub(Train, "the policy's own training settings")


@record
class RlhfSignal(Node):
    """RLHF: a reward model, then policy optimisation driven by it.

    The reward stage trains on preference pairs: its own `data` block, or the spec's `data` when it
    has none. The policy stage trains on the prompts of the spec's `data` (its train split); the
    spec's val/test splits are where the gates are measured.
    """

    reward: RewardStage | None = sub(RewardStage, "stage 1: the reward model", required=True)
    policy: PolicyStage | None = sub(PolicyStage, "stage 2: the policy, scored by stage 1", required=True)


@record
class ContrastiveSignal(Node):
    """Embedding / contrastive learning with in-batch negatives."""

    anchor: str | None = key(t.string('"query"'), "anchor field (text pairs)")
    positive: str | None = key(t.string('"positive"'), "positive field")
    negative: str | None = key(t.string('"negative"'), "hard negative field (triplets)")
    image: str | None = key(t.string('"image"'), "image path field (image-text)")
    caption: str | None = key(t.string('"caption"'), "caption field (image-text)")
    temperature: float = key(t.number(0.001, 10), "softmax temperature", 0.05)


SIGNALS: dict[str, type] = {"sft": SftSignal, "dpo": DpoSignal, "rlhf": RlhfSignal,
                            "contrastive": ContrastiveSignal}
SIGNAL_ALIASES = {"embedding": "contrastive"}


@record
class Eval(Node):
    """Metrics and the gates a model must pass to be promoted."""

    metrics: tuple[Metric, ...] = key(sig_metric, "a metric to compute: `metric f1 macro`", repeat=True)
    gates: tuple[Gate, ...] = key(sig_gate, "a promotion gate: `gate f1 >= 0.85 on test`", repeat=True)
    latency_warmup: int = key(t.integer(0), "requests before latency is measured", 5)


_ONE_PROCESS = ("`ftc run` launches processes on one machine, and neither FSDP nor DeepSpeed yet, so only the "
                "plan's memory and step estimate use it (ftc check refuses a setting the runtime cannot launch: FT127)")


@record
class Budget(Node):
    """Resources: checked against the memory estimate."""

    gpu_memory: float | None = key(t.quantity("memory"), "memory per GPU, e.g. 24GB", applies="estimate",
                                   reason="`ftc check` compares the memory estimate with it (FT160); the runtime "
                                   "uses the memory the device has")
    gpus: int = key(t.integer(1), "GPUs per node: training runs as that many processes (torchrun)", 1)
    nodes: int = key(t.integer(1), "nodes", 1, applies="estimate", reason=_ONE_PROCESS)
    strategy: str = key(t.enum("none", "ddp", "fsdp", "deepspeed"), "distribution strategy", "none")
    deepspeed_stage: int | None = key(t.integer(1, 3), "DeepSpeed ZeRO stage", applies="estimate",
                                      reason=_ONE_PROCESS)
    fsdp_sharding: str | None = key(t.enum("full", "hybrid", "grad_op"), "FSDP sharding strategy",
                                    applies="estimate", reason=_ONE_PROCESS)
    max_time: float | None = key(t.quantity("time"), "wall-clock limit, e.g. 2h")


# Tracking: optional mirroring of runs into MLflow (the embedded registry stays the source of truth)

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")
_URI_EXAMPLE = '`mlflow "sqlite:///mlruns.db"` (a local store, relative to the spec) or `mlflow "http://host:5000"`'


def tracking_uri_problem(uri: str) -> tuple[str, str] | None:
    """(message, help) when `uri` is not a tracking URI MLflow can open; None when it is."""
    scheme, sep, rest = uri.partition(":")
    base = scheme.split("+", 1)[0].lower()
    if not sep or not scheme or len(scheme) == 1:  # no scheme, or a Windows drive letter
        return f"`{uri}` is not a tracking URI (it has no scheme)", f"write {_URI_EXAMPLE}"
    if base not in TRACKING_SCHEMES:
        return (f"`{scheme}:` is not a tracking store MLflow knows",
                f"{t.suggest(base, TRACKING_SCHEMES)}MLflow stores: {', '.join(TRACKING_SCHEMES)}; "
                + 'e.g. `mlflow "sqlite:///mlruns.db"`')
    if base == "sqlite" and not rest.startswith("///"):
        return f"`{uri}` is not a SQLite URI", 'write `"sqlite:///mlruns.db"` (three slashes, then the path)'
    if base in ("http", "https") and not rest.startswith("//"):
        return f"`{uri}` is not an HTTP URI", 'write `"http://host:5000"`'
    return None


def sig_tracking_uri(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "a tracking URI")
    if not isinstance(v, ast.Str):
        raise t._wrong(v, key, "a tracking URI in double quotes", '`mlflow "sqlite:///mlruns.db"`')
    problem = tracking_uri_problem(v.value)
    if problem is not None:
        raise t.SigError(make("FT013", problem[0], v.span, help=problem[1]))
    return t.Parsed(v.value, 1, v.span)


def _registry_name(v: ast.Value, key: str, what: str, example: str) -> str:
    if not isinstance(v, ast.Str):
        raise t._wrong(v, key, what, example)
    if not v.value.strip():
        raise t.SigError(make("FT013", f"`{key}` is an empty name", v.span, help=f"write {example}"))
    return v.value


def sig_register(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    """`register "name"` (the registered model), `register true` (the spec's name) or `register false`."""
    v = t._need(args, key_span, key, "a registered model name, `true` or `false`")
    if isinstance(v, ast.Name) and v.text in ("true", "false"):
        return t.Parsed(v.text == "true", 1, v.span)
    name = _registry_name(v, key, "a registered model name, `true` or `false`", '`register "ticket-triage"`')
    bad = [c for c in "/:" if c in name]
    if bad:
        raise t.SigError(make("FT013", f"a registered model name cannot contain `{bad[0]}`: `{name}`", v.span,
                              help='use letters, digits, `-`, `_` and `.`, e.g. `register "ticket-triage"`'))
    return t.Parsed(name, 1, v.span)


def sig_alias(args: t.Args, key_span: Span, key: str) -> t.Parsed:
    v = t._need(args, key_span, key, "an alias name")
    example = '`alias "champion"`'
    alias = _registry_name(v, key, "an alias name in double quotes", example)
    if not all(c.isalnum() or c in "_-" for c in alias) or not alias.isascii():
        raise t.SigError(make("FT013", f"`{alias}` is not a valid alias", v.span,
                              help=f"an alias holds only letters, digits, `_` and `-`: write {example}"))
    if alias.lower() == "latest" or (alias[0] in "vV" and alias[1:].isdigit()):
        raise t.SigError(make("FT013", f"`{alias}` is reserved by MLflow (`latest` and `v1`, `v2`, ...)", v.span,
                              help=f"choose another name: write {example}"))
    return t.Parsed(alias, 1, v.span)


@record
class Tracking(Node):
    """Mirror each run into MLflow: params, metrics, artifacts, and for a promoted run a registered
    model version with an alias. The embedded registry (`.ftc/`) stays the source of truth."""

    mlflow: str | None = key(sig_tracking_uri, 'MLflow tracking URI: "sqlite:///mlruns.db" (a relative path is '
                             'relative to the spec) or "http://host:5000"', required=True)
    experiment: str | None = key(t.string('"ticket-triage"'), "MLflow experiment (the spec's name when not given)")
    register: str | bool = key(sig_register, "registered model for promoted runs: a name, `true` (the spec's "
                               "name) or `false`", True)
    alias: str = key(sig_alias, "alias that points at the newest promoted version", "champion")
    artifacts: str | None = key(t.string('"mlartifacts"'),
                                "where a new experiment keeps its artifacts (local stores: beside the database)")


@record
class Spec(Node):
    """One fine-tuning experiment."""

    intent: Intent | None = sub(Intent, "why: goal, stability, owner", required=True)
    model: Model | None = sub(Model, "the base model and task", required=True)
    method: Any = sub(Node, "how weights change: full, lora, qlora, adapters, prompt_tuning, prefix_tuning",
                      kinds=METHODS, required=True)
    signal: Any = sub(Node, "the training objective: sft, dpo, rlhf, contrastive", kinds=SIGNALS, required=True)
    data: Data | None = sub(Data, "datasets, splits, cleaning, slices", required=True)
    train: Train | None = sub(Train, "training settings")
    eval: Eval | None = sub(Eval, "metrics and gates", required=True)
    budget: Budget | None = sub(Budget, "resources")
    tracking: Tracking | None = sub(Tracking, 'optional MLflow tracking: `tracking { mlflow "sqlite:///mlruns.db" }`')


def schema_fields(cls: type) -> dict[str, Any]:
    """name -> dataclass field, for the keys and blocks of a block class (not span/spans)."""
    return {f.name: f for f in fields(cls) if "doc" in f.metadata}


def key_name(f: Any) -> str:
    """The word users write: `metric` for the repeated field `metrics`, and so on."""
    name: str = f.name
    return {"metrics": "metric", "gates": "gate", "slices": "slice"}.get(name, name)


@record
class KeyPath:
    """One key of the language at its place in a spec, spelled as a dotted path of field names:
    `train.learning_rate`, `method.lora.rank` (a variant block's kind is part of the path),
    `signal.rlhf.reward.data.dedup`, `eval.metrics` (the field, not the word `metric`),
    `data.fields` (the mapping block is one key)."""

    path: str
    block: type  # the block class that declares it
    name: str  # the field name
    applies: str  # one of ROLES
    reason: str | None
    doc: str


def key_paths(cls: type = Spec, prefix: str = "") -> dict[str, KeyPath]:
    """Every key reachable from `cls` (a Spec by default), by dotted path, in schema order."""
    out: dict[str, KeyPath] = {}
    for name, f in schema_fields(cls).items():
        meta = f.metadata
        here = f"{prefix}{name}"
        if "block" not in meta or meta["mapping"]:
            out[here] = KeyPath(here, cls, name, meta["applies"], meta["reason"], meta["doc"])
        elif meta["kinds"]:
            for kind, kcls in meta["kinds"].items():
                out.update(key_paths(kcls, f"{here}.{kind}."))
        else:
            out.update(key_paths(meta["block"], f"{here}."))
    return out


def describe(f: Any) -> str:
    """A key's documentation with its role: `doc`, and for a key the runtime does not apply, who
    reads it and why (for key references and editor hovers)."""
    doc: str = f.metadata["doc"]
    applies = f.metadata.get("applies", "run")
    if applies == "run":
        return doc
    return f"{doc} ({applies}-only: {f.metadata['reason']})"


@record
class Complete:
    """A spec that checked clean, with every block present: what plans and runs read."""

    intent: Intent
    model: Model
    method: Any
    signal: Any
    data: Data
    train: Train
    eval: Eval
    budget: Budget


def complete(spec: Spec) -> Complete:
    """The typed view of a clean spec (optional blocks filled with their defaults)."""
    if spec.intent is None or spec.model is None or spec.method is None or spec.signal is None \
            or spec.data is None or spec.eval is None:
        raise ValueError("the spec is incomplete: check it first")
    return Complete(spec.intent, spec.model, spec.method, spec.signal, spec.data, spec.train or Train(),
                    spec.eval, spec.budget or Budget())


def merged_train(base: Train | None, stage: Train | None) -> Train:
    """An RLHF stage's `train` block over the spec's: keys the user wrote in the stage win."""
    if stage is None:
        return base if base is not None else Train()
    if base is None:
        return stage
    written = {name: getattr(stage, name) for name in schema_fields(Train) if stage.given(name)}
    return replace(base, **written)
