"""Source text and spans: every diagnostic points into a file by 1-based line and column."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Span:
    """A half-open region of one file: offsets, and 1-based line/column of both ends."""

    path: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def sort_key(self) -> tuple[str, int]:
        return (self.path, self.start)


@dataclass(frozen=True)
class Source:
    """One file's text, with a line index for offset -> (line, column) lookups."""

    path: str
    text: str
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        starts.extend(i + 1 for i, ch in enumerate(self.text) if ch == "\n")
        object.__setattr__(self, "_starts", tuple(starts))

    @classmethod
    def read(cls, path: str | Path, display: str | None = None) -> Source:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")  # callers turn UnicodeDecodeError into a diagnostic
        return cls(display if display is not None else str(path), text.replace("\r\n", "\n"))

    def position(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        index = bisect.bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1

    def span(self, start: int, end: int) -> Span:
        line, column = self.position(start)
        end_line, end_column = self.position(max(start, end))
        return Span(self.path, start, max(start, end), line, column, end_line, end_column)

    def line_text(self, line: int) -> str:
        if line < 1 or line > len(self._starts):
            return ""
        begin = self._starts[line - 1]
        stop = self._starts[line] - 1 if line < len(self._starts) else len(self.text)
        return self.text[begin:stop]

    @property
    def line_count(self) -> int:
        return len(self._starts)

    def end_span(self) -> Span:
        """A span at the last non-blank character: where 'unexpected end of file' should point."""
        stripped = self.text.rstrip()
        end = len(stripped)
        return self.span(max(0, end - 1), end) if end else self.span(0, 0)
