"""The catalogue of labelled syntax mistakes, and the wording of the other syntax errors.

Each entry holds bad examples; the parser finds the entry whose examples fail in the same parser
state (and, best, on the same token) as the user's file, and shows the entry's message and help
instead of the parser's token list (see compiler/parser.py, "Matching"). Add an entry, or an
example to one, when a golden test in tests/golden/syntax/ shows an unhelpful message; a unit test
checks that every example fails and is matched back to its own entry.

Examples are whole files; a mistake matches wherever it sits (at the top of the spec or in a
nested block), since matching compares parser states, not stack depths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.source import Source
from lark import Token


@dataclass(frozen=True)
class Entry:
    label: str
    code: str
    message: str  # may use {found} (the token, in words), {key} (the word before it), {line}
    help: str
    examples: tuple[str, ...]
    recover: bool = True  # False: a mistake at the file's top level; parsing stops after it
    any_token: bool = True  # False: matches only the token types of its examples, not the state alone


# Contexts in which a mistake is written out, so that it matches wherever it sits: LR states differ
# with what precedes a statement (a `{`, a line break, a `;`, another statement), a list item
# (`[`, `a,`, a line break), or the end of the file's block. `@` marks where the mistake goes.
STMT = ('spec "a" { @\n}\n', 'spec "a" {\n @\n}\n', 'spec "a" {\n\n @\n}\n', 'spec "a" {\n k 1\n @\n}\n',
        'spec "a" {\n k 1; @\n}\n', 'spec "a" { k 1; @\n}\n', 'spec "a" {\n k 1;\n @\n}\n',
        'spec "a" {\n k 1\n\n @\n}\n', 'spec "a" {\n m {\n }\n @\n}\n', 'spec "a" {\n m {\n  @\n }\n}\n',
        'spec "a" {\n m { k 1 }\n @\n}\n', 'spec "a" {\n override k 1\n @\n}\n')
IN_STMT = ('spec "a" {\n @\n}\n', 'spec "a" { @ }\n', 'spec "a" {\n k 1; @; k 2\n}\n')
IN_LIST = ('k [@]', 'k [a, @]', 'k [\n @]', 'k [a,\n @]', 'k [a, b, @]', 'k [\n a,\n @\n]', 'k [a,\n\n @]')
BODY = ('{\n}', '{ }', '{}', '{ k 1 }', '{\n k 1\n}', '{ k 1; }', '{\n k 1\n\n}', '{\n\n}', '{ k 1;\n}',
        '{\n k 1\n k 2\n}', '{ k 1; k 2 }', '{\n m {\n }\n}', '{\n k 1}', '{\n k 1\n k 2}', '{\n k 1;}',
        '{ k 1\n}', '{\n k}')
AFTER_ROOT = tuple(f'spec "a" {body}@' for body in BODY) + ('defaults {\n}@', 'defaults { k 1 }@',
    'extends "x.ftspec"\nspec "a" {\n}@', '\nspec "a" {\n}@', '\nspec "a" { }@', '\nspec "a" { k 1 }@',
    '\nextends "x.ftspec"\nspec "a" {\n}@', 'extends "x.ftspec"\n\nspec "a" { }@')


def _in(contexts: tuple[str, ...], *snippets: str, reps: int = 1) -> tuple[str, ...]:
    """The first `reps` snippets in every context, and every snippet in the first context.

    The LR state a mistake fails in depends on its context, and the token found matters only within
    a state, so this grid reaches the states of the full product with far fewer examples (they are
    parsed once per process, at its first syntax error).
    """
    grid = [(c, s) for c in contexts for s in snippets[:reps]]
    grid += [(contexts[0], s) for s in snippets[reps:]]
    return tuple(c.replace("@", s) for c, s in grid)


def _stmt(*snippets: str, reps: int = 1) -> tuple[str, ...]:
    """A statement-level mistake, in each statement context."""
    return _in(STMT, *snippets, reps=reps)


def _inner(*snippets: str, reps: int = 1) -> tuple[str, ...]:
    """A mistake inside a statement: the statement's own prefix decides the state."""
    return _in(IN_STMT, *snippets, reps=reps)


def _list(*snippets: str, reps: int = 1) -> tuple[str, ...]:
    """A mistake inside a list: `k [... @ ...]` in a few statement contexts."""
    return _inner(*_in(IN_LIST, *snippets, reps=reps))


