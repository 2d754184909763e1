"""Exact and near-duplicate detection (compiler/data/normalize.py, near.py), checked against an
independent reference written here with unicodedata and Python sets."""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest
from ftc.compiler.data.near import Match, duplicates_within, exact_matches, lsh_params, near_matches
from ftc.compiler.data.normalize import exact_key, exact_keys, normalize, normalize_many

# --- an independent reference ----------------------------------------------------------------


def ref_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "PS").split()


def ref_set(text: str, k: int = 3) -> set[tuple[str, ...]]:
    words = ref_words(text)
    if len(words) < k:
        return {(w,) for w in words}
    return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}


def ref_jaccard(a: str, b: str, k: int = 3) -> float:
    sa, sb = ref_set(a, k), ref_set(b, k)
    inter = len(sa & sb)
    union = len(sa) + len(sb) - inter
    return inter / union if union else 0.0


def best_refs(ref: list[str], query: list[str], k: int = 3) -> list[tuple[float, int]]:
    """(best Jaccard, first ref reaching it) per query, through an inverted index of shingles."""
    index: dict[tuple[str, ...], list[int]] = {}
    sets = [ref_set(t, k) for t in ref]
    for i, s in enumerate(sets):
        for sh in s:
            index.setdefault(sh, []).append(i)
    out = []
    for text in query:
        qs = ref_set(text, k)
        cands = sorted({i for sh in qs for i in index.get(sh, ())})
        best = (0.0, -1)
        for i in cands:
            inter = len(qs & sets[i])
            j = inter / (len(qs) + len(sets[i]) - inter)
            if j > best[0]:
                best = (j, i)
        out.append(best)
    return out


# --- corpora ---------------------------------------------------------------------------------


def vocab(rng: random.Random, n: int = 400) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))))
    return sorted(words)


