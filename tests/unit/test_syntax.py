"""The parser's syntax errors: the catalogue matches mistakes wherever they sit, recovery reports
several independent errors at their own places, and end-of-file errors name the open bracket."""

from __future__ import annotations

import re

import pytest
from ftc.compiler import ast
from ftc.compiler.docs import EXAMPLE_BASE
from ftc.compiler.parser import MAX_SYNTAX_ERRORS, _unclosed_braces, lark_parser, match_label, parse
from ftc.compiler.source import Source
from ftc.compiler.syntax_errors import CATALOGUE, describe_expected
from lark import UnexpectedInput, UnexpectedToken

EXAMPLES = [(e.label, text) for e in CATALOGUE.entries() for text in e.examples]


def diags_of(text: str) -> list:  # type: ignore[type-arg]
    tree, diags = parse(Source("x.ftspec", text))
    assert (tree is None) == bool(diags)
    return diags


def summary(text: str) -> list[tuple[int, int, str, str]]:
    return [(d.span.line, d.span.column, d.code, d.message) for d in diags_of(text)]


def test_every_entry_has_examples_or_is_derived() -> None:
    derived = {"unclosed-list"}  # chosen by the parser from `missing-list-comma` and `list-close`
    for entry in CATALOGUE.entries():
        assert bool(entry.examples) != (entry.label in derived), entry.label
        assert entry.help and entry.code == "FT001"


def test_every_example_fails_and_matches_its_own_entry() -> None:
    wrong = []
    for label, text in EXAMPLES:
        with pytest.raises(UnexpectedInput) as info:
            lark_parser().parse(text)
        assert isinstance(info.value, UnexpectedToken), f"{label}: examples are token errors: {text!r}"
        if match_label(info.value) != label:
            wrong.append((label, match_label(info.value), text))
    assert wrong == []


def test_messages_format_cleanly() -> None:
    for entry in CATALOGUE.entries():
        message = entry.message.format(found="a name `x`", key="k", line=3)
        assert not re.search(r"\{\w*\}", message), message
        assert not re.search(r"\b(RBRACE|LBRACE|_NL|NUMLIT|\$END)\b", message + entry.help)


NESTINGS = [
    ('spec "a" {\n  @\n}\n', 0),
    ('spec "a" {\n  model {\n    @\n  }\n}\n', 1),
    ('spec "a" {\n  signal rlhf {\n    reward {\n      data {\n        @\n      }\n    }\n  }\n}\n', 3),
    ('spec "a" { k 1; @ }\n', 0),
]


@pytest.mark.parametrize("mistake,label", [
    ('labels ["a" "b"]', "missing-list-comma"),
    ("gate f1 >=", "comparison-value"),
    ("gate 0.1 <= f1 <= 0.9", "chained-comparison"),
    ("on val.", "dotted-name"),
    ("override", "override-key"),
    ('"text"', "missing-key"),
    ("gate >= 0.9", "key-comparison"),
    ('labels "a", "b"', "comma-outside-list"),
    ("train.epochs 3", "dotted-key"),
])
@pytest.mark.parametrize("template,depth", NESTINGS, ids=["top", "nested", "deep", "same-line"])
def test_same_mistake_same_message_at_any_depth(mistake: str, label: str, template: str, depth: int) -> None:
    text = template.replace("@", mistake)
    with pytest.raises(UnexpectedToken) as info:
        lark_parser().parse(text)
    assert match_label(info.value) == label, text


def test_clean_spec_parses_to_an_ast() -> None:
    tree, diags = parse(Source("x.ftspec", EXAMPLE_BASE))
    assert diags == [] and isinstance(tree, ast.SpecFile)
    assert tree.kind == "spec" and tree.name is not None and tree.name.value == "example"
    assert [s.key for s in tree.body.stmts] == ["intent", "model", "method", "signal", "data", "train", "eval",
                                                "budget"]


def test_no_final_newline_is_fine() -> None:
    assert diags_of('spec "a" {\n  model { base "x" }\n}') == []


def test_several_independent_errors_are_reported_together() -> None:
    text = ('spec "a" {\n'
            "  train { epochs = 3 }\n"
            '  model { base: "x"; labels ["a" "b"] }\n'
            "  eval {\n"
            "    gate f1 >=\n"
            "    gate 0.1 <= f1 <= 0.9\n"
            "  }\n"
            "  data { train 'x' }\n"
            "}\n")
    got = summary(text)
    assert [(line, code) for line, _, code, _ in got] == [(2, "FT004"), (3, "FT004"), (5, "FT001"), (6, "FT001"),
                                                          (8, "FT004")]
    for d in diags_of(text):  # offsets were not moved by recovery: each span is the offending text
        shown = text[d.span.start:d.span.end]
        assert shown in ("=", ":", "", "<=", "'"), (d.message, shown)


def test_one_error_per_line() -> None:
    got = summary('spec "a" {\n  model { base = "x"; labels ["a" "b"]; task = c }\n}\n')
    assert [(line, code) for line, _, code, _ in got] == [(2, "FT004")]


def test_error_count_is_capped() -> None:
    text = 'spec "a" {\n' + "".join(f"  k{i} = {i}\n" for i in range(MAX_SYNTAX_ERRORS + 5)) + "}\n"
    got = summary(text)
    assert len(got) == MAX_SYNTAX_ERRORS
    assert [line for line, *_ in got] == list(range(2, 2 + MAX_SYNTAX_ERRORS))


