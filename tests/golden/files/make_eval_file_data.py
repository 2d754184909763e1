"""Write the data of the golden cases about files that gates evaluate on (`data_eval_file_*/`).

    .venv/bin/python tests/golden/files/make_eval_file_data.py

Each case has the same clean splits as make_data.py (100 train, 10 val, 15 test) and a
`general.jsonl` that `gate regression <= 0.02 vs base on "..."` evaluates on; only that file
differs between cases. Deterministic (seeded), like make_data.py, whose helpers it uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_data import HERE, Row, jsonl_case, rows, splits, write_jsonl  # noqa: E402

GENERAL = 40  # enough rows to measure on (FT221 wants 30)


def _case(name: str, general: list[Row] | None) -> None:
    train, val, test = splits()
    jsonl_case(name, train, val, test)
    if general is not None:
        write_jsonl(HERE / f"data_{name}" / "general.jsonl", general)


def clean() -> None:
    """No finding: 40 general rows, none of them in train."""
    _case("eval_file_clean", rows(GENERAL, 7, 5000))


def missing() -> None:
    """FT180: the gate names general.jsonl, which is not written."""
    _case("eval_file_missing", None)


def missing_column() -> None:
    """FT200: the general set calls the input `body`, not `text` (no `fields` mapping)."""
    general = [{"body": r["text"], "label": r["label"]} for r in rows(GENERAL, 7, 5000)]
    _case("eval_file_missing_column", general)


def malformed() -> None:
    """FT201: an undeclared label (line 3), an empty `text` (line 8)."""
    general = rows(GENERAL, 7, 5000)
    general[2]["label"] = "refunds"
    general[7]["text"] = ""
    _case("eval_file_malformed", general)


def leakage() -> None:
    """FT205: general rows 6 and 21 are train rows 12 and 40."""
    train, _, _ = splits()
    general = rows(GENERAL, 7, 5000)
    general[5] = dict(train[11])
    general[20] = dict(train[39])
    _case("eval_file_leakage", general)


def too_small() -> None:
    """FT221: 12 general rows."""
    _case("eval_file_too_small", rows(12, 7, 5000))


def main() -> None:
    for make in (clean, missing, missing_column, malformed, leakage, too_small):
        make()


if __name__ == "__main__":
    main()
