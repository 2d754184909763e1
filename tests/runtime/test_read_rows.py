"""A gate's data file is read where `ftc check` reads it: beside the file that wrote the gate."""

from __future__ import annotations

import json
from pathlib import Path

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.docs import compose_example
from ftc.runtime.api import TrainContext
from ftc.runtime.backends.text_eval import read_rows


def test_an_inherited_gates_file_resolves_beside_the_file_that_wrote_it(tmp_path: Path) -> None:
    team, project = tmp_path / "team", tmp_path / "project"
    team.mkdir()
    project.mkdir()
    (team / "defaults.ftspec").write_text(
        'defaults {\n  eval { gate regression <= 0.02 vs base on "general.jsonl" }\n}\n', encoding="utf-8")
    rows = [{"text": f"team row {i}", "label": "bug"} for i in range(3)]
    (team / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # a decoy with the same name beside the spec: reading it would be the bug
    (project / "general.jsonl").write_text(json.dumps({"text": "decoy", "label": "bug"}) + "\n", encoding="utf-8")
    spec = project / "spec.ftspec"
    spec.write_text('extends "../team/defaults.ftspec"\n' + compose_example(""), encoding="utf-8")
    result = check_file(spec, CheckOptions(no_data=True))
    assert result.checked is not None, [d.message for d in result.diagnostics]
    ctx = TrainContext(result.checked, {}, tmp_path / "run", lambda e: None)
    assert [r["text"] for r in read_rows(ctx, "general.jsonl")] == ["team row 0", "team row 1", "team row 2"]
