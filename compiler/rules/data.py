"""Data-aware rules (DOMAIN.md, 'Data rules' and 'Leakage'): they read the datasets a spec names.

They run unless `ftc check --no-data`. Each finding says how many rows, shows a few with file:line,
and says what to do. Refusals that guard evaluation (too little data, leakage) point at the spec's
data statement, so that they can be waived there with a written reason; the rows are related spans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.data.fields import input_fields, part_texts, row_text, target_field
from ftc.compiler.diagnostics import Related
from ftc.compiler.rules.base import ERROR, WARNING, Hit, rule
from ftc.compiler.source import Span

if TYPE_CHECKING:  # the analysis (and what it imports) loads only when data is read
    from ftc.compiler.data.analyze import DataReport
    from ftc.compiler.data.splits import Part
    from ftc.compiler.data.stats import PartStats

MIN_ROWS = 100  # DOMAIN.md: fewer than 100 labelled examples -> do not fine-tune
MIN_ROWS_FULL = 1000  # a full fine-tune under 1,000 -> refuse (PEFT sweet spot below)
SMALL_DATA = 10_000  # under 10,000 rows early stopping is mandatory
SHOW = 3  # examples shown per finding
IMBALANCE = 0.75  # majority share above which an accuracy gate is misleading
LENGTH_BIAS = 0.8  # share of pairs where chosen is longer than rejected


def _report(c: CheckedSpec) -> DataReport | None:
    report = c.data
    return report if report is not None and getattr(report, "parts", None) else None


def data_span(path: str, line: int | None, column: int = 1) -> Span:
    line = line or 1
    return Span(path, 0, 0, line, column, line, column)


def _decl(c: CheckedSpec, split: str) -> Span | None:
    data = c.spec.data
    if data is None:
        return None
    f: s.DataFile | None = getattr(data, split, None)
    if f is not None:
        return f.span
    if data.split is not None:
        return data.split.span
    return data.span


def _row_related(part: Part, indices: list[int], message: str) -> tuple[Related, ...]:
    return tuple(Related(data_span(part.paths[i], part.locations[i]), message) for i in indices[:SHOW])


def _excerpt(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


FILE_KINDS = {"missing", "empty", "binary", "encoding", "unreadable", "not_regular", "loop", "permission", "limit"}


def _file_level(p: Any) -> bool:
    """A problem with the whole file (it cannot be read at all) rather than with one row."""
    return p.line is None or getattr(p, "kind", "") in FILE_KINDS


@rule("FT200", "data-unreadable", ERROR, stage="data")
def data_unreadable(c: CheckedSpec) -> Iterator[Hit]:
    """A data file that cannot be read at all: empty, binary, a wrong encoding, a corrupt table.

    Why:
    A run must not start on data that cannot be read; ftc says which file and why instead of a
    traceback deep in a data loader.
    """
    report = c.data
    if report is None:
        return
    for p in report.problems:
        if _file_level(p):
            yield Hit(p.message, data_span(p.path, p.line, p.column), help=p.help)


@rule("FT201", "malformed-row", ERROR, stage="data")
def malformed_row(c: CheckedSpec) -> Iterator[Hit]:
    """A data row that breaks its contract: not parseable, a missing or empty field, a label that
    is not declared, a target that does not validate against the output schema, chat messages
    without an assistant turn, an unreadable image.

    Why:
    Tools that skip such rows silently train on less than the author thinks, or crash hours in.
    The contract comes from the signal and task (SFT pairs or chat, DPO triples, reward pairs,
    contrastive pairs, image + label or caption). The first rows of each file are shown; the rest
    are counted.
    """
    report = c.data
    if report is None:
        return
    rows = [p for p in report.problems if not _file_level(p)]
    described = Counter(p.path for p in rows)
    first: set[str] = set()
    for p in rows:
        total = report.bad_rows.get(p.path, 0)
        more = total - described[p.path] if p.path not in first else 0
        first.add(p.path)
        field = f" (field `{p.field}`)" if p.field and f"`{p.field}`" not in p.message else ""
        yield Hit(f"{p.message}{field}", data_span(p.path, p.line, p.column), help=p.help,
                  detail=f"{total} row(s) of {p.path} are unusable; {more} more not shown" if more > 0 else "")


@rule("FT202", "too-little-data", ERROR, guard=True, stage="data")
def too_little_data(c: CheckedSpec) -> Iterator[Hit]:
    """Fewer than 100 training examples.

    Why:
    Below 100 labelled examples fine-tuning overfits or learns noise. Use better prompting or
    retrieval, or collect (or synthesise and review) more data first.
    """
    report = _report(c)
    if report is None or "train" not in report.parts:
        return
    n = len(report.parts["train"])
    if n < MIN_ROWS:
        yield Hit(f"only {n} training examples (fewer than {MIN_ROWS})", _decl(c, "train"),
                  help="use prompting or retrieval instead, or collect at least 100 (ideally 1,000+) examples")


@rule("FT203", "too-little-for-full-finetune", ERROR, guard=True, stage="data")
def too_little_for_full(c: CheckedSpec) -> Iterator[Hit]:
    """A full fine-tune on fewer than 1,000 training examples.

    Why:
    With 100 to 1,000 examples PEFT (LoRA or adapters) is the sweet spot: updating every weight on
    so little data overfits and forgets. A full fine-tune pays off from about 10,000 examples.
    """
    report = _report(c)
    method = c.spec.method
    if report is None or method is None or method.kind != "full" or "train" not in report.parts:
        return
    n = len(report.parts["train"])
    if MIN_ROWS <= n < MIN_ROWS_FULL:
        yield Hit(f"a full fine-tune on {n} training examples (fewer than {MIN_ROWS_FULL:,})", method.kind_span,
                  help="use `method lora` (or adapters): 100–1,000 examples is the PEFT sweet spot")


def _eval_parts(report: DataReport) -> list[Part]:
    return [report.parts[n] for n in ("val", "test") if n in report.parts]


def _texts(c: CheckedSpec, part: Part) -> list[str]:
    """What leakage compares: the input text, or for images the hash of the image's bytes (the same
    path in two split folders can hold different images). Computed once per part (an evaluation
    part, held in memory; a streamed training part is compared through its stats)."""
    if part.texts is None:
        part.texts = part_texts(c.spec, part)
    return part.texts


def _stats(c: CheckedSpec, part: Part, stage: str | None = None) -> PartStats:
    from ftc.compiler.data.stats import stats_of

    return stats_of(c, part, stage)


def _near(c: CheckedSpec, train: Part, other: Part, threshold: float) -> list[Any]:
    """near_matches(train texts, other's texts): over the held texts, or for a streamed training
    part one more pass over its file for every evaluation part at once (remembered per threshold)."""
    from ftc.compiler.data import near

    if train.held:
        return near.near_matches(_texts(c, train), _texts(c, other), threshold)
    from ftc.compiler.data.stream import near_leaks

    memo: dict[int, list[Any]] = train.memo.setdefault(("near", threshold), {})
    if id(other) not in memo:
        report = c.data
        others = [p for p in (_eval_parts(report) if report is not None and report.parts else [])]
        others += [other] if all(p is not other for p in others) else []
        found = near_leaks(train, {str(id(p)): _texts(c, p) for p in others}, threshold, input_fields(c.spec))
        memo.update({id(p): found[str(id(p))] for p in others})
    return memo[id(other)]


def _leak_cached(c: CheckedSpec, kind: str, train: Part, other: Part, threshold: float) -> list[tuple[int, int, float]]:
    from ftc.compiler.data import cache

    key = cache.key_of(kind, train.sha256, other.sha256, threshold, input_fields(c.spec))
    hit = cache.load("leakage", key)
    if isinstance(hit, list):
        return [(int(q), int(r), float(j)) for q, r, j in hit]
    from ftc.compiler.data import near

    if kind == "exact":  # the training side as its text hashes (a streamed part holds no texts)
        found = near.exact_matches_hashed(*_stats(c, train).hashes(), _texts(c, other))
    else:
        found = _near(c, train, other, threshold)
    out = [(m.query, m.ref, m.jaccard) for m in found]
    cache.store("leakage", key, out)
    return out


def _leak_hit(c: CheckedSpec, what: str, train: Part, other: Part, pairs: list[tuple[int, int, float]],
              help_: str) -> Hit:
    examples = "; ".join(f"{other.where(q)} ~ {train.where(r)}" + (f" (Jaccard {j:.2f})" if j < 1 else "")
                         for q, r, j in pairs[:SHOW])
    related = tuple(Related(data_span(other.paths[q], other.locations[q]),
                            f"{what} of {train.where(r)}: {_excerpt(_texts_one(c, other, q))}")
                    for q, r, _ in pairs[:SHOW])
    return Hit(f"{len(pairs)} {other.name} row(s) are {what}s of training rows", _decl(c, other.name),
               detail=f"e.g. {examples}", help=help_, related=related)


def _texts_one(c: CheckedSpec, part: Part, i: int) -> str:
    return row_text(part.rows[i], input_fields(c.spec))


@rule("FT205", "leakage-exact", ERROR, guard=True, stage="data")
def leakage_exact(c: CheckedSpec) -> Iterator[Hit]:
    """Evaluation rows that are exact duplicates of training rows (after normalising case,
    whitespace, punctuation and Unicode).

    Why:
    An evaluation example that also sits in training makes validation look great while real
    performance collapses. Remove the duplicates from val/test (or from train). The files that
    gates evaluate on (`gate regression <= 0.02 vs base on "data/general.jsonl"`) are checked too:
    a general set that overlaps training overstates what the model kept.
    """
    report = _report(c)
    if report is None or "train" not in report.parts:
        return
    train = report.parts["train"]
    for other in _eval_parts(report):
        pairs = _leak_cached(c, "exact", train, other, 1.0)
        if pairs:
            yield _leak_hit(c, "exact duplicate", train, other, pairs,
                            f"remove these rows from {other.name} (or from train); `dedup exact` does not fix "
                            "leakage across files")
    from ftc.compiler.rules.evalsets import evalset_leaks

    yield from evalset_leaks(c)  # the files gates evaluate on (`on "data/general.jsonl"`)


@rule("FT206", "leakage-near", ERROR, guard=True, stage="data")
def leakage_near(c: CheckedSpec) -> Iterator[Hit]:
    """Evaluation rows that are near-duplicates of training rows (Jaccard similarity of word
    3-shingles at or above the spec's `dedup near` threshold, 0.85 by default; MinHash/LSH finds
    candidates and every pair is verified exactly).

    Why:
    A near copy of a test example in training (a changed word, a different greeting) leaks the
    answer just as an exact copy does.
    """
    report = _report(c)
    data = c.spec.data
    if report is None or data is None or "train" not in report.parts:
        return
    threshold = data.dedup.threshold if data.dedup is not None and data.dedup.threshold else 0.85
    train = report.parts["train"]
    for other in _eval_parts(report):
        exact = {q for q, _, _ in _leak_cached(c, "exact", train, other, 1.0)}
        pairs = [p for p in _leak_cached(c, "near", train, other, threshold) if p[0] not in exact]
        if pairs:
            yield _leak_hit(c, "near-duplicate", train, other, pairs,
                            f"remove these rows from {other.name}, or split `by group` so that related rows "
                            "stay together")


def _group_key(c: CheckedSpec) -> str | None:
    data = c.spec.data
    if data is None:
        return None
    if data.split is not None and data.split.by == "group":
        return None  # the split itself keeps groups together
    return data.group


@rule("FT207", "leakage-group", ERROR, guard=True, stage="data")
def leakage_group(c: CheckedSpec) -> Iterator[Hit]:
    """A group (a customer, a patient, a document) with rows in training and in evaluation.

    Why:
    Rows of one group share wording and answers: a model that saw the group in training is not
    being tested on new cases. Declare `group "field"` on pre-split data (checked here), or
    split `by group "field"` (which keeps groups together by construction).
    """
    report = _report(c)
    key = _group_key(c)
    if report is None or key is None or "train" not in report.parts:
        return
    from ftc.compiler.data.stats import first_in_train

    train = report.parts["train"]
    stats = _stats(c, train)
    for other in _eval_parts(report):
        firsts = first_in_train(stats, [r.get(key) for r in other.rows])
        shared = [(q, t) for q, t in enumerate(firsts) if t is not None]
        if shared:
            groups = sorted({str(other.rows[q].get(key)) for q, _ in shared})
            yield Hit(f"{len(groups)} `{key}` group(s) have rows in both train and {other.name}",
                      _decl(c, other.name),
                      detail="e.g. " + "; ".join(f"{key}={other.rows[q].get(key)!r}: {other.where(q)} and "
                                                 f"{train.where(t)}" for q, t in shared[:SHOW]),
                      help=f"move each group wholly into one split, or use `source` with `split ... by group \"{key}\"`",
                      related=_row_related(other, [q for q, _ in shared], f"`{key}` also in train"))


@rule("FT208", "leakage-time", ERROR, guard=True, stage="data")
def leakage_time(c: CheckedSpec) -> Iterator[Hit]:
    """Evaluation rows that are not strictly later than every training row, in a time-ordered task.

    Why:
    When time matters (forecasting, tickets, news), a model must be tested on the future it will
    face: an evaluation row older than training data leaks it. Declare `time "field"` on
    pre-split data, or split `by time "field"`.
    """
    report = _report(c)
    data = c.spec.data
    if report is None or data is None or "train" not in report.parts:
        return
    from ftc.compiler.data.splits import parse_time

    key = data.time or (data.split.key if data.split is not None and data.split.by == "time" else None)
    if key is None:
        return
    latest = _stats(c, report.parts["train"]).latest
    if latest is None:
        return
    for other in _eval_parts(report):
        early = [i for i, r in enumerate(other.rows) if (t := parse_time(r.get(key))) is not None and t <= latest]
        if early:
            yield Hit(f"{len(early)} {other.name} row(s) are not later than the latest training row", _decl(c, other.name),
                      detail="e.g. " + "; ".join(f"{other.where(i)} {key}={other.rows[i].get(key)!r}"
                                                 for i in early[:SHOW]),
                      help=f"evaluate on rows strictly after the training period, e.g. `split 80/10/10 by time \"{key}\"`",
                      related=_row_related(other, early, "earlier than the latest training row"))


@rule("FT209", "duplicates-in-train", WARNING, stage="data")
def duplicates_in_train(c: CheckedSpec) -> Iterator[Hit]:
    """Exact duplicates inside the training split, without `dedup` in the spec.

    Why:
    Duplicates over-weight some examples and waste compute; deduplicate aggressively. With
    `dedup exact` (or `near`) the run removes them.
    """
    report = _report(c)
    data = c.spec.data
    if report is None or data is None or "train" not in report.parts:
        return
    if data.dedup is not None and data.dedup.kind != "none":
        return
    from ftc.compiler.data import near

    train = report.parts["train"]
    dups = near.duplicates_hashed(*_stats(c, train).hashes())
    if dups:
        yield Hit(f"{len(dups)} training row(s) duplicate earlier ones", _decl(c, "train"),
                  detail="e.g. " + "; ".join(f"{train.where(a)} = {train.where(b)}" for a, b in dups[:SHOW]),
                  help="add `dedup exact` (or `dedup near 0.9`) to `data`, or remove them")


def _label_counts(c: CheckedSpec, part: Part) -> Counter[str]:
    """Rows per label (`str` of the target, None counted as "None"); empty without a target."""
    return Counter(_stats(c, part).labels) if target_field(c.spec) else Counter()


@rule("FT210", "class-imbalance", WARNING, stage="data")
def class_imbalance(c: CheckedSpec) -> Iterator[Hit]:
    """One class holds more than 75% of the training rows, and a gate uses accuracy.

    Why:
    A model that always predicts the majority class scores well on accuracy. Use class weights or
    resampling, and gate on F1 or AUC.
    """
    report, model, ev = _report(c), c.spec.model, c.spec.eval
    if report is None or model is None or ev is None or "train" not in report.parts:
        return
    if model.task not in ("classification", "image_classification"):
        return
    if not any(g.metric == "accuracy" for g in ev.gates):
        return
    stats = _stats(c, report.parts["train"])
    labels = _label_counts(c, report.parts["train"])
    labels["None"] -= stats.none_labels
    labels = +labels
    total = sum(labels.values())
    if not total:
        return
    top, count = labels.most_common(1)[0]
    if count / total > IMBALANCE:
        gate = next(g for g in ev.gates if g.metric == "accuracy")
        yield Hit(f"class `{top}` is {count / total:.0%} of training rows, and a gate uses accuracy", gate.span,
                  help="gate on `f1 macro` (or auc) instead of accuracy, and use class weights or resampling")


@rule("FT211", "degenerate-data", ERROR, stage="data")
def degenerate_data(c: CheckedSpec) -> Iterator[Hit]:
    """Training data with nothing to learn: every target identical, or every input identical.

    Why:
    A model trained to give one answer to everything, or to map one input to many answers, learns
    nothing useful; this is usually a broken export or a wrong field mapping.
    """
    report = _report(c)
    if report is None or "train" not in report.parts or len(report.parts["train"]) < 2:
        return
    stats = _stats(c, report.parts["train"])
    if target_field(c.spec) and stats.first_target is not None and not stats.targets_vary:
        yield Hit(f"every training target is the same: {_excerpt(stats.first_target)!r}", _decl(c, "train"),
                  help="check the `target` field mapping and the export")
    fields = input_fields(c.spec)
    if fields and stats.first_text is not None and not stats.texts_vary:
        named = " and ".join(f"`{f}`" for f in fields)
        yield Hit(f"every training input ({named}) is the same: {_excerpt(stats.first_text)!r}", _decl(c, "train"),
                  help=f"check the {named} field name(s) in the signal, the `fields` mapping, and the export")


def _pairs(c: CheckedSpec, report: DataReport) -> Iterator[tuple[Part, str, str, PartStats]]:
    """Each part holding preference pairs, its chosen and rejected fields, and its stats."""
    sig = c.spec.signal
    if sig is None:
        return
    if sig.kind == "dpo":
        for part in report.parts.values():
            yield part, sig.chosen, sig.rejected, _pair_stats(c, part, None, (sig.chosen, sig.rejected))
    elif sig.kind == "rlhf" and sig.reward is not None:  # the stage's own data, else the spec's
        stage = "reward" if report.stages.get("reward") else None
        fields = (sig.reward.chosen, sig.reward.rejected)
        for part in (report.stages.get("reward") or report.parts).values():
            yield part, sig.reward.chosen, sig.reward.rejected, _pair_stats(c, part, stage, fields)


def _pair_stats(c: CheckedSpec, part: Part, stage: str | None, fields: tuple[str, str]) -> PartStats:
    stats = _stats(c, part, stage)
    if stats.wants.pref != fields:  # gathered for other fields: count these from the rows
        from ftc.compiler.data.stats import PartStats, Wants

        stats = PartStats(Wants(pref=fields), train=False)
        stats.feed(part.rows)
    return stats


@rule("FT212", "preference-identical", ERROR, stage="data")
def preference_identical(c: CheckedSpec) -> Iterator[Hit]:
    """Preference pairs whose chosen and rejected answers are identical.

    Why:
    An identical pair carries no preference: the loss pushes the same text up and down.
    """
    report = _report(c)
    if report is None:
        return
    for part, chosen, rejected, stats in _pairs(c, report):
        same = stats.identical.first
        if same:
            yield Hit(f"{stats.identical.count} {part.name} pair(s) have identical `{chosen}` and `{rejected}`",
                      data_span(part.paths[same[0]], part.locations[same[0]]),
                      detail="e.g. " + "; ".join(part.where(i) for i in same[:SHOW]),
                      help="remove these rows or fix the export")


@rule("FT213", "preference-length-bias", WARNING, stage="data")
def preference_length_bias(c: CheckedSpec) -> Iterator[Hit]:
    """Chosen answers are longer than rejected ones in more than 80% of the pairs.

    Why:
    The model learns "longer is better" rather than the preference; balance the lengths or check
    that chosen and rejected are not swapped.
    """
    report = _report(c)
    if report is None:
        return
    for part, chosen, rejected, stats in _pairs(c, report):
        if stats.differing < 20:
            continue
        longer = stats.longer / stats.differing
        shorter = stats.shorter / stats.differing
        if longer > LENGTH_BIAS or shorter > LENGTH_BIAS:
            which = "longer" if longer > LENGTH_BIAS else "shorter"
            yield Hit(f"`{chosen}` is {which} than `{rejected}` in {max(longer, shorter):.0%} of {part.name} pairs",
                      _decl(c, part.name) if part.name in ("train", "val", "test") else None,
                      help="balance lengths, or check that chosen and rejected are not swapped")


@rule("FT214", "private-data", WARNING, stage="data")
def private_data(c: CheckedSpec) -> Iterator[Hit]:
    """E-mail addresses, phone numbers, card numbers or IP addresses in training text.

    Why:
    Data must be reviewed for private content before training: a model can repeat what it was
    trained on. Examples are shown masked.
    """
    report = _report(c)
    if report is None or "train" not in report.parts:
        return
    train = report.parts["train"]
    found = _stats(c, train).pii
    if found is not None and found.rows:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(found.counts.items()))
        yield Hit(f"{found.rows} training row(s) contain private data ({counts})", _decl(c, "train"),
                  detail="e.g. " + "; ".join(f"{train.where(i)}: {kind} {masked}" for i, kind, masked in found.examples),
                  help="remove or mask private data before training (or confirm it is synthetic)")


def _token_counter(c: CheckedSpec) -> tuple[Any, str]:
    from ftc.compiler.data.stats import token_counter

    return token_counter(c)


@rule("FT215", "over-length", WARNING, stage="data")
def over_length(c: CheckedSpec) -> Iterator[Hit]:
    """Examples longer than `max_length`, which the run truncates or drops (per the spec's policy).

    Why:
    Truncation can cut off the answer the model should learn; dropping loses data. The share per
    split is estimated at ~4 characters per token (exact with `--tokenize` and a local tokenizer).
    """
    report, data = _report(c), c.spec.data
    if report is None or data is None or data.max_length is None:
        return
    limit = data.max_length.tokens
    _, how = _token_counter(c)
    for part in report.parts.values():
        over = _stats(c, part).over_length
        if over.count:
            share = over.count / len(part)
            verb = "truncated" if data.max_length.policy == "truncate" else "dropped"
            yield Hit(f"{over.count} {part.name} row(s) ({share:.0%}) exceed max_length {limit} and will be {verb} "
                      f"({how})",
                      data.max_length.span, detail="e.g. " + "; ".join(part.where(i) for i in over.first[:SHOW]),
                      help="raise `max_length`, shorten the examples, or choose `drop`/`truncate` deliberately")


@rule("FT216", "vision-data", WARNING, stage="data")
def vision_data(c: CheckedSpec) -> Iterator[Hit]:
    """Image data problems that do not stop a run: classes with fewer than 5 training images,
    mixed image sizes or colour modes.

    Why:
    A class with a handful of images cannot be learned or evaluated; mixed sizes and modes are
    resized and converted at run time, which is worth knowing before training.
    """
    report, model = _report(c), c.spec.model
    if report is None or model is None or model.modality == "text" or "train" not in report.parts:
        return
    train = report.parts["train"]
    stats = _stats(c, train)
    if model.task == "image_classification":
        counts = _label_counts(c, train)
        few = sorted(k for k in (model.labels or ()) if counts.get(k, 0) < 5)
        if few:
            yield Hit(f"class(es) with fewer than 5 training images: {', '.join(few)}", _decl(c, "train"),
                      help="add images to these classes or merge them")
    sizes, modes = stats.sizes, stats.modes
    varies = ([f"{len(sizes)} sizes"] if len(sizes) > 1 else []) + (
        [f"{len(modes)} colour modes ({', '.join(sorted(map(str, modes)))})"] if len(modes) > 1 else [])
    if varies:
        yield Hit(f"training images vary: {' and '.join(varies)}", _decl(c, "train"),
                  help="images are resized and converted to RGB at run time; check that is intended")


@rule("FT217", "no-early-stopping-small-data", ERROR, stage="data")
def no_early_stopping_small_data(c: CheckedSpec) -> Iterator[Hit]:
    """No early stopping on fewer than 10,000 training rows.

    Why:
    Early stopping is mandatory in small-data regimes: the model overfits within a few epochs.
    """
    report, tr = _report(c), c.spec.train
    if report is None or tr is None or tr.early_stopping is not None or "train" not in report.parts:
        return
    n = len(report.parts["train"])
    if n < SMALL_DATA:
        yield Hit(f"no early stopping with {n:,} training rows (under {SMALL_DATA:,})", tr.span or _decl(c, "train"),
                  help="add `early_stopping patience 2 on val.loss` to `train`")


@rule("FT218", "slice-empty", ERROR, stage="data")
def slice_empty(c: CheckedSpec) -> Iterator[Hit]:
    """A slice that a gate uses matches no rows of the gated split.

    Why:
    A gate on an empty slice cannot be evaluated: it would pass or fail on nothing. Usually the
    filter's field name or value is misspelt.
    """
    report, data, ev = _report(c), c.spec.data, c.spec.eval
    if report is None or data is None or ev is None:
        return
    slices = {sl.name: sl for sl in data.slices}
    for g in ev.gates:
        if g.slice is None or g.slice not in slices:
            continue
        part = report.parts.get(g.split or "test")
        if part is None:
            continue
        sl = slices[g.slice]
        n = _stats(c, part).slices[sl.name]
        if n == 0:
            yield Hit(f"slice `{sl.name}` matches no {part.name} rows, so `{g.metric}` on it cannot be measured",
                      sl.span, help="check the filter's field name and value against the data")


@rule("FT219", "label-unseen", WARNING, stage="data")
def label_unseen(c: CheckedSpec) -> Iterator[Hit]:
    """A declared label with no training examples.

    Why:
    A class the model never sees in training is never predicted; either the label set or the data
    is wrong.
    """
    report, model = _report(c), c.spec.model
    if report is None or model is None or not model.labels or "train" not in report.parts:
        return
    seen = set(_label_counts(c, report.parts["train"]))
    unseen = [lab for lab in model.labels if lab not in seen]
    if unseen and seen:
        yield Hit(f"label(s) with no training examples: {', '.join(unseen)}", model.at("labels"),
                  help="add examples of these classes, or remove them from `labels`")


@rule("FT220", "empty-split", ERROR, stage="data")
def empty_split(c: CheckedSpec) -> Iterator[Hit]:
    """A split that holds no rows once the data is read and split.

    Why:
    An empty validation or test split measures nothing. It happens with tiny sources, ratios like
    `98/1/1`, or a time split whose timestamps are nearly all equal.
    """
    report = _report(c)
    if report is None:
        return
    for name, part in report.parts.items():
        if not len(part):
            yield Hit(f"the {name} split is empty", _decl(c, name),
                      help="check the file, the split ratios, or (for `by time`) that timestamps vary")
