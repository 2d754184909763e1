"""No way to measure success, no training (DOMAIN.md, 'Other refusals' and 'Evaluation and gates')."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.rules.base import ERROR, WARNING, Hit, related, rule


@rule("FT110", "no-test-split", ERROR, guard=True)
def no_test_split(c: CheckedSpec) -> Iterator[Hit]:
    """Refuses a spec without a held-out test split.

    Why:
    Without a held-out test set there is no way to measure success, and a model that only looks
    good on its own training data ships. Declare a `test` file or a three-way `split`.

    Example:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300 }
        eval { metric f1 macro; gate f1 >= 0.85 on val }

    Use instead:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300 }
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    data = c.spec.data
    if data is None or "test" in data.split_names():
        return
    if data.split is not None:
        yield Hit(f"`split` has {len(data.split.ratios)} parts: there is no held-out test split", data.split.span,
                  help="give three parts, train/val/test, e.g. `split 80/10/10`")
    else:
        yield Hit("no held-out test split: success cannot be measured", data.span,
                  help='add `test "data/test.jsonl"`, or use `source ...` with `split 80/10/10`')


@rule("FT111", "no-metric", ERROR, guard=True)
def no_metric(c: CheckedSpec) -> Iterator[Hit]:
    """Refuses a spec whose `eval` block computes no metric.

    Why:
    No metric means no way to measure success: do not train.

    Example:
        eval { gate f1 >= 0.85 on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate latency.p95 <= 50ms }
    """
    ev = c.spec.eval
    if ev is not None and not ev.metrics:
        yield Hit("`eval` computes no metric", ev.span, help="add a metric, e.g. `metric f1 macro` or `metric accuracy`")


@rule("FT112", "no-gate", ERROR, guard=True)
def no_gate(c: CheckedSpec) -> Iterator[Hit]:
    """Refuses a spec whose `eval` block has no quality gate.

    Why:
    A model ships only if its gates pass. Without a gate on a task metric, nothing decides
    whether the trained model is better than what it replaces.

    Example:
        eval { metric f1 macro }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    ev = c.spec.eval
    if ev is None:
        return
    quality = [g for g in ev.gates if g.metric not in ("latency",)]
    if not quality:
        yield Hit("`eval` has no gate on a quality metric: nothing decides whether the model ships", ev.span,
                  help="add a gate, e.g. `gate f1 >= 0.85 on test`")


def _metric_names(ev: s.Eval) -> set[str]:
    return {m.name for m in ev.metrics}


@rule("FT113", "gate-metric-not-computed", ERROR)
def gate_metric_not_computed(c: CheckedSpec) -> Iterator[Hit]:
    """A gate on a metric that the `eval` block never computes.

    Why:
    A gate whose metric is never computed can never pass (or, in tools that skip it, always
    passes). Declare the metric, or gate on one that is declared.

    Example:
        eval { metric f1 macro; gate accuracy >= 0.85 on test }

    Use instead:
        eval { metric f1 macro; metric accuracy; gate accuracy >= 0.85 on test }
    """
    ev = c.spec.eval
    if ev is None:
        return
    names = _metric_names(ev)
    if not names:
        return  # FT111 (no metric) says it once
    for g in ev.gates:
        if g.metric == "latency":
            if g.qualifier not in s.LATENCY:
                yield Hit(f"`latency.{g.qualifier or ''}` is not a latency measure", g.metric_span,
                          help="gate on latency.p50, latency.p95 or latency.p99")
        elif g.metric == "regression":
            if g.qualifier is not None and g.qualifier not in names and g.qualifier != "loss":
                yield Hit(f"`regression.{g.qualifier}` compares a metric that is never computed", g.metric_span,
                          help=f"add `metric {g.qualifier}` or gate on `regression` (loss)")
        elif g.metric not in s.METRICS:
            yield Hit(f"`{g.metric}` is not a metric ftc computes", g.metric_span,
                      help=f"gate on one of the metrics `eval` declares ({', '.join(f'`{n}`' for n in sorted(names))}), "
                           "`latency.p95` or `regression`")
        elif g.metric not in names:
            known = ", ".join(f"`{n}`" for n in sorted(names)) or "none"
            yield Hit(f"gate on `{g.metric}`, which `eval` never computes", g.metric_span,
                      help=f"add `metric {g.metric}` to `eval` (computed now: {known})")
        else:
            yield from _qualifier(ev, g)


def _qualifier(ev: s.Eval, g: s.Gate) -> Iterator[Hit]:
    if g.qualifier is None:
        return
    averages = {m.average for m in ev.metrics if m.name == g.metric}
    if g.qualifier not in averages:
        yield Hit(f"gate on `{g.metric}.{g.qualifier}`, but `{g.metric}` is computed as "
                  f"{', '.join(sorted(a or 'plain' for a in averages))}", g.metric_span,
                  help=f"add `metric {g.metric} {g.qualifier}` or gate on `{g.metric}`")


@rule("FT114", "gate-unknown-slice", ERROR)
def gate_unknown_slice(c: CheckedSpec) -> Iterator[Hit]:
    """A gate on a slice that `data` does not define.

    Why:
    Slice gates guard hard cases (a channel, a language, a customer tier); a misspelt slice name
    would make the gate meaningless.

    Example:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300 }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.email }

    Use instead:
        data {
          train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300
          slice email where channel == "email"
        }
        eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.email }
    """
    ev, data = c.spec.eval, c.spec.data
    if ev is None or data is None:
        return
    slices = {sl.name for sl in data.slices}
    for g in ev.gates:
        if g.slice is not None and g.slice not in slices:
            from ftc.compiler.types import suggest
            yield Hit(f"gate on slice `{g.slice}`, which `data` does not define", g.span,
                      help=f"{suggest(g.slice, sorted(slices))}define it in `data`: "
                           f"`slice {g.slice} where field == \"value\"`")


@rule("FT115", "gate-unknown-split", ERROR)
def gate_unknown_split(c: CheckedSpec) -> Iterator[Hit]:
    """A gate on a split that the data does not have, or on the training split.

    Why:
    Gates must be measured on held-out data. A gate `on train` measures memorisation; a gate on a
    split that does not exist can never be evaluated.

    Example:
        eval { metric f1 macro; gate f1 >= 0.85 on train }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    ev, data = c.spec.eval, c.spec.data
    if ev is None or data is None:
        return
    splits = set(data.split_names())
    for g in ev.gates:
        if g.split is None:
            continue
        if g.split == "train":
            yield Hit("a gate on the training split measures memorisation, not quality", g.span,
                      help="gate on held-out data: `on test` (or `on val`)")
        elif g.split not in splits:
            have = ", ".join(f"`{x}`" for x in sorted(splits)) or "none"
            yield Hit(f"gate on split `{g.split}`, which the data does not have", g.span,
                      help=f"gate on one of: {have}")


