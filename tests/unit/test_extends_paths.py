"""Paths written in a file named by `extends` are relative to that file, not to the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.docs import EXAMPLE_BASE


def test_inherited_paths_resolve_against_their_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "team" / "data").mkdir(parents=True)
    (tmp_path / "team" / "data" / "general.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "team" / "defaults.ftspec").write_text(
        'defaults {\n  eval { gate regression <= 0.02 vs base on "data/general.jsonl" }\n}\n')
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "spec.ftspec").write_text('extends "../team/defaults.ftspec"\n' + EXAMPLE_BASE)
    result = check_file(Path("proj/spec.ftspec"), CheckOptions())
    regression = [d for d in result.diagnostics if d.code == "FT180" and "regression" in d.message]
    assert regression == []
    missing = {d.message for d in result.diagnostics if d.code == "FT180"}
    assert "train data `data/train.jsonl` does not exist" in missing  # the spec's own paths: its folder
    (tmp_path / "team" / "data" / "general.jsonl").unlink()
    again = check_file(Path("proj/spec.ftspec"), CheckOptions())
    [d] = [d for d in again.diagnostics if d.code == "FT180" and "regression" in d.message]
    assert d.span is not None and d.span.path == "team/defaults.ftspec" and "(team)" in d.help
