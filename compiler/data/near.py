"""Exact and near-duplicate detection between a reference (training) list and query (evaluation)
lists of texts: the hot path of the train/test leakage check.

Texts are normalised (`normalize.py`) and split into words. A text's *shingles* are its word
`shingle`-grams; a text with fewer words uses its word set. Similarity is the Jaccard index of those
sets, exact for everything reported.

`near_matches`, all numpy over blocks of rows (no Python per word):
1. normalise a block of texts in one pass, find the words in its UTF-8 bytes, hash each word from its
   bytes (8 at a time, splitmix64) and each shingle from its word hashes;
2. MinHash: `bands * rows` universal hashes `a*x + b (mod 2**32)` of the shingle hashes, minimum per
   text, computed layer by layer (the j-th shingle of every text at once) into reused buffers;
3. LSH: each band of `rows` minima hashes to a 64-bit key; `lsh_params` picks bands and rows from
   the threshold so that a pair at the threshold becomes a candidate with probability >= 0.995 with
   as few dissimilar candidates as possible;
4. candidates: the query keys are sorted once; a reference block's keys go through a bit-array
   pre-filter and a searchsorted join; texts with identical shingle multisets are collapsed first,
   so repeated texts cost nothing;
5. verification: two exact filters (set sizes: J <= min/max; per-bucket shingle counts: an upper
   bound on the intersection), then the exact Jaccard of the remaining pairs over sorted 64-bit
   shingle hashes (a vectorised binary search), the best reference kept per query; the winners are
   recomputed with Python sets of word tuples, so precision is 1.0 and `jaccard` is exact.
The reference list is streamed block by block; only the query side is held in memory. Memory is
bounded; time grows with the candidate pairs (about 0.2 us each), which stay few unless the texts
share most of their shingles (one template filled with different values, at a low threshold).

`exact_matches` and `duplicates_within` group rows by a 128-bit hash of the normalised word
sequence and confirm every reported pair by comparing the normalised strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ftc.compiler.data.normalize import (
    BLOCK_CHARS,
    iter_blocks,
    normalize,
    normalize_block,
    normalize_many,
)

__all__ = ["Match", "NearScan", "duplicates_hashed", "duplicates_within", "exact_matches", "exact_matches_hashed",
           "lsh_params", "near_matches", "sequence_hashes"]

U64 = np.uint64
_BLOCK_ROWS = 32768  # rows per block (and at most BLOCK_CHARS characters)
_SUB_ROWS = 8192  # texts per MinHash sub-block: its scratch buffer stays in cache
_PAIR_BATCH = 1 << 21  # candidate pairs expanded at a time (bounds memory)
_NEEDLES = 1 << 20  # shingles looked up at a time when verifying (bounds memory)
_FILTER_BATCH = 1 << 17  # pairs through the bucket-count filter at a time
_BUCKET_BITS = 6
_BUCKETS = 1 << _BUCKET_BITS
_TARGET = 0.995  # candidate probability required at s == threshold
_MIX1, _MIX2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_GOLD = U64(0x9E3779B97F4A7C15)
_SHINGLE_MULT = (0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3)
_SHORT_TAG = U64(0x5851F42D4C957F2D)  # marks a word used as a set element (a text shorter than k)
_BAND_MULT = U64(0xC2B2AE3D27D4EB4F)
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=U64)
_LONG_WORD = 256  # words longer than this (bytes) are hashed with blake2b, one by one


@dataclass(frozen=True)
class Match:
    """A query (evaluation) row and the reference (training) row it duplicates."""

    query: int
    ref: int
    jaccard: float


# --- words and shingles ----------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (returned for chaining)."""
    x ^= x >> U64(30)
    x *= _MIX1
    x ^= x >> U64(27)
    x *= _MIX2
    x ^= x >> U64(31)
    return x


@dataclass
class _Words:
    """Word hashes of a block of texts in text order; `row[i]` is the text of word i."""

    hashes: np.ndarray  # uint64
    row: np.ndarray  # int64, non-decreasing
    rows: int


