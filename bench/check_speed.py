"""How fast is `ftc check --no-data`? Two targets, measured against this machine's own baseline.

    .venv/bin/python bench/check_speed.py [--runs 15] [--spec PATH] [--count 200]

1. Cold start, one spec: `python -m ftc check --no-data SPEC` in a new interpreter each time,
   interleaved with `python -c pass` so that both see the same machine load; the medians of
   `--runs` pairs are compared. Target: within 8x a bare interpreter start.
2. Throughput: one `python -m ftc check --no-data DIR` over `--count` specs (copies of the
   shipped examples under new names, with their local model configs, in a temporary folder).
   Target: 200 specs within 2 s wall time (the median of three calls is reported).

Prints a table with PASS/MISS per target; exits 1 if a target is missed. Run it with the
interpreter whose environment has ftc installed (the venv's python), so that `-m ftc` resolves.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
ONE_SPEC_RATIO = 8.0
MANY_SPECS_SECONDS = 2.0


# Users' interpreters cache bytecode (.pyc); an environment with PYTHONDONTWRITEBYTECODE set (some
# sandboxes) would make every run recompile ftc's modules from source, which measures the sandbox.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return elapsed


def cold_start(spec: Path, runs: int) -> tuple[float, float]:
    bare = [sys.executable, "-c", "pass"]
    check = [sys.executable, "-m", "ftc", "check", "--no-data", str(spec)]
    timed(check, ROOT)  # warm the OS file cache, bytecode and lark's table cache once; not counted
    bare_times, check_times = [], []
    for _ in range(runs):
        bare_times.append(timed(bare, ROOT))
        check_times.append(timed(check, ROOT))
    return statistics.median(bare_times), statistics.median(check_times)


def many_specs(count: int, workdir: Path) -> tuple[float, list[float]]:
    """Copies of every example, renamed, beside their model configs; one ftc call over all."""
    examples = sorted(p for p in SPECS.rglob("*.ftspec") if p.parent != SPECS)
    shutil.copy(SPECS / "team-defaults.ftspec", workdir / "team-defaults.ftspec")
    for ex in examples:
        folder = workdir / ex.parent.relative_to(SPECS)
        models = ex.parent / "models"
        for cfg in models.glob("*/config.json"):  # what the memory estimate reads; no weights, no data
            dest = folder / cfg.relative_to(ex.parent)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cfg, dest)
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        ex = examples[i % len(examples)]
        text = ex.read_text(encoding="utf-8")
        name = f"{ex.stem}-variant-{i:03d}"
        text = re.sub(r'^spec "[^"]*"', f'spec "{name}"', text, count=1, flags=re.MULTILINE)
        (workdir / ex.parent.relative_to(SPECS) / f"{name}.ftspec").write_text(text, encoding="utf-8")
    found = sum(1 for p in workdir.rglob("*.ftspec") if p.name != "team-defaults.ftspec")
    cmd = [sys.executable, "-m", "ftc", "check", "--no-data", "--format", "concise", "."]
    times = [timed(cmd, workdir) for _ in range(3)]
    return found, times


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="interleaved pairs for the cold-start medians (>= 10)")
    ap.add_argument("--spec", type=Path, default=SPECS / "ticket-triage" / "ticket-triage.ftspec")
    ap.add_argument("--count", type=int, default=200, help="specs in the throughput run")
    args = ap.parse_args()
    if args.runs < 10:
        ap.error("--runs must be at least 10")
    bare, check = cold_start(args.spec.resolve(), args.runs)
    ratio = check / bare
    with tempfile.TemporaryDirectory(prefix="ftc-bench-") as tmp:
        found, times = many_specs(args.count, Path(tmp))
    wall = statistics.median(times)
    try:
        spec_shown = args.spec.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        spec_shown = args.spec.as_posix()
    rows = [
        ("python -c pass (median)", f"{bare * 1000:.1f} ms", "", ""),
        (f"ftc check --no-data {spec_shown} (median)", f"{check * 1000:.1f} ms", "", ""),
        ("  ratio ftc / bare interpreter", f"{ratio:.2f}x", f"<= {ONE_SPEC_RATIO:g}x",
         verdict(ratio <= ONE_SPEC_RATIO)),
        (f"ftc check --no-data over {found} specs + defaults (median of 3)", f"{wall:.2f} s", f"<= {MANY_SPECS_SECONDS:g} s",
         verdict(wall <= MANY_SPECS_SECONDS)),
    ]
    print(f"ftc check speed: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {args.runs} interleaved runs; "
          f"{found}-spec calls: "
          + ", ".join(f"{t:.2f} s" for t in times))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'target':>9}  result")
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>9}  {result}")
    return 0 if ratio <= ONE_SPEC_RATIO and wall <= MANY_SPECS_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
