"""ftc: a declarative experiment-spec compiler for fine-tuning.

The repository keeps the card's top level (grammar/, compiler/, runtime/); pyproject.toml maps
those folders into this one namespace (ftc.grammar, ftc.compiler, ftc.runtime) so that no generic
top-level name lands in users' site-packages.
"""

__version__ = "0.1.0"
