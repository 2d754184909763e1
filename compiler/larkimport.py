"""Import lark without the third-party `regex` module.

lark imports `regex` eagerly when it is installed (transformers installs it) but uses it only with
`Lark(..., regex=True)`, which ftc never passes. Hiding it while lark loads saves ~12 ms of every
`ftc check`. Every module that needs lark imports this one first.
"""

from __future__ import annotations

import sys

_hidden = "regex" not in sys.modules
if _hidden:
    sys.modules["regex"] = None  # type: ignore[assignment]  # makes `import regex` raise ImportError
try:
    import lark
    import lark.parsers.lalr_analysis  # noqa: F401
finally:
    if _hidden:
        del sys.modules["regex"]