def noisy(text: str, rng: random.Random) -> str:
    """A surface variant that normalises to the same text."""
    kind = rng.randrange(4)
    if kind == 0:
        return text.upper() + "!!"
    if kind == 1:
        return "  " + text.replace(" ", " ,\t") + " ."
    if kind == 2:
        return text.replace("a", "\uff41").replace(" ", "\u00a0")
    return text.title().replace(" ", " - ")


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    rng = random.Random(7)
    words = vocab(rng)
    ref = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 24))) for _ in range(2500)]
    query: list[str] = []
    for i in range(700):
        src = ref[rng.randrange(len(ref))].split()
        if i < 100:
            query.append(noisy(" ".join(src), rng))
        elif i < 500:
            for _ in range(rng.randint(1, 2)):
                src[rng.randrange(len(src))] = rng.choice(words)
            query.append(" ".join(src) if rng.random() < 0.5 else noisy(" ".join(src), rng))
        else:
            query.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 24))))
    order = list(range(len(query)))
    rng.shuffle(order)
    query = [query[i] for i in order]
    return {"ref": ref, "query": query, "best": best_refs(ref, query)}


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", "hello world"),
        ("HeLLo, World!", "hello world"),
        ("don't stop-me now...", "dont stopme now"),
        ("a+b=c $5 €3 ©x", "abc 5 3 x"),
        ("\uff26\uff35\uff2c\uff2c width", "full width"),  # full-width letters (NFKC)
        ("\ufb01ne \u2460\u2461", "fine 12"),  # ligature, circled digits (NFKC)
        ("Stra\u00dfe", "strasse"),  # casefold, not lower
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFKC composes; marks are kept
        ("  a\tb\n\u00a0c\u2028d\u3000e \x1cf  ", "a b c d e f"),  # Unicode whitespace
        ("\u00bfQu\u00e9?", "qu\u00e9"),
        ("", ""),
        ("!!! ... ???", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(text) == " ".join(ref_words(text))


def test_bulk_normalisation_agrees_with_single() -> None:
    rng = random.Random(3)
    pool = list("abc XYZ,.!?-'\t\n") + ["\u00a0", "\u2028", "\uff41", "\ufb01", "e\u0301", "\u00df", "\u4e2d",
                                        "\U0001f600", "\u3002", "\x00", "\x1c", "\u0130", "\u03a3"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(600)]
    ascii_texts = ["".join(rng.choice("abc XYZ,.!?-'\t\n") for _ in range(rng.randint(0, 30))) for _ in range(600)]
    mostly_ascii = ascii_texts[:550] + texts[:50]
    for batch in (texts, ascii_texts, mostly_ascii, [t for t in texts if "\x00" not in t]):
        assert normalize_many(batch) == [normalize(t) for t in batch]
        assert exact_keys(batch) == [exact_key(t) for t in batch]
        assert [normalize(t) for t in batch] == [" ".join(ref_words(t)) for t in batch]


def test_exact_key() -> None:
    assert len(exact_key("x")) == 16
    assert exact_key("Hello, World!") == exact_key("hello   world") == exact_key("\uff28ELLO world")
    assert exact_key("hello world") != exact_key("hello  world!x")


# --- exact -----------------------------------------------------------------------------------


def test_exact_matches() -> None:
    ref = ["The cat sat.", "a dog", "The cat sat", "fish", "Ünïcode TEXT"]
    query = ["the CAT sat!!", "a dog barks", "FISH", "bird", "ünïcode text", "a  dog"]
    assert exact_matches(ref, query) == [Match(0, 0, 1.0), Match(2, 3, 1.0), Match(4, 4, 1.0), Match(5, 1, 1.0)]


def test_exact_matches_on_corpus(corpus: dict[str, Any]) -> None:
    ref, query = corpus["ref"], corpus["query"]
    firsts: dict[str, int] = {}
    for i, t in enumerate(ref):
        firsts.setdefault(" ".join(ref_words(t)), i)
    expected = [Match(q, firsts[n], 1.0) for q, n in enumerate(" ".join(ref_words(t)) for t in query) if n in firsts]
    assert len(expected) >= 100
    assert exact_matches(ref, query) == expected


def test_empty_inputs() -> None:
    assert exact_matches([], ["a"]) == exact_matches(["a"], []) == []
    assert near_matches([], ["a b c"]) == near_matches(["a b c"], []) == []
    assert duplicates_within([]) == []
    assert near_matches(["", "!!!"], ["", "..."], 0.5) == []  # texts without words never match
    assert exact_matches(["x", "!!!"], ["", "?"]) == [Match(0, 1, 1.0), Match(1, 1, 1.0)]  # "" == ""


def test_duplicates_within() -> None:
    texts = ["a b", "c", "A, B!", "d", "a b", "C.", "a  b  c"]
    assert duplicates_within(texts) == [(2, 0), (4, 0), (5, 1)]


# --- near ------------------------------------------------------------------------------------


def test_near_matches_on_corpus(corpus: dict[str, Any]) -> None:
    ref, query, best = corpus["ref"], corpus["query"], corpus["best"]
    t = 0.7
    found = near_matches(ref, query, t)
    assert [m.query for m in found] == sorted({m.query for m in found})
    for m in found:  # precision: exact Jaccard, at or above the threshold, the best ref
        assert m.jaccard == ref_jaccard(query[m.query], ref[m.ref]) >= t
        assert m.jaccard == best[m.query][0]
    got = {m.query for m in found}
    above = [q for q, (j, _) in enumerate(best) if j >= 0.8]
    near_t = [q for q, (j, _) in enumerate(best) if t <= j < 0.8]
    assert len(above) >= 120 and len(near_t) >= 80
    assert all(q in got for q in above)
    assert sum(q in got for q in near_t) >= 0.95 * len(near_t)
    assert not any(best[q][0] < t for q in got)  # below the threshold: never reported


def test_near_at_threshold_exactly() -> None:
    rng = random.Random(11)
    words = vocab(rng, 2000)
    ref, query = [], []
    for _ in range(20):  # 11 words: 9 shingles; change the last word: 8 shared of 10, J = 0.8
        w = rng.sample(words, 11)
        ref.append(" ".join(w))
        query.append(" ".join(w[:-1] + [rng.choice([x for x in words if x not in w])]))
    found = near_matches(ref, query, 0.8)
    assert [(m.query, m.ref, m.jaccard) for m in found] == [(i, i, 0.8) for i in range(20)]
    assert near_matches(ref, query, 0.81) == []


def test_short_texts_use_word_sets() -> None:
    ref = ["hello world", "alpha beta gamma delta", "one"]
    query = ["World, hello!", "alpha beta", "one two", "ONE"]
    found = near_matches(ref, query, 0.5)
    assert found == [Match(0, 0, 1.0), Match(2, 2, 0.5), Match(3, 2, 1.0)]
    for m in found:
        assert m.jaccard == ref_jaccard(query[m.query], ref[m.ref])
    assert ref_jaccard("alpha beta", "alpha beta gamma delta") == 0.0  # words vs shingles: disjoint


@pytest.mark.parametrize("k", [1, 2, 5])
def test_other_shingle_sizes(corpus: dict[str, Any], k: int) -> None:
    ref, query = corpus["ref"][:800], corpus["query"][:300]
    best = best_refs(ref, query, k)
    found = near_matches(ref, query, 0.6, shingle=k)
    for m in found:
        assert m.jaccard == ref_jaccard(query[m.query], ref[m.ref], k) == best[m.query][0] >= 0.6
    assert {m.query for m in found} >= {q for q, (j, _) in enumerate(best) if j >= 0.75}


def test_long_words_and_nul() -> None:
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"  # hashed with blake2b past 256 bytes
    mid_a, mid_b = "y" * 20 + "a", "y" * 20 + "b"  # several 8-byte pieces
    ref = [f"{long_a} {mid_a} one two three", "zero\x00 one two three four"]
    query = [f"{long_a} {mid_a} one two three", f"{long_b} {mid_a} one two three",
             f"{long_a} {mid_b} one two three", "zero\x00 one two three four"]
    assert near_matches(ref, query, 0.99) == [Match(0, 0, 1.0), Match(3, 1, 1.0)]
    assert exact_matches(ref, query) == [Match(0, 0, 1.0), Match(3, 1, 1.0)]
    assert duplicates_within(ref + query) == [(2, 0), (5, 1)]


def test_deterministic_and_order_independent(corpus: dict[str, Any]) -> None:
    ref, query = corpus["ref"][:1200], corpus["query"][:400]
    first = near_matches(ref, query, 0.6)
    assert near_matches(ref, query, 0.6) == first
    rng = random.Random(5)
    rperm, qperm = list(range(len(ref))), list(range(len(query)))
    rng.shuffle(rperm)
    rng.shuffle(qperm)
    shuffled = near_matches([ref[i] for i in rperm], [query[i] for i in qperm], 0.6)
    back = {qperm[m.query]: (rperm[m.ref], m.jaccard) for m in shuffled}
    assert {m.query: m.jaccard for m in first} == {q: j for q, (_, j) in back.items()}
    for q, (r, j) in back.items():  # ties may pick another ref, with the same Jaccard
        assert ref_jaccard(query[q], ref[r]) == j


def test_repeated_texts_collapse() -> None:
    ref = ["thank you very much"] * 3000 + ["thanks a lot"]
    query = ["Thank you very much!"] * 500 + ["thank you very much indeed"]
    found = near_matches(ref, query, 0.3)
    assert found[:500] == [Match(i, 0, 1.0) for i in range(500)]
    assert found[500:] == [Match(500, 0, 2 / 3)]


def test_threshold_validation() -> None:
    with pytest.raises(ValueError):
        near_matches(["a"], ["a"], 0.0)
    with pytest.raises(ValueError):
        near_matches(["a"], ["a"], 1.5)


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
def test_lsh_params_reach_target(t: float) -> None:
    b, r = lsh_params(t, 128)
    assert b * r <= 128
    assert 1 - (1 - t**r) ** b >= 0.995
    if t == 0.7:
        assert (b, r) == (20, 4)


def test_no_heavy_imports() -> None:
    import subprocess
    import sys

    code = "import sys, ftc.compiler.data.near; sys.exit(bool({'torch', 'datasets'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
