"""The code stays lint-clean (ruff) and type-clean (mypy --strict), as ARCHITECTURE.md asks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'`")
    return path


def test_ruff() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "compiler", "grammar", "runtime"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    """mypy cannot follow the editable install's path mapping, so it checks a symlinked tree laid
    out as the installed package (ftc/, ftc/compiler, ftc/grammar, ftc/runtime)."""
    pkg = tmp_path / "ftc"
    pkg.mkdir()
    for name in ("__init__.py", "py.typed"):
        (pkg / name).symlink_to(ROOT / "compiler" / "_pkg" / name)
    for name in ("compiler", "grammar", "runtime"):
        (pkg / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = subprocess.run([_tool("mypy"), "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"),
                           "-p", "ftc.compiler", "-p", "ftc.runtime"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
