"""Each rule's documentation is tested: its Example fires exactly its code; Use instead is clean."""

from __future__ import annotations

import pytest

from ftc.compiler.diagnostics import Severity
from ftc.compiler.docs import EXAMPLE_BASE, compose_example
from ftc.compiler.rules import RULES
from ftc.compiler.rules.base import doc_sections, fires_with

# Examples of rules that read files (a base model's folder) run with the files read, in
# tests/unit/test_file_rule_docs.py; here every check runs with `no_data`.
DOCUMENTED = [r for r in RULES if doc_sections(r.doc).get("Example") and r.stage != "files"]


def codes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted({d.code for d in result.diagnostics if d.suppressed_reason is None})


def test_base_example_is_clean(check_text) -> None:  # type: ignore[no-untyped-def]
    assert codes(check_text(EXAMPLE_BASE)) == []


def test_every_rule_has_docs() -> None:
    for r in RULES:
        sec = doc_sections(r.doc)
        assert sec["Summary"], r.code
        assert sec.get("Why"), f"{r.code} has no Why section"


def test_most_rules_have_examples() -> None:
    spec_rules = [r for r in RULES if r.stage in ("spec",)]
    missing = [r.code for r in spec_rules if r not in DOCUMENTED]
    assert missing == []


@pytest.mark.parametrize("rule", DOCUMENTED, ids=lambda r: r.code)
def test_example_fires_exactly_its_code(rule, check_text) -> None:  # type: ignore[no-untyped-def]
    text = compose_example(rule.section("Example"))
    result = check_text(text)
    also = fires_with(rule.doc)
    assert [c for c in codes(result) if c not in also] == [rule.code], text
    assert all(d.severity is rule.severity for d in result.diagnostics if d.code == rule.code)


@pytest.mark.parametrize("rule", [r for r in DOCUMENTED if r.section("Use instead")], ids=lambda r: r.code)
def test_use_instead_is_clean(rule, check_text) -> None:  # type: ignore[no-untyped-def]
    text = compose_example(rule.section("Use instead"))
    result = check_text(text)
    assert [c for c in codes(result) if c not in fires_with(rule.doc)] == [], text


def test_fires_with_names_real_rules() -> None:
    known = {r.code for r in RULES}
    for r in RULES:
        assert fires_with(r.doc) <= known - {r.code}, r.code


def test_severity_matches_table() -> None:
    for r in RULES:
        assert r.severity in (Severity.ERROR, Severity.WARNING)
