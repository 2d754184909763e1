"""README.md promises: the two opening commands, CI runs the second, the rule table is current."""

from __future__ import annotations

import re

from tests.conftest import ROOT

from ftc.compiler.docs import readme_with_rules


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md must open with a bash block of two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.index("```bash")
    assert text[:first_block].count("\n") <= 2, "the commands must open the README"
    assert len(_commands()) == 2


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _commands()[1] in ci


def test_rule_table_is_current() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_with_rules(text) == text, "run `python -m ftc.compiler.docs README.md`"


def test_example_commands_name_existing_files() -> None:
    for token in _commands()[0].split():
        if token.startswith("specs/"):
            assert (ROOT / token).exists(), token
