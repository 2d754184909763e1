"""Run-time deduplication of the training split, as the spec's `dedup` asks (exact or near)."""

from __future__ import annotations

from typing import Any

from ftc.compiler.data.fields import input_fields, row_text
from ftc.compiler.data.splits import Part, content_hash


def _near_within(texts: list[str], threshold: float) -> set[int]:
    """Indices of rows that near-duplicate an earlier kept row: halves are deduplicated
    recursively, then the second half is matched against the first (first occurrence wins)."""
    from ftc.compiler.data.near import near_matches
    from ftc.compiler.data.normalize import normalize

    def shingles(i: int) -> set[tuple[str, ...]]:
        words = normalize(texts[i]).split()
        return {tuple(words[j:j + 3]) for j in range(len(words) - 2)} if len(words) >= 3 else {(w,) for w in words}

    def leaf(idx: list[int]) -> list[int]:
        kept: list[tuple[int, set[tuple[str, ...]]]] = []
        for i in idx:
            sh = shingles(i)
            if not any(sh and k and len(sh & k) / len(sh | k) >= threshold for _, k in kept):
                kept.append((i, sh))
        return [i for i, _ in kept]

    def solve(idx: list[int]) -> list[int]:
        if len(idx) <= 64:
            return leaf(idx)
        mid = len(idx) // 2
        left, right = solve(idx[:mid]), solve(idx[mid:])
        matches = near_matches([texts[i] for i in left], [texts[i] for i in right], threshold)
        dropped = {m.query for m in matches}
        return left + [r for j, r in enumerate(right) if j not in dropped]

    kept = set(solve(list(range(len(texts)))))
    return set(range(len(texts))) - kept


def dedup_part(checked: Any, part: Part, kind: str, threshold: float | None) -> tuple[Part, int]:
    from ftc.compiler.data.near import duplicates_within

    texts = [row_text(r, input_fields(checked.spec)) for r in part.rows]
    drop = {later for later, _ in duplicates_within(texts)}
    if kind == "near":
        drop |= _near_within(texts, threshold or 0.85)
    if not drop:
        return part, 0
    keep = [i for i in range(len(part.rows)) if i not in drop]
    out = Part(part.name, [part.rows[i] for i in keep], [part.paths[i] for i in keep],
               [part.locations[i] for i in keep], part.location_kind, image_sha256=part.image_sha256)
    out.sha256 = content_hash(out.rows)
    return out, len(drop)
