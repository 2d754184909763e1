"""The catalogue of labelled syntax mistakes.

Each entry holds bad examples; lark's `match_examples` finds the entry whose examples fail in the
same parser state as the user's file, and the entry's message and help are shown instead of the
parser's token list. Add an entry when a golden test shows an unhelpful message.
"""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token


@dataclass(frozen=True)
class Entry:
    label: str
    code: str
    message: str  # may use {found}
    help: str
    examples: tuple[str, ...]


_ENTRIES = (
    Entry("missing-spec-name", "FT001", "the spec has no name: found {found}",
          'name the experiment: `spec "ticket-triage" { ... }`',
          ('spec {\n}\n', 'spec ticket {\n}\n')),
    Entry("missing-root", "FT001", "expected `spec \"name\" {{ ... }}` or `defaults {{ ... }}`, found {found}",
          'a spec file holds one experiment: `spec "name" { ... }`',
          ('model { }\n', '"x"\n', 'intent\n')),
    Entry("second-root", "FT001", "a file holds one `spec` or `defaults` block; found {found} after it",
          "put each experiment in its own .ftspec file; share settings with `extends`",
          ('spec "a" {\n}\nspec "b" {\n}\n', 'spec "a" {\n}\nextends "b.ftspec"\n',
           'spec "a" {\n}\n}\n', 'spec "a" {\n}\nmodel { }\n')),
    Entry("extends-path", "FT001", "`extends` takes a file path in double quotes, found {found}",
          'write `extends "team-defaults.ftspec"`', ('extends team\n', 'extends\n')),
    Entry("missing-key", "FT001", "expected a key at the start of a statement, found {found}",
          "each statement starts with a key, e.g. `rank 8` or `method lora { ... }`",
          ('spec "a" {\n "x"\n}\n', 'spec "a" {\n 8\n}\n', 'spec "a" {\n {\n}\n}\n',
           'spec "a" {\n [1]\n}\n', 'spec "a" {\n >= 1\n}\n')),
    Entry("block-after-block", "FT001", "unexpected {found} after a block",
          "start the next statement on a new line or after `;`",
          ('spec "a" {\n m {\n } x\n}\n', 'spec "a" {\n m {\n } "x"\n}\n',
           'spec "a" {\n m {\n } 1\n}\n')),
    Entry("missing-list-comma", "FT001", "list items need commas between them; found {found}",
          'write `["a", "b"]`',
          ('spec "a" {\n k ["a" "b"]\n}\n', 'spec "a" {\n k [1 2]\n}\n', 'spec "a" {\n k [a b]\n}\n',
           'spec "a" {\n k ["a"\n "b"]\n}\n')),
    Entry("list-item", "FT001", "expected a list item or `]`, found {found}",
          "list items are strings, numbers or names, separated by commas: `[\"a\", \"b\"]`",
          ('spec "a" {\n k [,]\n}\n', 'spec "a" {\n k [{]\n}\n', 'spec "a" {\n k ["a", ,]\n}\n',
           'spec "a" {\n k [>=]\n}\n', 'spec "a" {\n k [}\n}\n')),
    Entry("comparison-value", "FT001", "a comparison needs a value on its right, found {found}",
          "complete the comparison, e.g. `gate f1 >= 0.85 on test`",
          ('spec "a" {\n g f1 >=\n}\n', 'spec "a" {\n g f1 >= }\n}\n', 'spec "a" {\n g f1 >= >= 1\n}\n',
           'spec "a" {\n g f1 >= {\n}\n}\n')),
    Entry("chained-comparison", "FT001", "comparisons do not chain: found {found}",
          "write one comparison per statement, e.g. `gate f1 >= 0.8`",
          ('spec "a" {\n g a >= 1 >= 2\n}\n',)),
    Entry("dotted-name", "FT001", "expected a name after `.`, found {found}",
          "dotted names join plain names, e.g. `val.loss` or `test.email`",
          ('spec "a" {\n k a.\n}\n', 'spec "a" {\n k a.1\n}\n', 'spec "a" {\n k a."b"\n}\n')),
    Entry("missing-separator", "FT001", "unexpected {found}",
          "separate statements with a newline or `;`",
          ('spec "a" {\n k 1 ;; }\n', 'spec "a" { ; k 1\n}\n')),
    Entry("override-key", "FT001", "`override` must be followed by the key it overrides, found {found}",
          "write `override learning_rate 1e-4`",
          ('spec "a" {\n override\n}\n', 'spec "a" {\n override 1\n}\n', 'spec "a" {\n override "x"\n}\n')),
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
    "SEMICOLON": "`;`", "_NL": "a line break", "$END": "the end of the file", "CMP": "a comparison",
    "NAME": "a name", "STRING": "a string", "NUMLIT": "a number", "EXTENDS": "`extends`",
    "SPEC": "`spec`", "DEFAULTS": "`defaults`", "OVERRIDE": "`override`", "DOT": "`.`",
}


def describe_token(token: Token) -> str:
    kind = _TOKEN_NAMES.get(token.type, f"`{token.type.lower()}`")
    text = str(token)
    if token.type in ("NAME", "STRING", "NUMLIT", "CMP") and text:
        return f"{kind} `{text}`"
    return kind