def _top(*examples: str) -> tuple[str, ...]:
    """A mistake at the top of the file: also after leading blank lines or comments, and headers."""
    heads = ("", "\n", 'extends "x.ftspec"\n', '\nextends "x.ftspec"\n\n')
    return tuple(dict.fromkeys(h + e for e in examples for h in heads if not (h and e.startswith(h))))


def _after_root(*snippets: str, reps: int = 1) -> tuple[str, ...]:
    return _in(AFTER_ROOT, *snippets, reps=reps)


_ENTRIES = (
    Entry("missing-spec-name", "FT001", "the spec has no name: found {found}",
          'name the experiment: `spec "ticket-triage" { ... }`',
          _top('spec {\n}\n', 'spec ticket {\n}\n', 'spec 12 {\n}\n', 'spec\n', 'spec }\n',
           'extends "x.ftspec"\nspec {\n}\n'), recover=False),
    Entry("missing-open-brace", "FT001", "expected `{{` after the spec's name, found {found}",
          'open the spec\'s block on the same line: `spec "name" {`',
          _top('spec "a"\n{\n}\n', 'spec "a" model\n', 'spec "a" }\n', 'spec "a" "b" {\n}\n',
           'extends "x.ftspec"\nspec "a"\n{\n}\n'), recover=False),
    Entry("defaults-name", "FT001", "`defaults` takes no name: found {found}",
          "write `defaults { ... }`; a spec names the file in `extends \"team.ftspec\"`",
          _top('defaults "team" {\n}\n', 'defaults team {\n}\n', 'defaults\n{\n}\n'), recover=False),
    Entry("missing-root", "FT001", "expected `spec \"name\" {{ ... }}` or `defaults {{ ... }}`, found {found}",
          'a spec file holds one experiment: `spec "name" { ... }`',
          _top('model { }\n', '"x"\n', 'intent\n', '{\n}\n', '}\n', 'Spec "a" {\n}\n', '\nmodel { }\n',
           'extends "x.ftspec"\nmodel { }\n', 'extends "x.ftspec"\n\nmodel { }\n', 'extends "x.ftspec"\n{\n}\n'),
          recover=False),
    Entry("after-root", "FT001", "found {found} after the end of the file's block",
          "move it inside the block, or remove the `}` that closes the block too early",
          _after_root(' x\n', '\nmodel { }\n', ' ; x\n', '\n{\n}\n', '\n"x"\n', ' "x"\n', '\n8\n',
                      ' {\n}\n', '\n[1]\n', '\n>= 1\n', '\n;\n', reps=2) + (
              'extends "x.ftspec"\nspec "a" {\n}\nmodel { }\n', 'defaults {\n} ; x\n'), recover=False),
    Entry("second-root", "FT001", "a file holds one `spec` or `defaults` block; found {found} after it",
          "put each experiment in its own .ftspec file; share settings with `extends`",
          _after_root(' spec "b" {\n}\n', '\nspec "b" {\n}\n', '\ndefaults {\n}\n', ' defaults {\n}\n',
                      '\n\nspec "b" {\n}\n', reps=2) + ('extends "x.ftspec"\nspec "a" {\n}\nspec "b" {\n}\n',),
          recover=False, any_token=False),
    Entry("stray-close", "FT001", "unmatched `}}`: the file's block is already closed",
          "remove this `}`, or look above for a block closed too early",
          _after_root(' }\n', '\n}\n', '\n\n}\n', reps=2) + ('extends "x.ftspec"\nspec "a" {\n}\n}\n',), recover=False),
    Entry("extends-after-root", "FT001", "`extends` must come before the `spec` block",
          "move the `extends \"...\"` line to the top of the file",
          _after_root(' extends "b.ftspec"\n', '\nextends "b.ftspec"\n', '\n\nextends "b.ftspec"\n', reps=2) + (
              'extends "x.ftspec"\nspec "a" {\n}\nextends "b.ftspec"\n',), recover=False),
    Entry("extends-path", "FT001", "`extends` takes a file path in double quotes, found {found}",
          'write `extends "team-defaults.ftspec"`',
          _top('extends team\n', 'extends\n', 'extends {\n}\n', 'extends 1\n',
           'extends "a.ftspec"\nextends team\n'), recover=False),
    Entry("extends-line", "FT001", "`extends \"...\"` stands on its own line; found {found} after it",
          'put the spec on the next line: `extends "team.ftspec"` then `spec "name" { ... }`',
          _top('extends "a.ftspec" spec "b" {\n}\n', 'extends "a.ftspec" "b.ftspec"\n', 'extends "a.ftspec" {\n}\n',
           'extends "a.ftspec" x\n', 'extends "a.ftspec"; spec "b" {\n}\n'), recover=False),
    Entry("missing-key", "FT001", "expected a key at the start of a statement, found {found}",
          "each statement starts with a key, e.g. `rank 8` or `method lora { ... }`",
          _stmt('"x"', '>= 1', '8', '[1]', ',', ']', reps=2)),
    Entry("block-without-key", "FT001", "a block `{{` needs a key before it",
          "name the block, e.g. `model { ... }` or `method lora { ... }`",
          _stmt('{\n}')),
    Entry("stray-semicolon", "FT001", "a `;` with no statement before it",
          "remove the `;`: it only separates two statements",
          ('spec "a" { ; k 1\n}\n', 'spec "a" {\n ;\n}\n', 'spec "a" {\n\n ; k 1\n}\n', 'spec "a" { ;\n}\n')),
    Entry("override-key", "FT001", "`override` must be followed by the key it overrides, found {found}",
          "write `override learning_rate 1e-4`",
          _stmt('override', 'override 1', 'override "x"', 'override {\n}', 'override ;', 'override [1]',
                'override >= 1')),
    Entry("block-after-block", "FT001", "a statement after a block's `}}` starts on a new line; found {found}",
          "start the next statement on a new line or after `;`",
          _inner(*(f"m {body} x" for body in BODY), *(f"m {{\n }} {bad}" for bad in ('"x"', '1', '{\n}', '[1]', '>= 1')))),
    Entry("unclosed-list", "FT001", "`[` opened on line {line} is never closed; found {found}",
          "add `]` at the end of the list", (), recover=False),
    Entry("list-comparison", "FT001", "a list holds values, not comparisons: found {found}",
          'write the comparison as its own argument, e.g. `where channel == "email"`',
          _list('a >= 1', '"a" == 1', '1 < 2', '[1] != 1', 'a.b >= 1')),
    Entry("missing-list-comma", "FT001", "list items need commas between them; found {found}",
          'write `["a", "b"]`',
          _list('"a" "b"', '"a"\n "b"', 'a b', 'a\n b', '1 2', '[1] [2]', 'a "b"', 'a.b c', 'a {\n}',
                'a.b "c"', '"a" b', '"a" 1', '1 "a"', '1 a', '[1] a', '"a" [1]', 'a [1]', reps=4)),
    Entry("list-close", "FT001", "expected `]` to close the list, found {found}",
          "close the list with `]` before the end of the block",
          _list('a }', '"a" }', '1 }', 'a ;', '[1] }', 'a.b }')),
    Entry("list-item", "FT001", "expected a list item or `]`, found {found}",
          "list items are strings, numbers or names, separated by commas: `[\"a\", \"b\"]`",
          _list(',', '{', '}', '>=', ';', reps=3)),
    Entry("comparison-value", "FT001", "a comparison needs a value on its right, found {found}",
          "complete the comparison, e.g. `gate f1 >= 0.85 on test`",
          _inner('g f1 >=', 'g f1 >= }', 'g f1 >= >= 1', 'g x f1 >= {\n}', 'g f1 >= ; k 1', 'override g f1 >= ,')),
    Entry("chained-comparison", "FT001", "comparisons do not chain: found {found}",
          "write one comparison per statement, e.g. `gate f1 >= 0.8`; a range needs two gates",
          _inner('g a >= 1 >= 2', 'g 0.1 <= f1 <= 0.9', 'g "a" == "x" == 1', 'g x a.b >= [1] != 2')),
    Entry("dotted-key", "FT001", "a key is one plain name; found `.` after `{key}`",
          "write the key inside its block, e.g. `train { learning_rate 1e-4 }`, not `train.learning_rate`",
          _stmt('a.b 1', 'a. 1', 'a.b {\n}'), any_token=False),
    Entry("key-comparison", "FT001", "a comparison needs a name on its left: found {found} right after the key",
          "write the metric or field before the comparison, e.g. `gate f1 >= 0.85`",
          _stmt('g >= 1', 'g == "x"'), any_token=False),
    Entry("comma-outside-list", "FT001", "a `,` outside a list",
          'put list items in brackets, e.g. `labels ["a", "b"]`; separate settings with a new line or `;`',
          _inner('k "a", "b"', 'k a, b', 'k 1, 2', 'k, a', 'k x a.b, c', 'k [1], 2', 'k a >= 1, b', 'override k, a'),
          any_token=False),
    Entry("stray-bracket", "FT001", "unmatched `]`: no list is open here",
          "remove the `]`, or open the list with `[`",
          _inner('k ]', 'k a ]', 'k "a" ]', 'k 1 ]', 'k a.b ]', 'k [1] ]', 'k a >= 1 ]', 'k x y ]', 'k]'),
          any_token=False),
    Entry("dot-after-value", "FT001", "a `.` after a value: dots only join names, as in `val.loss`",
          "write numbers as `0.85` or `2e-4`, and dotted names as `test.email`",
          _inner('k 1.x', 'k "a".b', 'k a >= 1.x', 'k [1].x', 'k x 1.x', 'k 1 .'), any_token=False),
    Entry("dotted-name", "FT001", "expected a name after `.`, found {found}",
          "dotted names join plain names, e.g. `val.loss` or `test.email`",
          _inner('k a.', 'k a.b.', 'k a."b"', 'k a. }', 'k a.[1]', 'k a. 1', 'k a.;', 'k x a.b. >= 1')),
)


