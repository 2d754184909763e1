"""`ftc check` never imports the ML stack (or numpy, or jsonschema): pre-commit stays fast and
works on machines without GPUs. Guarded with `python -X importtime` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ftc.compiler.docs import EXAMPLE_BASE

HEAVY = ("torch", "transformers", "peft", "trl", "timm", "open_clip", "datasets", "bitsandbytes", "numpy",
         "jsonschema")


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from `-X importtime` lines: `import time: self | cumulative | name`."""
    names: set[str] = set()
    for line in importtime_log.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() != "imported package":
            names.add(parts[2].strip())
    return names


def test_importtime_log_is_parsed() -> None:
    log = ("import time: self [us] | cumulative | imported package\n"
           "import time:       120 |        120 |   _io\n"
           "import time:        80 |        900 |     torch.nn\n")
    assert imported_modules(log) == {"_io", "torch.nn"}


def test_check_does_not_import_heavy_libraries(tmp_path: Path) -> None:
    spec = tmp_path / "clean.ftspec"
    spec.write_text(EXAMPLE_BASE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FTC_DEBUG")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftc", "check", "--no-data", spec.name],
                          check=False, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "All checks passed: 1 file\n"
    modules = imported_modules(proc.stderr)
    assert "ftc.compiler.check" in modules, "the import log was not captured"
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"`ftc check` imported {heavy}"
