"""Run-time deduplication of the training split, as the spec's `dedup` asks (exact or near).

The work is the compiler's (compiler/data/dedup.py `dedup_part`): the plan sizes training with the
same function, so what it counts and what the run removes cannot differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftc.compiler.data import dedup

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec
    from ftc.compiler.data.splits import Part


def dedup_part(checked: CheckedSpec, part: Part, kind: str, threshold: float | None) -> tuple[Part, int]:
    """The training part without the rows `dedup kind [threshold]` removes, and their count."""
    return dedup.dedup_part(checked, part, kind, threshold)