class Catalogue:
    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self._by_label = {e.label: e for e in entries}

    def examples(self) -> dict[str, list[str]]:
        return {e.label: list(e.examples) for e in self._by_label.values()}

    def get(self, label: str) -> Entry | None:
        return self._by_label.get(label)

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._by_label.values())


CATALOGUE = Catalogue(_ENTRIES)

_TOKEN_NAMES = {
    "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`",
    "SEMICOLON": "`;`", "_NL": "the end of the line", "$END": "the end of the file", "CMP": "a comparison",
    "NAME": "a name", "STRING": "a string", "NUMLIT": "a number", "EXTENDS": "`extends`",
    "SPEC": "`spec`", "DEFAULTS": "`defaults`", "OVERRIDE": "`override`", "DOT": "`.`",
}


def describe_token(token: Token) -> str:
    kind = _TOKEN_NAMES.get(token.type, f"`{token.type.lower()}`")
    text = str(token)
    if token.type in ("NAME", "STRING", "NUMLIT", "CMP") and text:
        return f"{kind} `{text}`"
    return kind


def describe_expected(types: Iterable[str]) -> str:
    """`{`, a name or a string: the tokens a parser state accepts, in words."""
    names = list(dict.fromkeys(_TOKEN_NAMES.get(t, f"`{t.lower()}`") for t in sorted(types)))
    if not names:
        return "something else"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