@rule("FT116", "gate-threshold-impossible", ERROR)
def gate_threshold_impossible(c: CheckedSpec) -> Iterator[Hit]:
    """A gate threshold outside the range of its metric (a rate above 1, a negative latency).

    Why:
    Such a gate either always fails or always passes, so it decides nothing. Rates are written
    as fractions (0.85) or percentages (85%). A gate written `vs base` reads the difference
    tuned - base, which may be negative but, for a rate, lies between -1 and 1.

    Example:
        eval { metric f1 macro; gate f1 >= 85 on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    ev = c.spec.eval
    if ev is None:
        return
    for g in ev.gates:
        delta = g.versus is not None and g.metric != "regression"
        if g.metric in s.HIGHER_IS_BETTER and delta and not -1 <= g.threshold <= 1:
            yield Hit(f"`{g.metric}` lies between 0 and 1, so its difference from the base lies between -1 and 1; "
                      f"the threshold `{g.threshold_text}` is outside it", g.span,
                      help=f"write the difference as a fraction (`{g.metric} >= 0.05 vs base`) or a percentage (`5%`)")
        elif g.metric in s.HIGHER_IS_BETTER and not delta and not 0 <= g.threshold <= 1:
            yield Hit(f"`{g.metric}` lies between 0 and 1; the threshold `{g.threshold_text}` is outside it",
                      g.span, help=f"write the threshold as a fraction (`{g.metric} >= 0.85`) or a percentage (`85%`)")
        elif g.threshold < 0 and not delta and g.metric not in s.UNBOUNDED_HIGHER:
            yield Hit(f"the threshold `{g.threshold_text}` is negative", g.span, help="give a non-negative threshold")


@rule("FT117", "gate-wrong-direction", WARNING)
def gate_wrong_direction(c: CheckedSpec) -> Iterator[Hit]:
    """A gate that lets a worse model pass: an upper bound on a higher-is-better metric, or the reverse.

    Why:
    `gate f1 <= 0.9` passes every model worse than 0.9. This is nearly always a flipped operator.

    Example:
        eval { metric f1 macro; gate f1 <= 0.85 on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """
    ev = c.spec.eval
    if ev is None:
        return
    for g in ev.gates:
        higher = g.metric in s.HIGHER_IS_BETTER or g.metric in s.UNBOUNDED_HIGHER
        lower = g.metric in ("latency", "loss", "perplexity", "regression")
        if (higher and g.op in ("<", "<=")) or (lower and g.op in (">", ">=")):
            want = ">=" if higher else "<="
            yield Hit(f"`{g.metric} {g.op} {g.threshold_text}` lets a worse model pass", g.span,
                      help=f"write `{g.metric} {want} {g.threshold_text}`")
        elif g.op in ("==", "!="):
            yield Hit(f"`{g.op}` on a measured metric almost never holds as intended", g.span,
                      help="gate with >= or <=")


@rule("FT171", "gate-versus-model", ERROR)
def gate_versus_model(c: CheckedSpec) -> Iterator[Hit]:
    """A gate that compares with a model other than the base (`vs "models/previous"`).

    Why:
    ftc evaluates two models in a run, the base and the tuned one, so `vs` can only name `base`:
    a gate against another model would be decided without that model ever being evaluated.
    To compare with a previous fine-tune, make it the base of this spec, or compare two runs
    with `ftc runs diff`.

    Example:
        eval { metric f1 macro; gate f1 >= 0.02 vs "models/triage-v1" on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.02 vs base on test }
    """
    ev = c.spec.eval
    if ev is None:
        return
    for g in ev.gates:
        if g.versus is not None and g.versus != "base":
            yield Hit(f'`vs "{g.versus}"`: ftc compares a tuned model only with its base', g.span,
                      help="write `vs base`, or compare two runs with `ftc runs diff RUN RUN`")


@rule("FT118", "data-source-conflict", ERROR)
def data_source_conflict(c: CheckedSpec) -> Iterator[Hit]:
    """Data declared twice: pre-split files and a `source` to split, or a `split` without a `source`.

    Why:
    Which rows train and which evaluate must be unambiguous, or the split cannot be reproduced.

    Example:
        data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300; split 80/10/10 }

    Use instead:
        data { source "data/all.jsonl" rows 2600; split 80/10/10 by random }
    """
    data = c.spec.data
    if data is None:
        return
    files = [n for n in ("train", "val", "test") if getattr(data, n) is not None]
    if data.source is not None and files:
        yield Hit(f"`source` and pre-split files ({', '.join(files)}) are both given", data.at("source"),
                  help="use either pre-split `train`/`val`/`test` files, or one `source` with `split`",
                  related=related(data.at(files[0]), "pre-split file here"))
    elif data.split is not None and data.source is None:
        yield Hit("`split` divides a `source`, but no `source` is given", data.split.span,
                  help='add `source "data/all.jsonl"`, or drop `split` and give train/val/test files')
    elif data.source is not None and data.split is None:
        yield Hit("`source` needs a `split` to make train/val/test", data.at("source"),
                  help="add `split 80/10/10` (optionally `by group \"field\"` or `by time \"field\"`)")
    elif data.stratify is not None and data.split is None:
        yield Hit("`stratify` applies to a `split`, and the data is pre-split", data.at("stratify"),
                  help="remove `stratify`, or use `source` with `split` and `stratify`")
    elif data.source is None and data.train is None:
        yield Hit("no training data: give `train` (with `val`/`test`) or a `source` with `split`", data.span,
                  help='add `train "data/train.jsonl"`')


def _used_fields(c: CheckedSpec) -> set[str]:
    spec = c.spec
    used: set[str] = set()
    sig = spec.signal
    if sig is not None:
        for name in ("input", "target", "messages", "prompt", "chosen", "rejected", "anchor", "positive",
                     "negative", "image", "caption"):
            value = getattr(sig, name, None)
            if isinstance(value, str):
                used.add(value)
    data = spec.data
    if data is not None:
        used.update(cond.field for sl in data.slices for cond in sl.conditions)
        if data.split is not None and data.split.key:
            used.add(data.split.key)
        if data.stratify:
            used.add(data.stratify)
    return used


@rule("FT119", "unused-field-mapping", WARNING)
def unused_field_mapping(c: CheckedSpec) -> Iterator[Hit]:
    """A `fields` mapping that nothing in the spec uses.

    Why:
    `fields { text "body" }` renames the data's `body` column to `text` for this spec. A mapped name
    that no signal field, slice, split key or stratify field uses does nothing: usually a typo on
    one side.

    Example:
        data {
          train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300
          fields { txt "body" }
        }

    Use instead:
        data {
          train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; test "data/test.jsonl" rows 300
          fields { text "body" }
        }
    """
    data = c.spec.data
    if data is None or data.fields is None:
        return
    used = _used_fields(c)
    for name in data.fields.mapping:
        if name not in used:
            from ftc.compiler.types import suggest
            yield Hit(f"the mapped field `{name}` is not used by the signal, a slice or the split", data.fields.at(name),
                      help=f"{suggest(name, sorted(used))}name a field that the spec uses, or remove the mapping")
