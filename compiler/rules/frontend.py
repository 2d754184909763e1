"""Codes that the parser and the resolver emit: the language itself (FT0xx)."""

from __future__ import annotations

from ftc.compiler.rules.base import frontend

SYNTAX_ERROR = frontend("FT001", """
    The file does not follow the .ftspec grammar.

    Why:
    A spec that does not parse cannot be checked or run. The message names what was found and
    what fits there; common mistakes have their own messages from a catalogue of examples.

    Example:
        method lora { rank 8 alpha 16 }
        data { train "data/train.jsonl" val "data/val.jsonl" test "data/test.jsonl" }
        eval { metric f1 macro; gate f1 >= }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """)

UNTERMINATED_STRING = frontend("FT002", """
    A string is not closed on the line where it starts.

    Why:
    Strings cannot span lines, so a missing `"` would swallow the rest of the line.

    Example:
        spec "x" {
          intent { goal behavior; owner "support-ml }
        }

    Use instead:
        intent { goal behavior; owner "support-ml" }
    """)

MALFORMED_NUMBER = frontend("FT003", """
    A numeric literal mixes forms, such as a unit inside a ratio.

    Why:
    Numbers, quantities (24GB), percentages (80%) and ratios (80/10/10) each have one form.

    Example:
        data { source "data/all.jsonl" split 80%/10/10 }

    Use instead:
        data { source "data/all.jsonl" split 80/10/10 }
    """)

UNEXPECTED_CHARACTER = frontend("FT004", """
    A character that the language does not use, such as `=` or `:` between a key and its value.

    Why:
    Settings are written `key value`; the help line names the usual fix for the character found.

    Example:
        method lora { rank = 8 }

    Use instead:
        method lora { rank 8 }
    """)

UNEXPECTED_EOF = frontend("FT005", """
    The file ends inside a block or list, or is empty.

    Why:
    A truncated spec must not pass; the diagnostic points at the end of the text and at the
    bracket that was never closed.

    Example:
        spec "x" {
          method lora { rank 8

    Use instead:
        method lora { rank 8 }
    """)

UNREADABLE_FILE = frontend("FT006", """
    The spec file cannot be read as UTF-8 text (missing, a folder, binary, or another encoding).

    Why:
    ftc reports every input problem as a located diagnostic rather than a traceback.
    """)

INVALID_PLAN = frontend("FT007", """
    A reviewed plan file (`ftc run plan.json`) that ftc cannot run as written: not JSON, another
    format version, a missing field, a node kind with no executor step, an input naming no node,
    or a node edited after `ftc plan` (its hash no longer matches its content).

    Why:
    `ftc run plan.json` runs exactly the plan that was reviewed. A damaged or hand-edited plan is
    refused where it is wrong, so that what runs is never something nobody reviewed.
    """)

UNKNOWN_BLOCK = frontend("FT010", """
    A block whose name the language does not know.

    Why:
    A misspelt block would otherwise be ignored, and its settings silently lost. The help line
    suggests the closest known name.

    Example:
        evaluation { metric f1 macro; gate f1 >= 0.85 on test }

    Use instead:
        eval { metric f1 macro; gate f1 >= 0.85 on test }
    """)

UNKNOWN_KEY = frontend("FT011", """
    A key that the block does not have.

    Why:
    Tools that drop unknown keys silently train with settings the author never chose. ftc refuses
    them and suggests the closest key, or the block the key belongs in.

    Example:
        method lora { rnak 8 }

    Use instead:
        method lora { rank 8 }
    """)

DUPLICATE_KEY = frontend("FT012", """
    The same setting is written twice in one block.

    Why:
    Which of the two wins would be a guess; the diagnostic points at both.

    Example:
        method lora { rank 8; rank 16 }

    Use instead:
        method lora { rank 16 }
    """)

INVALID_VALUE = frontend("FT013", """
    A value of the wrong type or out of range for its key.

    Why:
    Every key has a type (a string, a whole number, a list, a quantity with a unit); the
    diagnostic points at the value and shows the expected form.

    Example:
        method lora { rank "eight" }

    Use instead:
        method lora { rank 8 }
    """)

UNKNOWN_CHOICE = frontend("FT014", """
    A name that is not one of the key's choices (a method, a task, a metric, ...).

    Why:
    Closed choices catch typos before a run; the help line lists them and suggests the closest.

    Example:
        method lora { bias some }

    Use instead:
        method lora { bias none }
    """)

WRONG_UNIT = frontend("FT015", """
    A quantity with an unknown unit, or a unit of the wrong dimension (a time where memory is due).

    Why:
    `24Gb` or `50s` for memory would silently mean something else.

    Example:
        budget { gpu_memory 24Gb }

    Use instead:
        budget { gpu_memory 24GB }
    """)

UNEXPECTED_ARGUMENT = frontend("FT016", """
    A statement has more arguments than its key takes, and what follows is not another key.

    Why:
    Settings may share a line (`rank 8 alpha 16`); anything else left over is a mistake.

    Example:
        method lora { rank 8 16 }

    Use instead:
        method lora { rank 8; alpha 16 }
    """)