_CHAR_HINTS = {
    "=": "write `key value` without `=`, e.g. `rank 8`",
    ":": "write `key value` without `:`, e.g. `rank 8`",
    "'": 'strings use double quotes: "text"',
    "\u201c": 'use straight double quotes: "text" (an editor replaced them with curly ones)',
    "\u201d": 'use straight double quotes: "text" (an editor replaced them with curly ones)',
    "\u2018": 'strings use straight double quotes: "text"',
    "\u2019": 'strings use straight double quotes: "text"',
    "(": "use `[a, b]` for lists and `{ ... }` for blocks",
    ")": "use `[a, b]` for lists and `{ ... }` for blocks",
    "-": "names use `_`, not `-` (e.g. `learning_rate`); a negative number is written `-1`",
    "!": "the comparisons are >=, <=, ==, !=, >, <",
    "\u00a0": "replace the non-breaking space with a normal space",
    ",": "commas separate list items only; separate settings with a new line or `;`",
}


def unexpected_character(src: Source, pos: int) -> Diagnostic:
    """FT004 for the character at `pos`; a non-ASCII letter is reported with its whole word."""
    ch = src.text[pos] if pos < len(src.text) else ""
    if ch.isalpha() and not ch.isascii():
        start, end = pos, pos + 1
        while start > 0 and (src.text[start - 1].isalnum() or src.text[start - 1] == "_"):
            start -= 1
        while end < len(src.text) and (src.text[end].isalnum() or src.text[end] == "_"):
            end += 1
        word = src.text[start:end]
        return make("FT004", f"`{word}` is not a valid name: names use ASCII letters, digits and `_`",
                    src.span(start, end),
                    help=f"spell the name in ASCII (`{ch}` is not allowed), or write text as a \"string\"")
    shown = ch if ch.isprintable() and ch != "\u00a0" else f"U+{ord(ch):04X}" if ch else "end of file"
    return make("FT004", f"unexpected character `{shown}`", src.span(pos, pos + 1),
                help=_CHAR_HINTS.get(ch, "remove the character, or quote the text as a string"))