def test_recovery_does_not_cascade_from_an_unterminated_string() -> None:
    got = summary('spec "a" {\n  intent { goal behavior; owner "ml }\n  model { base "x" }\n}\n')
    assert [(line, code) for line, _, code, _ in got] == [(2, "FT002")]


def test_top_level_mistake_stops_recovery() -> None:
    got = summary('spec "a" {\n}\nspec "b" {\n  k = 1\n}\n')
    assert [(line, code) for line, _, code, _ in got] == [(3, "FT001")]
    assert "one `spec`" in got[0][3]


def test_eof_points_at_last_character_and_names_the_opener() -> None:
    text = 'spec "a" {\n  model {\n    labels ["a",\n      "b"\n\n  \n'
    (d,) = diags_of(text)
    assert d.code == "FT005" and "`[` is never closed (and 2 more)" in d.message
    assert (d.span.line, d.span.column) == (4, 9)  # the `"` closing "b": the last non-blank character
    assert len(d.related) == 1 and text[d.related[0].span.start] == "[" and d.related[0].span.line == 3


def test_eof_after_other_errors_only_when_something_is_open() -> None:
    assert [c for _, _, c, _ in summary('spec "a" {\n  k = 1\n')] == ["FT004", "FT005"]
    assert [c for _, _, c, _ in summary('spec "a" {\n  k = 1\n}\n')] == ["FT004"]


@pytest.mark.parametrize("text,message", [
    ("", "the file is empty"),
    ("\n\n   \n", "the file is empty"),
    ("# nothing\n# yet\n", "the file holds only comments"),
])
def test_empty_files(text: str, message: str) -> None:
    (d,) = diags_of(text)
    assert d.code == "FT005" and d.message == message


def test_unclosed_list_inside_block_names_the_list() -> None:
    text = 'spec "a" {\n  model {\n    labels ["a", "b"\n    task classification\n  }\n}\n'
    (d,) = diags_of(text)
    assert d.message.startswith("`[` opened on line 3 is never closed")
    assert d.span.line == 4 and d.related[0].span.line == 3


def test_unclosed_brackets_respect_their_kind() -> None:
    src = Source("x", '{ a [ b }\n{ "}" # }\n')
    assert [(s.line, s.column) for s in _unclosed_braces(src)] == [(1, 5), (2, 1)]


def test_non_ascii_name_is_reported_as_a_word() -> None:
    (d,) = diags_of('spec "a" {\n  modèle { }\n}\n')
    assert d.code == "FT004" and "`modèle`" in d.message
    assert (d.span.column, d.span.end_column) == (3, 9)


@pytest.mark.parametrize("ch,hint", [
    ("=", "without `=`"), (":", "without `:`"), ("'", "double quotes"), ("\u201c", "straight double quotes"),
    ("(", "[a, b]"), ("\u00a0", "non-breaking space"), ("@", "remove the character"),
])
def test_unexpected_characters_have_hints(ch: str, hint: str) -> None:
    (d,) = diags_of(f'spec "a" {{\n  rank {ch}8\n}}\n')
    assert d.code == "FT004" and hint in d.help and (d.span.line, d.span.column) == (2, 8)


def test_end_of_line_errors_point_before_the_comment() -> None:
    (d,) = diags_of('spec "a" {\n  gate f1 >=   # a gate\n}\n')
    assert (d.span.line, d.span.column) == (2, 13) and d.span.start == d.span.end
    assert "the end of the line" in d.message


def test_uncatalogued_errors_list_what_fits_in_words() -> None:
    assert describe_expected(["RBRACE", "_NL", "SEMICOLON"]) == "`}`, `;` or the end of the line"
    assert describe_expected(["STRING"]) == "a string"


def _mutations(seed: int, count: int) -> list[str]:
    import random

    rng = random.Random(seed)
    alphabet = list('{}[]"\'=:;,.#<>!-_ \n\tx9%/') + ["override ", "spec ", "extends ", ">= ", "\u00e9"]
    out = []
    for _ in range(count):
        text = EXAMPLE_BASE
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                text = text[:i] + text[i + rng.randint(1, 3):]
            elif op < 0.8:
                text = text[:i] + rng.choice(alphabet) + text[i:]
            else:
                j = rng.randrange(len(text))
                text = text[:i] + text[j:j + rng.randint(1, 8)] + text[i:]
        out.append(text)
    return out


def test_mutated_specs_never_crash_and_stay_located() -> None:
    """Random edits of a clean spec: parsing returns diagnostics (never raises), inside the file."""
    for text in _mutations(seed=20261122, count=150):
        source = Source("m.ftspec", text)
        tree, diags = parse(source)
        assert len(diags) <= MAX_SYNTAX_ERRORS
        for d in diags:
            assert d.span is not None and 0 <= d.span.start <= d.span.end <= len(text), (text, d)
            assert source.span(d.span.start, d.span.end) == d.span
            assert d.help, (text, d.message)
        if tree is None:
            assert diags, text


def test_accepted_tokens_agree_with_lark() -> None:
    """The parser's own `accepts` (on the state stack) equals lark's (which copies the parser)."""
    from ftc.compiler.parser import _accepts

    texts = [text for _, text in EXAMPLES[::9]] + _mutations(seed=5, count=40)
    checked = 0
    for text in texts:
        try:
            lark_parser().parse(text)
        except UnexpectedToken as err:
            assert _accepts(err) == frozenset(err.accepts), text
            checked += 1
        except UnexpectedInput:
            continue
    assert checked > 50
