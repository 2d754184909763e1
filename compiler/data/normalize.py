"""Text normalisation for duplicate and leakage checks.

`normalize(text)` is, in this order: Unicode NFKC, `str.casefold`, deletion of every character in
Unicode categories P* (punctuation) and S* (symbols), then whitespace (as `str.split` sees it)
collapsed to single spaces and stripped at both ends. Punctuation is deleted, not turned into a
space: "don't" equals "dont", "state-of-the-art" becomes "stateoftheart".

`exact_key(text)` is a 16-byte blake2b digest of the normalised text (UTF-8), the identity of exact
duplicate checks.

The bulk helpers (`normalize_block`, `normalize_many`, `exact_keys`) do the same work on many texts
at once. Texts are joined with NUL separators into one block: an ASCII block goes through one
bytes.translate; in a block with a few non-ASCII texts those are normalised one by one first; any
other block gets NFKC row by row (only where `unicodedata.is_normalized` says so), then case folding
and a numpy code-point table (delete / space / keep) over the whole block. Every character-level step
after NFKC acts per code point, so the block equals the rows normalised one by one. numpy is imported
only by the bulk helpers.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import unicodedata
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["block_rows", "exact_key", "exact_keys", "iter_blocks", "normalize", "normalize_block", "normalize_many"]

# ASCII fast path: one bytes.translate lowers A-Z, maps the ten ASCII whitespace characters of
# str.isspace (\t \n \v \f \r \x1c-\x1f, space) to a space and deletes the 32 ASCII characters in
# categories P*/S* (exactly string.punctuation). NFKC is the identity on ASCII; casefold is lower().
_ASCII_WS = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_DELETE = bytes(c for c in range(128) if unicodedata.category(chr(c))[0] in "PS")
_ASCII_TABLE = bytes.maketrans(
    bytes(range(65, 91)) + _ASCII_WS, bytes(range(97, 123)) + b" " * len(_ASCII_WS)
)
BLOCK_CHARS = 1 << 22  # characters per bulk block: large enough to amortise, small enough for cache
_KEEP, _DELETE, _SPACE = 0, 1, 2


class _PSDeleter(dict[int, Any]):
    """A str.translate table deleting P*/S* characters, filled lazily (one category look-up per
    distinct character ever seen)."""

    def __missing__(self, cp: int) -> Any:
        value = None if unicodedata.category(chr(cp))[0] in "PS" else cp
        self[cp] = value
        return value


_PS_DELETER = _PSDeleter()


def normalize(text: str) -> str:
    """NFKC, casefold, delete punctuation and symbols (P*, S*), collapse whitespace."""
    if text.isascii():
        return " ".join(text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).decode().split())
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.translate(_PS_DELETER).split())


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def exact_key(text: str) -> bytes:
    """16-byte blake2b digest of `normalize(text)`."""
    return hashlib.blake2b(_encode(normalize(text)), digest_size=16).digest()


_UNKNOWN = 255


@lru_cache(maxsize=1)
def _class_table() -> np.ndarray:
    """uint8 per code point: keep, delete (P*/S*), space (str.isspace) or not yet looked up; filled
    in by `_classes` for the code points met."""
    import numpy as np

    table = np.full(0x110000, _UNKNOWN, dtype=np.uint8)
    for cp in range(128):
        table[cp] = _class_of(cp)
    return table


def _class_of(cp: int) -> int:
    ch = chr(cp)
    if ch.isspace():
        return _SPACE
    return _DELETE if unicodedata.category(ch)[0] in "PS" else _KEEP


def _classes(cps: np.ndarray) -> np.ndarray:
    import numpy as np

    table = _class_table()
    cls: np.ndarray = table[cps]
    unknown = cls == _UNKNOWN
    if unknown.any():
        for cp in np.unique(cps[unknown]).tolist():
            table[cp] = _class_of(cp)
        cls = table[cps]
    return cls


def _nfkc(texts: Sequence[str]) -> list[str]:
    """NFKC of each text, skipping those that are ASCII or already NFKC (the common case)."""
    nfkc, is_nfkc = unicodedata.normalize, unicodedata.is_normalized
    return [t if t.isascii() or is_nfkc("NFKC", t) else nfkc("NFKC", t) for t in texts]


def _unicode_block(texts: Sequence[str]) -> bytes:
    """NFKC (row by row, where needed) and casefold, then delete P*/S* and map whitespace to spaces
    through a code-point table, vectorised over UTF-32."""
    import numpy as np

    folded = "\x00".join(_nfkc(texts)).casefold()
    cps = np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cls = _classes(cps)
    kept = cls != _DELETE
    out = cps[kept]
    out[cls[kept] == _SPACE] = 32
    return _encode(out.tobytes().decode("utf-32-le", "surrogatepass"))


def _mostly_ascii_block(texts: Sequence[str], odd: list[int]) -> bytes:
    """A block whose few non-ASCII texts are normalised one by one; the bytes pass that follows
    leaves their (already normalised) UTF-8 unchanged."""
    rows = list(texts)
    for i in odd:
        rows[i] = normalize(rows[i])
    return _encode("\x00".join(rows)).translate(_ASCII_TABLE, _ASCII_DELETE)


def normalize_block(texts: Sequence[str]) -> bytes | None:
    """The texts normalised, UTF-8 encoded and joined by NUL bytes.

    Whitespace inside a row is mapped to spaces but not collapsed: a row's tokens are the runs of
    bytes other than space and NUL, exactly `normalize(text).split()` encoded. Returns None when a
    text itself contains a NUL (the caller then normalises row by row).
    """
    joined = "\x00".join(texts)
    if joined.count("\x00") != max(len(texts) - 1, 0):
        return None
    if joined.isascii():
        return joined.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE)
    odd = [i for i, t in enumerate(texts) if not t.isascii()]
    if len(odd) * 8 < len(texts):
        return _mostly_ascii_block(texts, odd)
    return _unicode_block(texts)


def block_rows(block: bytes) -> list[bytes]:
    """The rows of a normalised block, each exactly `normalize(text)` UTF-8 encoded."""
    import numpy as np

    rows = block.split(b"\x00")
    data = np.frombuffer(block, dtype=np.uint8)
    if data.size == 0:
        return rows
    space, nul = data == 32, data == 0
    # a space next to a space, a NUL or either end of the block must be collapsed or stripped
    loose = np.flatnonzero(space[1:] & (space[:-1] | nul[:-1]) | space[:-1] & nul[1:])
    if space[0] or space[-1] or loose.size:
        nuls = np.flatnonzero(nul)
        touched = np.searchsorted(nuls, np.concatenate([loose, loose + 1]))
        for row in set(touched.tolist()) | {0, len(rows) - 1}:
            rows[row] = b" ".join(rows[row].split())
    return rows


def iter_blocks(texts: Sequence[str], max_rows: int, max_chars: int = BLOCK_CHARS) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of consecutive texts, each at most max_rows rows and, beyond its first
    row, at most max_chars characters."""
    ends = list(itertools.accumulate(map(len, texts)))
    start, n = 0, len(texts)
    while start < n:
        base = ends[start - 1] if start else 0
        stop = bisect.bisect_right(ends, base + max_chars, lo=start, hi=min(n, start + max_rows))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def normalize_many(texts: Sequence[str]) -> list[str]:
    """`[normalize(t) for t in texts]`, computed in blocks."""
    out: list[str] = []
    for start, stop in iter_blocks(texts, 1 << 16):
        part = texts[start:stop]
        block = normalize_block(part)
        if block is None:
            out.extend(normalize(t) for t in part)
        else:
            out.extend(row.decode("utf-8", "surrogatepass") for row in block_rows(block))
    return out


def exact_keys(texts: Sequence[str]) -> list[bytes]:
    """`[exact_key(t) for t in texts]`, computed in blocks (several times faster)."""
    out: list[bytes] = []
    blake = hashlib.blake2b
    for start, stop in iter_blocks(texts, 1 << 16):
        part = texts[start:stop]
        block = normalize_block(part)
        if block is None:
            out.extend(exact_key(t) for t in part)
        else:
            out.extend(blake(row, digest_size=16).digest() for row in block_rows(block))
    return out
