"""Data files that gates evaluate on (`gate regression <= 0.02 vs base on "data/general.jsonl"`).

`ftc check` reads them as `ftc run` does (compiler/data/analyze.py `_evalsets`): a missing file is
FT180's finding, an unreadable one FT200's, rows that break the signal's contract FT201's (those
rules read the same report), and rows copied from training FT205's (`evalset_leaks`, called by
that rule). This module adds what only an evaluation file needs: enough rows to measure anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.compiler.checked import CheckedSpec
from ftc.compiler.diagnostics import Related
from ftc.compiler.rules import data as d
from ftc.compiler.rules.base import WARNING, Hit, rule

if TYPE_CHECKING:
    from ftc.compiler.data.analyze import EvalSet

MIN_EVAL_ROWS = 30  # below this a difference of a few points is noise


def evalsets(c: CheckedSpec) -> list[EvalSet]:
    """The gate files read with the data (none under `--no-data`, or when the check was cached)."""
    report = c.data
    found: dict[str, EvalSet] = getattr(report, "evalsets", None) or {}
    return list(found.values())


@rule("FT221", "eval-file-too-small", WARNING, stage="data")
def eval_file_too_small(c: CheckedSpec) -> Iterator[Hit]:
    """A data file that a gate evaluates on holds fewer than 30 usable rows.

    Why:
    A regression or general-capability gate (`gate regression <= 0.02 vs base on
    "data/general.jsonl"`) compares two scores on that file. On a handful of rows one example
    moves the score by several points, so the gate passes or fails by chance and the run that
    pays for it measures noise. Rows that break the signal's contract (FT201) do not count.
    """
    for ev in evalsets(c):
        if 0 < ev.usable < MIN_EVAL_ROWS:
            step = 1 / ev.usable
            yield Hit(f"`{ev.dataset}` holds only {ev.usable} usable row(s) to evaluate on (fewer than "
                      f"{MIN_EVAL_ROWS})", ev.span,
                      detail=f"one row moves a score on it by {step:.0%}",
                      help=f"evaluate on at least {MIN_EVAL_ROWS} rows (a few hundred to resolve a difference "
                           "of a point or two)")


def evalset_leaks(c: CheckedSpec) -> Iterator[Hit]:
    """FT205 for gate files: rows of a file a gate evaluates on that copy training rows (after
    the same normalisation). A general set that overlaps training overstates what the model kept."""
    report = c.data
    parts = getattr(report, "parts", None)
    if not parts or "train" not in parts:
        return
    train = parts["train"]
    for ev in evalsets(c):
        other = ev.part
        if not len(other):
            continue
        pairs = d._leak_cached(c, "exact", train, other, 1.0)
        if not pairs:
            continue
        examples = "; ".join(f"{other.where(q)} ~ {train.where(r)}" for q, r, _ in pairs[:d.SHOW])
        related = tuple(Related(d.data_span(other.paths[q], other.locations[q]),
                                  f"exact duplicate of {train.where(r)}: {d._excerpt(d._texts_one(c, other, q))}")
                        for q, r, _ in pairs[:d.SHOW])
        yield Hit(f"{len(pairs)} row(s) of `{ev.dataset}` are exact duplicates of training rows", ev.span,
                  detail=f"e.g. {examples}",
                  help="remove these rows from the evaluation file (or from train): a gate on rows the model "
                       "trained on overstates what it kept",
                  related=related)