def _split_words(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(normalised UTF-8 bytes, word starts, word ends, words per text) of a block."""
    block = normalize_block(texts)
    if block is not None:
        data = np.frombuffer(block, dtype=np.uint8)
        cut = data == 0
        sep = cut | (data == 32)
    else:  # a text contains NUL: normalise row by row, rows joined by a space
        rows = [normalize(t).encode("utf-8", "surrogatepass") for t in texts]
        data = np.frombuffer(b" ".join(rows), dtype=np.uint8)
        sep = data == 32
    edges = np.diff((~sep).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if block is not None:  # words before each NUL, differenced
        before = np.searchsorted(starts, np.flatnonzero(cut))
        counts = np.diff(before, prepend=0, append=starts.size)
    else:
        counts = np.array([r.count(b" ") + 1 if r else 0 for r in rows], dtype=np.int64)
    return data, starts, ends, counts


def _word_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each word's bytes: 8-byte little-endian pieces folded through splitmix64."""
    padded = np.zeros(data.size + 16, dtype=np.uint8)
    padded[: data.size] = data
    words8 = np.ndarray(shape=(data.size + 8,), dtype="<u8", buffer=padded, strides=(1,))
    length = (ends - starts).astype(U64)
    h: np.ndarray = words8[starts] & _MASKS[np.minimum(length, U64(8)).astype(np.intp)]
    h ^= length * _GOLD
    _mix(h)
    long = np.flatnonzero(length > U64(8))
    offset = 8
    while long.size:
        huge = length[long] > U64(_LONG_WORD)
        if huge.any():
            for i in long[huge].tolist():
                h[i] = _blake64(data[starts[i] : ends[i]].tobytes())
            long = long[~huge]
        rest = np.minimum(length[long] - U64(offset), U64(8)).astype(np.intp)
        piece = words8[starts[long] + offset] & _MASKS[rest]
        h[long] = _mix((h[long] + piece) * _MIX1)
        offset += 8
        long = long[length[long] > U64(offset)]
    return h


def _blake64(raw: bytes) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def _words(texts: Sequence[str]) -> _Words:
    data, starts, ends, counts = _split_words(texts)
    row = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    return _Words(_word_hashes(data, starts, ends), row, len(texts))


@dataclass
class _Shingles:
    """Shingle hashes of texts, grouped by text (not deduplicated within a text)."""

    values: np.ndarray  # uint64
    start: np.ndarray  # int64 per text: first index in values
    count: np.ndarray  # int64 per text: number of shingles (0 for a text without words)


def _shingles(words: _Words, k: int) -> _Shingles:
    h, row, n = words.hashes, words.row, words.rows
    per_row = np.bincount(row, minlength=n)
    count = np.where(per_row >= k, per_row - (k - 1), per_row)
    span = h.size - k + 1
    if k == 1 or span <= 0:  # every text is "short": its elements are its words
        values = _mix(h ^ _SHORT_TAG)
    else:
        acc = h[:span] * U64(_SHINGLE_MULT[0])
        for i in range(1, k):
            acc += h[i : i + span] * U64(_SHINGLE_MULT[i % len(_SHINGLE_MULT)] ^ (i << 1))
        _mix(acc)
        inside = row[:span] == row[k - 1 :]  # the shingle lies within one text
        short = np.flatnonzero((per_row < k)[row])
        if short.size:  # words of short texts, tagged apart from shingles, kept in text order
            keep = np.zeros(h.size, dtype=bool)
            keep[:span] = inside
            keep[short] = True
            values = np.empty(h.size, dtype=U64)
            values[:span] = acc
            values[short] = _mix(h[short] ^ _SHORT_TAG)
            values = values[keep]
        else:
            values = acc[inside]
    return _Shingles(values, _starts(count), count)


def _starts(count: np.ndarray) -> np.ndarray:
    start = np.zeros(count.size, dtype=np.int64)
    np.cumsum(count[:-1], out=start[1:])
    return start


def _concat(parts: list[_Shingles]) -> _Shingles:
    count = np.concatenate([p.count for p in parts])
    return _Shingles(np.concatenate([p.values for p in parts]), _starts(count), count)


def _segment_sums(values: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    total = np.zeros(values.size + 1, dtype=U64)
    np.cumsum(values, out=total[1:])
    sums: np.ndarray = total[start + count] - total[start]
    return sums


def _multiset_hashes(sh: _Shingles) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each text's shingle multiset (texts with equal words hash equal)."""
    h1 = _segment_sums(sh.values, sh.start, sh.count)
    h2 = _segment_sums(_mix(sh.values ^ _GOLD), sh.start, sh.count)
    return h1, _mix(h2 + sh.count.astype(U64) * _GOLD)


def _first_of_groups(h1: np.ndarray, h2: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """For each eligible row, the first eligible row with the same (h1, h2); -1 elsewhere."""
    idx = np.flatnonzero(eligible)
    rep = np.full(h1.size, -1, dtype=np.int64)
    if not idx.size:
        return rep
    order = idx[np.argsort(h1[idx], kind="stable")]
    a1, a2 = h1[order], h2[order]
    same = a1[1:] == a1[:-1]
    if (same & (a2[1:] != a2[:-1])).any():  # equal h1, different h2: sort on both
        order = idx[np.lexsort((idx, h2[idx], h1[idx]))]
        a1, a2 = h1[order], h2[order]
        same = (a1[1:] == a1[:-1]) & (a2[1:] == a2[:-1])
    new = np.ones(order.size, dtype=bool)
    new[1:] = ~same
    rep[order] = order[new][np.cumsum(new) - 1]
    return rep


def _representatives(sh: _Shingles) -> tuple[np.ndarray, np.ndarray]:
    """(representative of each text or -1, the representatives): texts with shingles, one per
    distinct shingle multiset."""
    h1, h2 = _multiset_hashes(sh)
    rep = _first_of_groups(h1, h2, sh.count > 0)
    return rep, np.flatnonzero(rep == np.arange(rep.size))


# --- MinHash and LSH -------------------------------------------------------------------------


def lsh_params(threshold: float, num_perm: int, target: float = _TARGET) -> tuple[int, int]:
    """(bands, rows per band), bands*rows <= num_perm: the candidate probability
    1-(1-t^r)^b >= target at t = threshold, with the least false-candidate area (the S-curve's
    integral below the threshold). When no choice reaches the target, the closest one."""
    best: tuple[float, int, int] | None = None
    fallback = (-1.0, 1, 1)
    for r in range(1, num_perm + 1):
        p = threshold**r
        if p <= 0.0:
            break
        b = 1 if p >= 1.0 else math.ceil(math.log(1.0 - target) / math.log1p(-p))
        if b * r <= num_perm:
            area = _false_area(threshold, b, r)
            if best is None or area < best[0]:
                best = (area, b, r)
        elif num_perm // r >= 1:
            prob = 1.0 - (1.0 - p) ** (num_perm // r)
            if prob > fallback[0]:
                fallback = (prob, num_perm // r, r)
    if best is not None:
        return best[1], best[2]
    return fallback[1], fallback[2]


def _false_area(t: float, b: int, r: int, steps: int = 200) -> float:
    s = np.linspace(0.0, t, steps)
    return float(np.trapezoid(1.0 - (1.0 - s**r) ** b, s))


class _MinHasher:
    """MinHash signatures of shingle sets into reused buffers, then LSH band keys."""

    def __init__(self, bands: int, rows: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        perms = bands * rows
        self.bands, self.rows = bands, rows
        self.a = (rng.integers(0, 1 << 32, perms, dtype=U64).astype(np.uint32) | np.uint32(1))[:, None]
        self.b = rng.integers(0, 1 << 32, perms, dtype=U64).astype(np.uint32)[:, None]
        self.tags = rng.integers(0, 1 << 63, bands, dtype=np.int64).astype(U64)
        self.scratch = np.empty((perms, _SUB_ROWS), dtype=np.uint32)
        self.sig = np.empty((perms, 0), dtype=np.uint32)

    def band_keys(self, sh: _Shingles, which: np.ndarray) -> np.ndarray:
        """uint64 keys, shape (bands, len(which)), of the texts `which` (each has shingles)."""
        sig, inv = self._signatures(sh, which)
        keys = np.empty((self.bands, which.size), dtype=U64)
        for i in range(self.bands):
            acc = sig[i * self.rows].astype(U64)
            for j in range(1, self.rows):
                acc *= _BAND_MULT
                acc += sig[i * self.rows + j]
            acc ^= self.tags[i]
            keys[i] = _mix(acc)
        return keys[:, inv]

    def _signatures(self, sh: _Shingles, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signatures (perms, n) of the texts in decreasing length order, and the inverse order."""
        n = which.size
        if self.sig.shape[1] < n:
            self.sig = np.empty((self.a.shape[0], n), dtype=np.uint32)
        sig = self.sig[:, :n]
        x = (sh.values >> U64(32)).astype(np.uint32)
        order = np.argsort(-sh.count[which], kind="stable")
        inv = np.empty(n, dtype=np.intp)
        inv[order] = np.arange(n)
        lengths = sh.count[which][order]
        firsts = sh.start[which][order]
        for c0 in range(0, n, _SUB_ROWS):
            c1 = min(n, c0 + _SUB_ROWS)
            self._layers(x, firsts[c0:c1], lengths[c0:c1], sig[:, c0:c1])
        return sig, inv

    def _layers(self, x: np.ndarray, firsts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        """Minimum over each text's shingles, one layer (the j-th shingle of every text) at a
        time; the texts are in decreasing length order, so every layer is a prefix."""
        depth = int(lengths[0])
        alive = np.searchsorted(-lengths, -np.arange(depth), side="left")
        for j in range(depth):
            m = int(alive[j])
            tmp = self.scratch[:, :m]
            np.multiply(self.a, x[firsts[:m] + j], out=tmp)
            tmp += self.b
            if j == 0:
                out[:, :m] = tmp
            else:
                np.minimum(out[:, :m], tmp, out=out[:, :m])


# --- the query side (held in memory) and candidates ------------------------------------------


@dataclass
class _QuerySide:
    sh: _Shingles  # shingles of every query row
    rep: np.ndarray  # int64 per query row: its representative row, -1 when it has no shingles
    reps: np.ndarray  # int64 representative rows, sorted
    keys: np.ndarray  # sorted band keys of all representatives
    key_rep: np.ndarray  # position in reps of each key
    bitmap: np.ndarray  # uint8 bit array over key & mask: a pre-filter
    mask: Any  # np.uint64

    def may_have(self, keys: np.ndarray) -> np.ndarray:
        """Indices of `keys` that pass the bit-array pre-filter."""
        bit = keys & self.mask
        byte = self.bitmap[(bit >> U64(3)).astype(np.intp)]
        return np.flatnonzero((byte >> (bit & U64(7)).astype(np.uint8)) & np.uint8(1))


def _query_side(query: Sequence[str], k: int, hasher: _MinHasher) -> _QuerySide:
    sh = _concat([_shingles(_words(query[a:b]), k) for a, b in iter_blocks(query, _BLOCK_ROWS, BLOCK_CHARS)])
    rep, reps = _representatives(sh)
    blocks = [hasher.band_keys(sh, reps[a : a + _BLOCK_ROWS]) for a in range(0, reps.size, _BLOCK_ROWS)]
    keys = np.concatenate(blocks or [np.zeros((hasher.bands, 0), dtype=U64)], axis=1).ravel()
    key_rep = np.tile(np.arange(reps.size, dtype=np.int64), hasher.bands)
    order = np.argsort(keys)
    keys, key_rep = keys[order], key_rep[order]
    bits = min(max(16, int(keys.size * 64 - 1).bit_length()), 30)  # about 1.5% false hits
    mask = U64((1 << bits) - 1)
    bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
    bit = keys & mask
    np.bitwise_or.at(bitmap, (bit >> U64(3)).astype(np.intp), np.left_shift(np.uint8(1), (bit & U64(7)).astype(np.uint8)))
    return _QuerySide(sh, rep, reps, keys, key_rep, bitmap, mask)


def _candidates(q: _QuerySide, keys: np.ndarray, cols: int) -> Iterator[np.ndarray]:
    """Distinct (query representative position, reference column) pairs sharing a band key,
    encoded `rep * cols + col`, for band keys of shape (bands, cols); in groups of about
    _PAIR_BATCH pairs (a pair may recur in two groups)."""
    flat = keys.ravel()
    hit = q.may_have(flat)
    if not hit.size:
        return
    found = flat[hit]
    lo = np.searchsorted(q.keys, found, side="left")
    real = q.keys[np.minimum(lo, q.keys.size - 1)] == found
    hit, lo, found = hit[real], lo[real], found[real]
    if not hit.size:
        return
    n = np.searchsorted(q.keys, found, side="right") - lo
    ends = np.cumsum(n)
    cuts = _distinct(np.searchsorted(ends, np.arange(_PAIR_BATCH, int(ends[-1]), _PAIR_BATCH)))
    for part in np.split(np.arange(hit.size), cuts):
        if part.size:
            pn = n[part]
            which = np.repeat(lo[part] - _starts(pn), pn) + np.arange(int(pn.sum()), dtype=np.int64)
            col = np.repeat(hit[part] % cols, pn)
            yield _distinct(q.key_rep[which] * cols + col)


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique without its hash-table path, slow on large int64)."""
    x = np.sort(x)
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


# --- verification ----------------------------------------------------------------------------


def _sorted_sets(sh: _Shingles, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, values) of the sorted, deduplicated shingles of the texts `which`."""
    count = sh.count[which]
    owner = np.repeat(np.arange(which.size, dtype=np.int64), count)
    pos = np.arange(owner.size, dtype=np.int64) - _starts(count)[owner] + sh.start[which][owner]
    vals = sh.values[pos]
    order = np.lexsort((vals, owner))
    vals, owner = vals[order], owner[order]
    keep = np.ones(vals.size, dtype=bool)
    keep[1:] = (vals[1:] != vals[:-1]) | (owner[1:] != owner[:-1])
    off = np.zeros(which.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[keep], minlength=which.size), out=off[1:])
    return off, vals[keep]


def _intersections(a_off: np.ndarray, a_vals: np.ndarray, a_idx: np.ndarray,
                   b_off: np.ndarray, b_vals: np.ndarray, b_idx: np.ndarray) -> np.ndarray:
    """|A ∩ B| for each pair (A = set a_idx[p], B = set b_idx[p]) of sorted, non-empty CSR sets:
    every element of A is looked up in B's segment by a branchless binary search, all at once."""
    na = a_off[a_idx + 1] - a_off[a_idx]
    pair = np.repeat(np.arange(a_idx.size, dtype=np.int64), na)
    needle = a_vals[np.arange(pair.size, dtype=np.int64) - _starts(na)[pair] + a_off[a_idx][pair]]
    base = b_off[b_idx][pair]
    end = b_off[b_idx + 1][pair]
    n = end - base
    while True:  # invariant: the lower bound of needle lies in [base, base + n]
        half = n >> 1
        if not half.any():
            break
        base += half * (b_vals[base + half] < needle)
        n -= half
    base += b_vals[base] < needle
    found = (base < end) & (b_vals[np.minimum(base, b_vals.size - 1)] == needle)
    return np.bincount(pair[found], minlength=a_idx.size)


@dataclass
class _Best:
    """The best reference so far for each query representative."""

    j: np.ndarray  # float64, -1 when none
    ref: np.ndarray  # int64

    def update(self, rep_pos: np.ndarray, ref: np.ndarray, jac: np.ndarray) -> None:
        order = np.lexsort((ref, -jac, rep_pos))
        rep_pos, ref, jac = rep_pos[order], ref[order], jac[order]
        first = np.ones(rep_pos.size, dtype=bool)
        first[1:] = rep_pos[1:] != rep_pos[:-1]
        rep_pos, ref, jac = rep_pos[first], ref[first], jac[first]
        cur_j, cur_r = self.j[rep_pos], self.ref[rep_pos]
        better = (jac > cur_j) | ((jac == cur_j) & (ref < cur_r))
        self.j[rep_pos[better]] = jac[better]
        self.ref[rep_pos[better]] = ref[better]


def _compact(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values of x, all in range(n), and each x's position among them)."""
    used = np.flatnonzero(np.bincount(x, minlength=n))
    where = np.zeros(n, dtype=np.int64)
    where[used] = np.arange(used.size)
    return used, where[x]


def _bucket_counts(off: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per CSR set, how many of its shingles fall in each of _BUCKETS buckets (top hash bits),
    as uint8, and whether a count saturated (then the set is never filtered)."""
    n = off.size - 1
    owner = np.repeat(np.arange(n, dtype=np.int64), off[1:] - off[:-1])
    bucket = (vals >> U64(64 - _BUCKET_BITS)).astype(np.int64)
    counts = np.bincount(owner * _BUCKETS + bucket, minlength=n * _BUCKETS).reshape(n, _BUCKETS)
    saturated = np.asarray((counts >= 255).any(axis=1))
    return np.minimum(counts, 255).astype(np.uint8), saturated


def _may_reach(q_pos: np.ndarray, r_pos: np.ndarray, size_q: np.ndarray, size_r: np.ndarray,
               q_buckets: tuple[np.ndarray, np.ndarray], r_buckets: tuple[np.ndarray, np.ndarray],
               threshold: float) -> np.ndarray:
    """Pairs whose Jaccard may reach the threshold: |A ∩ B| <= sum over buckets of the smaller
    count, an upper bound that rejects most dissimilar candidates without a set intersection."""
    keep = np.empty(q_pos.size, dtype=bool)
    for a in range(0, q_pos.size, _FILTER_BATCH):
        s = slice(a, a + _FILTER_BATCH)
        bound = np.minimum(q_buckets[0][q_pos[s]], r_buckets[0][r_pos[s]]).sum(axis=1, dtype=np.int64)
        reach = bound >= threshold * (size_q[s] + size_r[s] - bound)
        keep[s] = reach | q_buckets[1][q_pos[s]] | r_buckets[1][r_pos[s]]
    return keep


def _verify(q: _QuerySide, sh: _Shingles, cols: np.ndarray, pairs: np.ndarray, base: int,
            threshold: float, best: _Best) -> None:
    """Exact Jaccard (over shingle hashes) of candidate pairs; keep the best per query. Two exact
    filters first: sizes (J <= min/max) and bucket counts."""
    rep_pos, col = np.divmod(pairs, cols.size)
    q_used, q_pos = _compact(rep_pos, q.reps.size)
    r_used, r_pos = _compact(col, cols.size)
    q_off, q_vals = _sorted_sets(q.sh, q.reps[q_used])
    r_off, r_vals = _sorted_sets(sh, cols[r_used])
    size_q = (q_off[1:] - q_off[:-1])[q_pos]
    size_r = (r_off[1:] - r_off[:-1])[r_pos]
    fits = np.minimum(size_q, size_r) >= threshold * np.maximum(size_q, size_r)
    fits[fits] = _may_reach(q_pos[fits], r_pos[fits], size_q[fits], size_r[fits],
                            _bucket_counts(q_off, q_vals), _bucket_counts(r_off, r_vals), threshold)
    rep_pos, col, q_pos, r_pos = rep_pos[fits], col[fits], q_pos[fits], r_pos[fits]
    size_q, size_r = size_q[fits], size_r[fits]
    ends = np.cumsum(size_q)
    cuts = _distinct(np.searchsorted(ends, np.arange(_NEEDLES, int(ends[-1]) if ends.size else 0, _NEEDLES)))
    for part in np.split(np.arange(rep_pos.size), cuts):
        inter = _intersections(q_off, q_vals, q_pos[part], r_off, r_vals, r_pos[part])
        jac = inter / (size_q[part] + size_r[part] - inter)
        ok = jac >= threshold
        if ok.any():
            best.update(rep_pos[part][ok], cols[col[part][ok]] + base, jac[ok])


def _shingle_set(normalized: str, k: int) -> set[tuple[str, ...]]:
    words = normalized.split()
    if len(words) < k:
        return {(w,) for w in words}
    return set(zip(*(words[i:] for i in range(k))))


def _jaccard(a: set[Any], b: set[Any]) -> float:
    inter = len(a & b)
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def _confirm(ref: Sequence[str] | _Kept, query: Sequence[str], q: _QuerySide, best: _Best, k: int,
             threshold: float) -> list[Match]:
    """The winners recomputed with Python sets of word tuples, query row by query row."""
    hit = np.flatnonzero(best.j >= threshold)
    ref_of_rep = np.full(q.rep.size, -1, dtype=np.int64)
    ref_of_rep[q.reps[hit]] = best.ref[hit]
    winner = np.where(q.rep >= 0, ref_of_rep[q.rep], -1)
    rows = np.flatnonzero(winner >= 0).tolist()
    refs = winner[rows].tolist()
    out: list[Match] = []
    pairs = zip(rows, refs, normalize_many([query[i] for i in rows]), normalize_many([ref[r] for r in refs]))
    for row, r, q_text, r_text in pairs:
        jac = _jaccard(_shingle_set(q_text, k), _shingle_set(r_text, k))
        if jac >= threshold:
            out.append(Match(row, r, jac))
    return out


# --- public API ------------------------------------------------------------------------------


def near_matches(ref: Sequence[str], query: Sequence[str], threshold: float = 0.85, *,
                 num_perm: int = 128, shingle: int = 3, seed: int = 0) -> list[Match]:
    """Query rows whose Jaccard similarity (word `shingle`-gram sets of the normalised texts) with
    some reference row is >= threshold: one Match per such row with its most similar reference row
    (the first on ties), sorted by query index. Candidates come from MinHash + LSH (a pair at the
    threshold is found with probability >= 0.995, more above it); every reported Jaccard is
    exact. Texts without words never match."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold!r}")
    if shingle < 1 or num_perm < 1:
        raise ValueError("shingle and num_perm must be positive")
    if not len(ref) or not len(query):
        return []
    bands, rows = lsh_params(threshold, num_perm)
    hasher = _MinHasher(bands, rows, seed)
    q = _query_side(query, shingle, hasher)
    best = _Best(np.full(q.reps.size, -1.0), np.full(q.reps.size, -1, dtype=np.int64))
    if q.reps.size:
        for start, stop in iter_blocks(ref, _BLOCK_ROWS, BLOCK_CHARS):
            _scan(q, ref[start:stop], start, shingle, hasher, threshold, best)
    return _confirm(ref, query, q, best, shingle, threshold)


def _scan(q: _QuerySide, texts: Sequence[str], base: int, k: int, hasher: _MinHasher,
          threshold: float, best: _Best) -> None:
    """One reference block against the query side."""
    sh = _shingles(_words(texts), k)
    _, cols = _representatives(sh)
    if cols.size:
        for pairs in _candidates(q, hasher.band_keys(sh, cols), cols.size):
            _verify(q, sh, cols, pairs, base, threshold, best)


def _sequence_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each text's normalised word sequence (equal texts hash equal)."""
    h1s, h2s = [np.zeros(0, dtype=U64)], [np.zeros(0, dtype=U64)]
    for a, b in iter_blocks(texts, _BLOCK_ROWS, BLOCK_CHARS):
        w = _words(texts[a:b])
        count = np.bincount(w.row, minlength=w.rows)
        start = _starts(count)
        pos = (np.arange(w.hashes.size, dtype=np.int64) - start[w.row]).astype(U64)
        tag = count.astype(U64) * _GOLD
        h1s.append(_mix(_segment_sums(_mix(w.hashes ^ (pos * _MIX1)), start, count) + tag))
        h2s.append(_mix(_segment_sums(_mix(w.hashes ^ (pos * _MIX2)), start, count) + tag))
    return np.concatenate(h1s), np.concatenate(h2s)


def exact_matches(ref: Sequence[str], query: Sequence[str]) -> list[Match]:
    """Query rows whose normalised text equals a reference row's: one Match per such row with the
    first equal reference row, jaccard 1.0, sorted by query index."""
    if not len(ref) or not len(query):
        return []
    r1, r2 = _sequence_hashes(ref)
    q1, q2 = _sequence_hashes(query)
    n_ref = r1.size
    h1, h2 = np.concatenate([r1, q1]), np.concatenate([r2, q2])
    first = _first_of_groups(h1, h2, np.ones(h1.size, dtype=bool))[n_ref:]
    out: list[Match] = []
    for qi in np.flatnonzero(first < n_ref).tolist():
        r = _first_equal(ref, normalize(query[qi]), int(first[qi]), h1[:n_ref], h2[:n_ref])
        if r is not None:
            out.append(Match(qi, r, 1.0))
    return out


def _first_equal(ref: Sequence[str], target: str, guess: int, h1: np.ndarray, h2: np.ndarray) -> int | None:
    """The first reference row whose normalised text is `target`: `guess` (the first with the same
    hashes) unless the hashes collided, then the others with those hashes in order."""
    if normalize(ref[guess]) == target:
        return guess
    same = np.flatnonzero((h1 == h1[guess]) & (h2 == h2[guess])).tolist()
    return next((r for r in same if normalize(ref[r]) == target), None)


def duplicates_within(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Rows whose normalised text equals an earlier row's: (later index, first such index), sorted
    by the later index."""
    if not len(texts):
        return []
    h1, h2 = _sequence_hashes(texts)
    rep = _first_of_groups(h1, h2, np.ones(h1.size, dtype=bool))
    out: list[tuple[int, int]] = []
    seen: dict[str, int] = {}
    groups: set[int] = set()
    for i in np.flatnonzero(rep != np.arange(rep.size)).tolist():
        r = int(rep[i])
        if r not in groups:
            groups.add(r)
            seen.setdefault(normalize(texts[r]), r)
        norm = normalize(texts[i])
        first = seen.setdefault(norm, i)  # on a hash collision, a text first seen here
        if first != i:
            out.append((i, first))
    return out


# --- streaming forms: the reference side fed block by block, or kept as hashes ----------------


def sequence_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes per text of its normalised word sequence: what `exact_matches` and
    `duplicates_within` group by, kept by streaming checks instead of the texts (16 bytes a row)."""
    return _sequence_hashes(texts)


def duplicates_hashed(h1: np.ndarray, h2: np.ndarray) -> list[tuple[int, int]]:
    """`duplicates_within` over the rows' sequence hashes: (later index, first index with the same
    hashes), sorted by the later index. Equal hashes are taken as equal texts (128 bits)."""
    if not h1.size:
        return []
    rep = _first_of_groups(h1, h2, np.ones(h1.size, dtype=bool))
    later = np.flatnonzero(rep != np.arange(rep.size))
    return list(zip(later.tolist(), rep[later].tolist()))


def exact_matches_hashed(r1: np.ndarray, r2: np.ndarray, query: Sequence[str]) -> list[Match]:
    """`exact_matches` with the reference side given as its sequence hashes: one Match per query
    row whose hashes equal a reference row's, with the first such reference row."""
    if not r1.size or not len(query):
        return []
    q1, q2 = _sequence_hashes(query)
    h1, h2 = np.concatenate([r1, q1]), np.concatenate([r2, q2])
    first = _first_of_groups(h1, h2, np.ones(h1.size, dtype=bool))[r1.size:]
    return [Match(qi, int(first[qi]), 1.0) for qi in np.flatnonzero(first < r1.size).tolist()]


class NearScan:
    """`near_matches(ref, query, threshold)` with `ref` fed block by block (`feed`, in order) and
    never held: the query side is built once, each reference block is scanned against it, and
    only the texts of the current best reference rows are kept for the final exact check. The
    result of `finish()` equals `near_matches` over the concatenated blocks (ties go to the
    first reference row, whatever the block boundaries)."""

    def __init__(self, query: Sequence[str], threshold: float = 0.85, *, num_perm: int = 128,
                 shingle: int = 3, seed: int = 0) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {threshold!r}")
        self.query, self.threshold, self.k = query, threshold, shingle
        self.seen = 0
        self.kept: dict[int, str] = {}
        bands, rows = lsh_params(threshold, num_perm)
        self.hasher = _MinHasher(bands, rows, seed)
        self.q = _query_side(query, shingle, self.hasher) if len(query) else None
        size = self.q.reps.size if self.q is not None else 0
        self.best = _Best(np.full(size, -1.0), np.full(size, -1, dtype=np.int64))

    def feed(self, texts: Sequence[str]) -> None:
        base = self.seen
        self.seen += len(texts)
        q = self.q
        if q is None or not q.reps.size or not len(texts):
            return
        for start, stop in iter_blocks(texts, _BLOCK_ROWS, BLOCK_CHARS):
            _scan(q, texts[start:stop], base + start, self.k, self.hasher, self.threshold, self.best)
        refs = self.best.ref[(self.best.ref >= base) & (self.best.ref < self.seen)]
        for r in np.unique(refs).tolist():
            self.kept[r] = texts[r - base]
        if len(self.kept) > 2 * q.reps.size + 1024:
            live = set(self.best.ref.tolist())
            self.kept = {r: t for r, t in self.kept.items() if r in live}

    def finish(self) -> list[Match]:
        if self.q is None or not self.seen:
            return []
        return _confirm(_Kept(self.kept), self.query, self.q, self.best, self.k, self.threshold)


class _Kept:
    """The reference texts NearScan kept, indexed like the whole reference list."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def __getitem__(self, i: int) -> str:
        return self.texts[i]
