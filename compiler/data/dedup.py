"""Deduplication of a training split as the spec's `dedup` asks (`exact`, or `near 0.85`).

One computation for both sides: `ftc run` removes rows with `dedup_part` (runtime/executor.py
calls it for the plan's `dedup` node), and the plan can size training with `deduplicated_train`, which
applies the same function to the split `ftc check` read. No torch: numpy through near.py.

What counts as a duplicate is what FT209 warns about (compiler/data/fields.py `part_texts`): the
signal's input fields after normalisation (case, whitespace, punctuation, Unicode), an image by the
hash of its bytes. `exact` drops every row whose text equals an earlier row's; `near` also drops
rows whose word 3-shingle Jaccard similarity with an earlier kept row reaches the threshold. The
first occurrence is kept, and the kept rows stay in their order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftc.compiler.data.fields import part_texts
from ftc.compiler.data.splits import Part, content_hash

if TYPE_CHECKING:
    from ftc.compiler import schema as s
    from ftc.compiler.checked import CheckedSpec

NEAR_THRESHOLD = 0.85  # `dedup near` without a number
_LEAF = 64  # rows compared pairwise; larger sets are halved (see _near_within)


def duplicate_rows(texts: list[str], kind: str, threshold: float | None) -> set[int]:
    """Indices of the rows `dedup kind` removes: later exact duplicates, and for `near` also the
    rows near-duplicating an earlier kept row. `kind` "none" removes nothing."""
    from ftc.compiler.data.near import duplicates_within

    if kind == "none":
        return set()
    drop = {later for later, _ in duplicates_within(texts)}
    if kind == "near":
        drop |= _near_within(texts, threshold or NEAR_THRESHOLD)
    return drop


def _shingles(text: str) -> set[tuple[str, ...]]:
    from ftc.compiler.data.normalize import normalize

    words = normalize(text).split()
    return {tuple(words[j:j + 3]) for j in range(len(words) - 2)} if len(words) >= 3 else {(w,) for w in words}


def _near_within(texts: list[str], threshold: float) -> set[int]:
    """Indices of rows that near-duplicate an earlier kept row: halves are deduplicated
    recursively, then the second half is matched against the first (first occurrence wins)."""
    from ftc.compiler.data.near import near_matches

    def leaf(idx: list[int]) -> list[int]:
        kept: list[tuple[int, set[tuple[str, ...]]]] = []
        for i in idx:
            sh = _shingles(texts[i])
            if not any(sh and k and len(sh & k) / len(sh | k) >= threshold for _, k in kept):
                kept.append((i, sh))
        return [i for i, _ in kept]

    def solve(idx: list[int]) -> list[int]:
        if len(idx) <= _LEAF:
            return leaf(idx)
        mid = len(idx) // 2
        left, right = solve(idx[:mid]), solve(idx[mid:])
        matches = near_matches([texts[i] for i in left], [texts[i] for i in right], threshold)
        dropped = {m.query for m in matches}
        return left + [r for j, r in enumerate(right) if j not in dropped]

    kept = set(solve(list(range(len(texts)))))
    return set(range(len(texts))) - kept


def dedup_part(c: CheckedSpec, part: Part, kind: str, threshold: float | None,
               stage: str | None = None) -> tuple[Part, int]:
    """`part` without the rows `dedup kind [threshold]` removes, and how many it removed (the same
    Part when none). `stage` "reward": the rows are an RLHF reward stage's own data, keyed on that
    stage's prompt field."""
    texts = part_texts(c.spec, part, stage)
    drop = duplicate_rows(texts, kind, threshold)
    if not drop:
        return part, 0
    keep = [i for i in range(len(part.rows)) if i not in drop]
    out = Part(part.name, [part.rows[i] for i in keep], [part.paths[i] for i in keep],
               [part.locations[i] for i in keep], part.location_kind, image_sha256=part.image_sha256)
    out.sha256 = content_hash(out.rows)
    if stage is None:
        out.texts = [texts[i] for i in keep]
    return out, len(drop)


def deduplicated_train(c: CheckedSpec, stage: str | None = None) -> Part | None:
    """The training split after the spec's `dedup`, exactly as `ftc run` removes rows: the train
    part itself when there is no `dedup` (or nothing to remove), None when the spec (or the RLHF
    reward stage, with `stage` "reward") has no data or no train split. The rows are those `ftc
    check` read; a check restored from the cache kept none, so they are read again here."""
    data = _data_of(c, stage)
    if data is None:
        return None
    train = _parts_of(c, stage).get("train")
    if train is None:
        return None
    if data.dedup is None or data.dedup.kind == "none":
        return train
    kept, _ = dedup_part(c, train, data.dedup.kind, data.dedup.threshold, stage)
    return kept


def _data_of(c: CheckedSpec, stage: str | None) -> s.Data | None:
    spec = c.spec
    if stage is None:
        return spec.data
    sig = spec.signal
    node = getattr(sig, stage, None) if sig is not None and sig.kind == "rlhf" else None
    return node.data if node is not None else None


def _parts_of(c: CheckedSpec, stage: str | None) -> dict[str, Part]:
    report = c.data
    if report is None or not report.parts:
        from ftc.compiler.data.analyze import analyze

        report = analyze(c)
    return report.parts if stage is None else report.stages.get(stage, {})