EXTENDS_ERROR = frontend("FT017", """
    A file named by `extends` is missing, unreadable, or extends itself through a cycle.

    Why:
    Shared team defaults must be found, or the spec is not what its author believes.
    """)

IMPLICIT_OVERRIDE = frontend("FT018", """
    A setting replaces one inherited through `extends` without saying `override`.

    Why:
    A reviewer must see which team defaults a spec changes; the diagnostic points at the
    inherited value too.
    """)

OVERRIDE_NOTHING = frontend("FT019", """
    `override` on a setting that no file named by `extends` sets.

    Why:
    The author believes they replace a team default that does not exist (often a typo in the key
    or in the `extends` path).

    Example:
        method lora { override rank 8 }

    Use instead:
        method lora { rank 8 }
    """)

MISSING_SETTING = frontend("FT020", """
    A required block or key is absent.

    Why:
    A spec must say what it trains and how (intent, model, method, signal, data, eval); the help
    line shows what to add.

    Example:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; labels ["a", "b"] }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """)

UNUSED_SUPPRESSION = frontend("FT021", """
    An `# ftc: ignore[CODE]` comment that suppresses nothing.

    Why:
    Stale suppressions hide the next real problem on that line; remove them.
    """)

INVALID_SUPPRESSION = frontend("FT022", """
    A suppression without a reason, for an unknown code, or for an error that cannot be waived.

    Why:
    Warnings are suppressed with a reason written beside the code. Refusals that guard evaluation
    (no held-out test split, too little data, leakage) can be waived only with a written reason,
    which is kept in the plan and the registry. Other errors cannot be suppressed: fix the spec.
    """)

FILE_TOO_LARGE = frontend("FT023", """
    A spec file, or a file named by `extends`, is larger than the front end reads
    (`spec_file_bytes`, 64 KiB by default; raise it with FTC_MAX_SPEC_BYTES).

    Why:
    A spec is a page of settings, reviewed like code; the shipped examples are under 3 KB. The
    parser's time grows with the file, so an unbounded file (or `extends "/dev/zero"`) would stall
    pre-commit and CI. The file is refused before it is read whole, and nothing of it is printed.
    """)

NESTING_TOO_DEEP = frontend("FT024", """
    Blocks and lists nest deeper than the front end walks (`nesting_depth`, 64 by default; raise
    it with FTC_MAX_NESTING_DEPTH), or a chain of `extends` files is longer than `extends_depth`
    (16; FTC_MAX_EXTENDS_DEPTH).

    Why:
    A real spec nests four deep. The depth is bounded before the file is parsed, so a hostile
    spec of a thousand `[` gets this diagnostic at the bracket that went too deep, not an internal
    error from the compiler's recursive walks.

    Example:
        method lora { rank [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[8]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]] }

    Use instead:
        method lora { rank 8 }
    """)

LITERAL_TOO_LARGE = frontend("FT025", """
    A string or a number is longer than the front end accepts (`string_chars`, 4,096 characters,
    FTC_MAX_STRING_CHARS; `number_chars`, 40, FTC_MAX_NUMBER_CHARS), or a number too large to
    represent (`1e999`).

    Why:
    No setting needs a 400-digit count: such a number cannot be held as a float, and used as
    `epochs` or `rank` it would overflow in the estimates. It is refused where it is written.

    Example:
        method lora { rank 1000000000000000000000000000000000000000000000000000 }

    Use instead:
        method lora { rank 8 }
    """)

LIST_TOO_LONG = frontend("FT026", """
    A list literal holds more items than the front end accepts (`list_items`, 4,096 by default;
    raise it with FTC_MAX_LIST_ITEMS).

    Why:
    Lists in a spec are labels, module names and slices: tens of items. A list of hundreds of
    thousands of labels took seconds to check; it is refused at the list, with the count.
    """)

NOT_A_REGULAR_FILE = frontend("FT027", """
    A path names a device, a FIFO, a socket, or a folder where a file is meant (or a file where a
    folder is meant).

    Why:
    Reading `/dev/zero` or `/dev/urandom` never ends and a FIFO blocks until someone writes to it:
    ftc reads only regular files (and folders where a folder is meant), and says what it found
    instead, before opening it.
    """)

PATH_OUTSIDE_ROOT = frontend("FT028", """
    A path in the spec (the spec itself, `extends`, data files and folders, image roots, a local
    base model, an output schema, a regression set) resolves outside the project root, after
    `..` and symbolic links are followed.

    Why:
    `ftc check` runs in pre-commit and CI on specs from pull requests. A spec that could name
    `../../../../etc/shadow` would have ftc read a runner's secrets and print them in the log. The
    project root is the git repository holding the spec (else the working folder when the spec is
    below it, else the spec's folder), or a root declared with `--root DIR` or FTC_ROOT; an `hf:`
    base may also resolve into the Hugging Face cache. Nothing outside is opened or printed.
    """)

PATH_UNREADABLE = frontend("FT029", """
    A path cannot be followed or read: a symbolic link loop, or permission denied.

    Why:
    "does not exist" would send the author looking for a missing file; the diagnostic says what
    the operating system said, for the path as the spec wrote it.
    """)
