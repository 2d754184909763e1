"""Benchmark of ftc's leakage check: exact and near-duplicate detection between a training set and
an evaluation set of short texts, against datasketch's MinHashLSH on the same corpus.

    .venv/bin/python bench/near_dup.py                      # 1,000,000 train + 100,000 test
    .venv/bin/python bench/near_dup.py --train 100000 --test 10000

Each engine runs in its own subprocess (so peak memory is its own): the worker regenerates the
seeded corpus, resets its peak-RSS counter (/proc/self/clear_refs), times the engine, reads VmHWM,
then scores the result. Not a test: figures depend on the machine and its load (printed).

Corpus: texts of 10-30 words drawn (Zipf-like) from a 20k-word vocabulary, the first word
capitalised and a full stop at the end. The test set plants
- exact duplicates: train rows with case, punctuation, whitespace and Unicode (full-width letters,
  no-break spaces) changed, so their normalised texts are equal;
- near duplicates: train rows with one or two words substituted, inserted or deleted (plus the same
  surface noise); the true Jaccard of each planted pair is computed from the word ids, independently
  of ftc.
Scores: recall of planted pairs with Jaccard >= threshold (a query counts when its reported match
has Jaccard >= the planted pair's), precision (every reported pair recomputed here with Python sets),
exact-duplicate recall.

datasketch (a benchmark-only dependency: `pip install datasketch`) runs MinHash(num_perm=128) +
MinHashLSH(threshold) on the same normalised 3-shingles; it is run on a subsample (--ds-train,
--ds-test) and its throughput extrapolated linearly, as the output says. Its candidates are not
verified (it does less work than ftc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LSH_PARAMS: dict[str, str] = {}
TARGETS = {"wall_s": 30.0, "peak_gb": 3.0, "recall": 0.99, "precision": 1.0, "exact_recall": 1.0, "ratio": 4.0}


# ---------------------------------------------------------------------------------------------
# corpus


def make_vocab(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    seen: dict[str, None] = {}
    while len(seen) < n:
        lengths = rng.integers(2, 11, n)
        chars = letters[rng.integers(0, 26, int(lengths.sum()))].tobytes().decode()
        pos = 0
        for ln in lengths.tolist():
            seen.setdefault(chars[pos : pos + ln])
            pos += ln
    return list(seen)[:n]


def draw_rows(rng: np.random.Generator, n: int, vocab_size: int) -> list[np.ndarray]:
    weights = 1.0 / (np.arange(vocab_size) + 10.0)
    weights /= weights.sum()
    lengths = rng.integers(10, 31, n)
    ids = rng.choice(vocab_size, size=int(lengths.sum()), p=weights).astype(np.int32)
    return np.split(ids, np.cumsum(lengths)[:-1])


def render(vocab: list[str], ids: np.ndarray) -> str:
    words = [vocab[i] for i in ids.tolist()]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


FULLWIDTH = {c: chr(ord(c) - 0x61 + 0xFF41) for c in "abcdefghijklmnopqrstuvwxyz"}


def surface_noise(text: str, rng: np.random.Generator) -> str:
    """Changes that normalisation undoes: case, punctuation, whitespace, NFKC forms."""
    words = text.split(" ")
    kind = int(rng.integers(0, 6))
    if kind == 0:
        text = text.upper()
    elif kind == 1:
        text = " ".join(w + rng.choice([",", ";", "!", "?", ":"]) if rng.random() < 0.3 else w for w in words)
    elif kind == 2:
        text = "  " + "\t".join(words).replace(".", " !!") + "\n"
    elif kind == 3:
        text = "\u00a0".join(w.title() for w in words)
    elif kind == 4:
        text = " ".join("".join(FULLWIDTH.get(c, c) for c in w) if rng.random() < 0.2 else w for w in words)
    else:
        text = " - ".join(words).replace(".", "...")
    return text


def shingles_of(ids: list[int], k: int = 3) -> set[tuple[int, ...]]:
    if len(ids) < k:
        return {(i,) for i in ids}
    return {tuple(ids[i : i + k]) for i in range(len(ids) - k + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def edit(ids: np.ndarray, rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    out = ids.tolist()
    for _ in range(int(rng.integers(1, 3))):
        pos = int(rng.integers(0, len(out)))
        op = rng.random()
        if op < 0.6:
            out[pos] = int(rng.integers(0, vocab_size))
        elif op < 0.8 and len(out) > 10:
            del out[pos]
        else:
            out.insert(pos, int(rng.integers(0, vocab_size)))
    return np.array(out, dtype=np.int32)


def make_corpus(n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vocab = make_vocab(rng, 20_000)
    train_ids = draw_rows(rng, n_train, len(vocab))
    train = [render(vocab, r) for r in train_ids]
    test_ids = draw_rows(rng, n_test, len(vocab))
    test = [render(vocab, r) for r in test_ids]
    n_exact, n_near = n_test // 20, n_test // 5  # 5% exact copies, 20% near copies
    slots = rng.permutation(n_test)[: n_exact + n_near]
    sources = rng.choice(n_train, size=n_exact + n_near, replace=False)
    exact: list[tuple[int, int]] = []
    near: list[tuple[int, int, float]] = []
    for i, (slot, src) in enumerate(zip(slots.tolist(), sources.tolist())):
        if i < n_exact:
            test[slot] = surface_noise(train[src], rng)
            exact.append((slot, src))
        else:
            ids = edit(train_ids[src], rng, len(vocab))
            text = render(vocab, ids)
            test[slot] = surface_noise(text, rng) if rng.random() < 0.5 else text
            near.append((slot, src, jaccard(shingles_of(ids.tolist()), shingles_of(train_ids[src].tolist()))))
    return {"train": train, "test": test, "exact": exact, "near": near}


# ---------------------------------------------------------------------------------------------
# an independent reference for scoring (Python sets; no ftc code)


def ref_normalize(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "PS").split()


def ref_shingles(text: str, k: int = 3) -> set[tuple[str, ...]]:
    words = ref_normalize(text)
    if len(words) < k:
        return {(w,) for w in words}
    return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}


# ---------------------------------------------------------------------------------------------
# engines (each in a worker process)


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_ftc_near(c: dict[str, Any], threshold: float) -> tuple[float, list[tuple[int, int, float]]]:
    from ftc.compiler.data.near import lsh_params, near_matches

    LSH_PARAMS["ftc-near"] = "{}x{}".format(*lsh_params(threshold, 128))
    t = time.perf_counter()
    found = near_matches(c["train"], c["test"], threshold=threshold)
    wall = time.perf_counter() - t
    return wall, [(m.query, m.ref, m.jaccard) for m in found]


def run_ftc_exact(c: dict[str, Any]) -> tuple[float, list[tuple[int, int, float]]]:
    from ftc.compiler.data.near import exact_matches

    t = time.perf_counter()
    found = exact_matches(c["train"], c["test"])
    wall = time.perf_counter() - t
    return wall, [(m.query, m.ref, m.jaccard) for m in found]


def run_datasketch(c: dict[str, Any], threshold: float) -> tuple[float, list[tuple[int, int, float]]]:
    from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped,unused-ignore]
    from ftc.compiler.data.normalize import normalize

    def shingle_bytes(text: str) -> list[bytes]:
        words = normalize(text).split()
        if len(words) < 3:
            return [w.encode() for w in words]
        return [" ".join(words[i : i + 3]).encode() for i in range(len(words) - 2)]

    t = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    LSH_PARAMS["datasketch"] = f"{lsh.b}x{lsh.r}"
    train_mh = MinHash.bulk((shingle_bytes(x) for x in c["train"]), num_perm=128)
    with lsh.insertion_session() as session:
        for i, m in enumerate(train_mh):
            session.insert(i, m, check_duplication=False)
    del train_mh
    test_mh = MinHash.bulk((shingle_bytes(x) for x in c["test"]), num_perm=128)
    pairs = [(q, r, -1.0) for q, m in enumerate(test_mh) for r in lsh.query(m)]
    wall = time.perf_counter() - t
    return wall, pairs


def score(c: dict[str, Any], found: list[tuple[int, int, float]], threshold: float, verified: bool) -> dict[str, Any]:
    best: dict[int, float] = {}
    refs: dict[int, set[int]] = {}
    for q, r, j in found:
        best[q] = max(best.get(q, -1.0), j)
        refs.setdefault(q, set()).add(r)
    wanted = [(q, r, j) for q, r, j in c["near"] if j >= threshold]
    out: dict[str, Any] = {"reported": len(found), "planted_near": len(c["near"]), "planted_near_at_t": len(wanted),
                           "planted_exact": len(c["exact"])}
    if verified:
        out["recall"] = sum(best.get(q, -1.0) >= j - 1e-12 for q, _, j in wanted) / max(len(wanted), 1)
        out["exact_recall"] = sum(best.get(q, -1.0) >= 1.0 for q, _ in c["exact"]) / max(len(c["exact"]), 1)
        ok = 0
        for q, r, j in found:  # recompute every reported pair independently
            true = jaccard(ref_shingles(c["test"][q]), ref_shingles(c["train"][r]))
            ok += true >= threshold and abs(true - j) < 1e-12
        out["precision"] = ok / max(len(found), 1)
    else:  # candidate sets: recall = planted source among the candidates
        out["recall"] = sum(r in refs.get(q, ()) for q, r, _ in wanted) / max(len(wanted), 1)
        out["exact_recall"] = sum(r in refs.get(q, ()) for q, r in c["exact"]) / max(len(c["exact"]), 1)
        sample = found[:20000]
        good = [jaccard(ref_shingles(c["test"][q]), ref_shingles(c["train"][r])) >= threshold for q, r, _ in sample]
        out["precision"] = sum(good) / max(len(sample), 1)
    return out


def worker(engine: str, n_train: int, n_test: int, seed: int, threshold: float) -> dict[str, Any]:
    t = time.perf_counter()
    corpus = make_corpus(n_train, n_test, seed)
    gen_s = time.perf_counter() - t
    base = current_rss_gb()
    reset = reset_peak()
    if engine == "ftc-near":
        wall, found = run_ftc_near(corpus, threshold)
    elif engine == "ftc-exact":
        wall, found = run_ftc_exact(corpus)
    else:
        wall, found = run_datasketch(corpus, threshold)
    peak = peak_rss_gb()
    result = {"engine": engine, "train": n_train, "test": n_test, "wall_s": wall, "gen_s": gen_s,
              "corpus_rss_gb": base, "peak_gb": peak, "peak_is_engine_only": reset,
              "rows_per_s": (n_train + n_test) / wall}
    result.update(score(corpus, found, threshold, verified=engine != "datasketch"))
    result["lsh"] = LSH_PARAMS.get(engine, "-")
    return result


# ---------------------------------------------------------------------------------------------
# driver


def spawn(engine: str, n_train: int, n_test: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--train", str(n_train),
           "--test", str(n_test), "--seed", str(args.seed), "--threshold", str(args.threshold)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker {engine} failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(res: dict[str, dict[str, Any]], args: argparse.Namespace, loads: list[tuple[float, ...]]) -> bool:
    """Print the results and the targets; True when every target is met."""
    near, exact, ds = res.get("ftc-near"), res.get("ftc-exact"), res.get("datasketch")
    print(f"\nload average (1/5/15 min) before: {loads[0]}, after: {loads[-1]} on {os.cpu_count()} CPUs")
    print(f"threshold {args.threshold}, seed {args.seed}\n")
    print(f"{'engine':<12}{'rows':>18}{'wall s':>9}{'rows/s':>11}{'peak GB':>9}{'corpus GB':>10}"
          f"{'reported':>10}{'recall':>8}{'exact':>7}{'prec':>7}")
    for name, r in res.items():
        recall = "   -" if name == "ftc-exact" else f"{r['recall']:.4f}"  # exact: no near recall
        print(f"{name:<12}{r['train']:>10,}+{r['test']:>7,}{r['wall_s']:>9.2f}{r['rows_per_s']:>11,.0f}"
              f"{r['peak_gb']:>9.2f}{r['corpus_rss_gb']:>10.2f}{r['reported']:>10,}{recall:>8}"
              f"{r['exact_recall']:>7.3f}{r['precision']:>7.3f}")
    if near:
        missed = round((1 - near["recall"]) * near["planted_near_at_t"])
        print(f"\nplanted: {near['planted_exact']:,} exact, {near['planted_near']:,} near "
              f"({near['planted_near_at_t']:,} with Jaccard >= {args.threshold}; ftc missed {missed}); "
              f"LSH bands x rows: ftc {near['lsh']}, datasketch {ds['lsh'] if ds else '-'}")
        print("peak GB is the engine's own peak RSS (VmHWM reset after generating the corpus, so it "
              "includes the corpus held in memory)" if near["peak_is_engine_only"] else
              "peak GB is the whole worker's peak RSS (could not reset VmHWM)")
    if ds:
        scale = (args.train + args.test) / (ds["train"] + ds["test"])
        print(f"datasketch ran on {ds['train']:,}+{ds['test']:,} rows; its time at full size is extrapolated "
              f"linearly (x{scale:.1f}): {ds['wall_s'] * scale:.1f} s. Its recall/precision are those of "
              "its unverified LSH candidates on the subsample.")
    print("\ntarget                                   value        goal    ")
    rows: list[tuple[str, str, str, bool]] = []
    if near:
        rows += [("ftc near wall time", f"{near['wall_s']:.1f} s", f"<= {TARGETS['wall_s']:.0f} s",
                  near["wall_s"] <= TARGETS["wall_s"]),
                 ("ftc near peak memory", f"{near['peak_gb']:.2f} GB", f"<= {TARGETS['peak_gb']:.0f} GB",
                  near["peak_gb"] <= TARGETS["peak_gb"]),
                 (f"recall (planted, J >= {args.threshold})", f"{near['recall']:.4f}", ">= 0.99",
                  near["recall"] >= TARGETS["recall"]),
                 ("precision (near)", f"{near['precision']:.4f}", "1.0", near["precision"] >= 1.0)]
        rows.append(("exact-duplicate recall (near)", f"{near['exact_recall']:.4f}", "1.0", near["exact_recall"] >= 1.0))
    if exact:
        rows.append(("exact-duplicate recall (exact)", f"{exact['exact_recall']:.4f}", "1.0",
                     exact["exact_recall"] >= 1.0))
        rows.append(("precision (exact)", f"{exact['precision']:.4f}", "1.0", exact["precision"] >= 1.0))
    if near and ds:
        ratio = near["rows_per_s"] / ds["rows_per_s"]
        rows.append(("throughput vs datasketch", f"{ratio:.1f}x", ">= 4x", ratio >= TARGETS["ratio"]))
    for name, value, goal, ok in rows:
        print(f"{name:<40}{value:>10}  {goal:>10}  {mark(ok)}")
    return all(ok for *_, ok in rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=1_000_000)
    p.add_argument("--test", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--ds-train", type=int, default=None, help="datasketch subsample (default: train/10)")
    p.add_argument("--ds-test", type=int, default=None, help="datasketch subsample (default: test/10)")
    p.add_argument("--engines", default="ftc-near,ftc-exact,datasketch")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.train, args.test, args.seed, args.threshold)))
        return
    loads = [os.getloadavg()]
    res: dict[str, dict[str, Any]] = {}
    for engine in args.engines.split(","):
        if engine == "datasketch":
            n_train = args.ds_train or max(args.train // 10, 1)
            n_test = args.ds_test or max(args.test // 10, 1)
        else:
            n_train, n_test = args.train, args.test
        print(f"running {engine} on {n_train:,} + {n_test:,} rows ...", flush=True)
        res[engine] = spawn(engine, n_train, n_test, args)
        loads.append(os.getloadavg())
    passed = report(res, args, [tuple(round(x, 2) for x in ld) for ld in loads])
    if args.json:
        args.json.write_text(json.dumps({"results": res, "loads": loads}, indent=2))
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
