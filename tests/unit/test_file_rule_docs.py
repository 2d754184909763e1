"""The documentation of the rules that read files (stage `files`: the base model's folder) is
tested as the other rules' is (tests/unit/test_rule_docs.py), but with the files read: each Example
and Use instead is composed into EXAMPLE_BASE and checked in a folder that holds the data files
EXAMPLE_BASE names and a local timm folder (models/resnet18), against the tests' Hugging Face cache
(tests/golden/_hub, set by tests/unit/conftest.py). The data rules' findings on that stand-in data
are not what the examples are about, so codes of stage `data` are left out of the comparison.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ftc.compiler.docs import compose_example
from ftc.compiler.rules import RULES, rule_for_or_none
from ftc.compiler.rules.base import Rule

from tests.conftest import ROOT

FILE_RULES = [r for r in RULES if r.stage == "files" and r.section("Example")]


def _workspace(folder: Path) -> None:
    (folder / "data").mkdir()
    rows = "".join(json.dumps({"text": f"row {i}", "label": "billing"}) + "\n" for i in range(30))
    for split in ("train", "val", "test"):
        (folder / "data" / f"{split}.jsonl").write_text(rows, encoding="utf-8")
    shutil.copytree(ROOT / "tests" / "golden" / "files" / "model_timm", folder / "models" / "resnet18")


def _codes(check_text, tmp_path: Path, snippet: str) -> list[str]:  # type: ignore[no-untyped-def]
    _workspace(tmp_path)
    result = check_text(compose_example(snippet), no_data=False)
    return sorted({d.code for d in result.diagnostics if d.suppressed_reason is None
                   and (r := rule_for_or_none(d.code)) is not None and r.stage != "data"})


def test_every_file_rule_of_this_family_is_documented() -> None:
    assert {r.code for r in FILE_RULES} >= {"FT154", "FT155", "FT156", "FT157", "FT158"}


@pytest.mark.parametrize("rule", FILE_RULES, ids=lambda r: r.code)
def test_example_fires_exactly_its_code(rule: Rule, check_text, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _codes(check_text, tmp_path, rule.section("Example")) == [rule.code]


@pytest.mark.parametrize("rule", [r for r in FILE_RULES if r.section("Use instead")], ids=lambda r: r.code)
def test_use_instead_is_clean(rule: Rule, check_text, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _codes(check_text, tmp_path, rule.section("Use instead")) == []
