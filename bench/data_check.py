"""End-to-end benchmark of `ftc check` with data: a first check that reads and analyses a large
dataset, then checks of the unchanged data, which must come from the cache.

    .venv/bin/python bench/data_check.py                       # 1,000,000 train + 100,000 test rows
    .venv/bin/python bench/data_check.py --train 100000 --test 10000

The corpus is bench/near_dup.py's (short texts with planted exact and near duplicates across train
and test), written as jsonl with labels beside a classification spec. Each `ftc check` runs in a
fresh interpreter (`python -m ftc check`), with its own cache folder. Targets (issue 3): the second
check of unchanged data <= 0.2 s. Not a test: figures depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_dup import make_corpus  # noqa: E402

SPEC = """spec "bench" {
  intent { goal behavior; stability stable; owner "bench" }
  model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification
          labels ["a", "b", "c"]; params 110M }
  method lora { rank 8 }
  signal sft { input "text"; target "label" }
  data {
    train "train.jsonl"; val "val.jsonl"; test "test.jsonl"
    dedup near 0.7
  }
  train { epochs 1; early_stopping patience 2 on val.loss; checkpoints keep 2 }
  eval { metric f1 macro; gate f1 >= 0.8 on test }
}
"""


def write_jsonl(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"text": text, "label": "abc"[i % 3]}) + "\n")


def check(folder: Path, env: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftc", "check", "--format", "concise", "bench.ftspec"],
                          cwd=folder, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1_000_000)
    ap.add_argument("--test", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftc-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        corpus = make_corpus(args.train, args.test, seed=0)
        write_jsonl(folder / "train.jsonl", corpus["train"])
        write_jsonl(folder / "val.jsonl", corpus["test"][: max(1000, args.test // 10)])
        write_jsonl(folder / "test.jsonl", corpus["test"])
        (folder / "bench.ftspec").write_text(SPEC)
        size = sum(p.stat().st_size for p in folder.glob("*.jsonl"))
        print(f"corpus: {args.train:,} train + {args.test:,} test rows, {size / 1e6:.0f} MB of jsonl "
              f"(made in {time.perf_counter() - t0:.1f} s); load {os.getloadavg()[0]:.2f}")
        # bytecode cached as on users' machines (see bench/check_speed.py)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["FTC_CACHE_DIR"] = str(folder / "cache")
        first, code, output = check(folder, env)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        findings = sorted({line.split()[1] for line in output.splitlines() if line.count(":") >= 3})
        print(f"first check:  {first:7.2f} s  exit {code}  peak RSS {peak:.2f} GB  codes {', '.join(findings)}")
        again = [check(folder, env) for _ in range(args.repeat)]
        assert all(o == output for _, _, o in again), "a cached check printed something else"
        median = statistics.median(t for t, _, _ in again)
        print(f"second check: {median:7.3f} s  (median of {args.repeat}; same output)  "
              f"target <= 0.2 s: {'PASS' if median <= 0.2 else 'MISS'}")
        for line in output.splitlines()[:6]:
            print("  " + line[:150])


if __name__ == "__main__":
    main()
