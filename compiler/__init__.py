"""The compiler front end: source -> AST -> CheckedSpec -> diagnostics (no heavy imports)."""
