"""The grammar is LALR(1) without conflicts: no shift/reduce resolved silently, no reduce/reduce."""

from __future__ import annotations

import logging

import pytest
from lark import Lark
from lark.utils import logger as lark_logger

from ftc.compiler.parser import grammar_text


def test_grammar_has_no_conflicts(caplog: pytest.LogCaptureFixture) -> None:
    lark_logger.setLevel(logging.DEBUG)
    lark_logger.propagate = True
    try:
        with caplog.at_level(logging.DEBUG, logger="lark"):
            Lark(grammar_text(), parser="lalr", propagate_positions=True, debug=True)
    finally:
        lark_logger.setLevel(logging.CRITICAL)
    conflicts = [r.getMessage() for r in caplog.records if "conflict" in r.getMessage().lower()]
    assert conflicts == []


def test_grammar_header_states_conventions() -> None:
    header = grammar_text().split("\n\n")[0]
    for word in ("LALR", "Conventions", "override", "extends"):
        assert word in header
