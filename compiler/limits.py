"""Bounds on what the spec front end reads: every overrun is a located diagnostic naming the limit
and how to raise it, never a traceback, a hang or a machine's worth of memory.

| limit | default | raise it with | what it bounds | code |
| --- | --- | --- | --- | --- |
| `spec_file_bytes` | 65,536 | `FTC_MAX_SPEC_BYTES` | one spec file, and each file named by `extends` | FT023 |
| `nesting_depth` | 64 | `FTC_MAX_NESTING_DEPTH` (at most 128) | blocks and lists open at once (`{`, `[`) | FT024 |
| `extends_depth` | 16 | `FTC_MAX_EXTENDS_DEPTH` (at most 64) | a chain of files, each extending the next | FT024 |
| `string_chars` | 4,096 | `FTC_MAX_STRING_CHARS` | one string literal | FT025 |
| `number_chars` | 40 | `FTC_MAX_NUMBER_CHARS` | one numeric literal (digits, unit, exponent) | FT025 |
| `list_items` | 4,096 | `FTC_MAX_LIST_ITEMS` | items in one list literal | FT026 |

Why these values: the shipped specs are under 3 KB, nest 4 deep and hold lists of a few items; the
parser and the rules take time in proportion to the tokens of a file, so the file-size bound also
bounds the time `ftc check` spends on one (a 64 KiB file of statements checks in about a second on
one core). A number of 40 characters is far past any count a fine-tune uses (10^39), and a longer
one cannot be a setting: Python's float has no room for `10**400`.

Each variable takes a positive whole number; an unset, empty or unparsable one leaves the default.
Values are read when a file is checked (`current()`), so a test or a CI job can set them. The data
files' own limits (sizes, rows, decompression) live in compiler/data/limits.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    env: str
    what: str  # what it bounds, for the diagnostic
    ceiling: int | None = None  # the most the variable can raise it to

    @property
    def value(self) -> int:
        raw = os.environ.get(self.env, "").strip().replace("_", "")
        value = int(raw) if raw.isdigit() and int(raw) > 0 else self.default
        return min(value, self.ceiling) if self.ceiling is not None else value

    def help(self, value: int | None = None) -> str:
        """How to raise it: the variable to set, with a value above the current one."""
        now = self.value if value is None else value
        if self.ceiling is not None and now >= self.ceiling:
            return f"the limit is {now:,} ({self.name}), the most {self.env} can set"
        higher = min(now * 4, self.ceiling) if self.ceiling is not None else now * 4
        return f"the limit is {now:,} ({self.name}); raise it with the environment variable {self.env}={higher}"


SPEC_FILE_BYTES = Limit("spec_file_bytes", 64 * 1024, "FTC_MAX_SPEC_BYTES", "bytes in one spec file")
# The compiler's walks of blocks and lists recurse (about three frames a level) and so does the
# chain of `extends`: the ceilings keep them well inside Python's default recursion limit (1,000).
NESTING_DEPTH = Limit("nesting_depth", 64, "FTC_MAX_NESTING_DEPTH", "blocks and lists open at once", ceiling=128)
EXTENDS_DEPTH = Limit("extends_depth", 16, "FTC_MAX_EXTENDS_DEPTH", "files in one `extends` chain", ceiling=64)
STRING_CHARS = Limit("string_chars", 4096, "FTC_MAX_STRING_CHARS", "characters in one string")
NUMBER_CHARS = Limit("number_chars", 40, "FTC_MAX_NUMBER_CHARS", "characters in one number")
LIST_ITEMS = Limit("list_items", 4096, "FTC_MAX_LIST_ITEMS", "items in one list")

LIMITS: tuple[Limit, ...] = (SPEC_FILE_BYTES, NESTING_DEPTH, EXTENDS_DEPTH, STRING_CHARS, NUMBER_CHARS,
                             LIST_ITEMS)


@dataclass(frozen=True)
class Current:
    """The limits' values for one check, read once from the environment."""

    spec_file_bytes: int
    nesting_depth: int
    extends_depth: int
    string_chars: int
    number_chars: int
    list_items: int


def current() -> Current:
    return Current(**{lim.name: lim.value for lim in LIMITS})
