"""Every step the capability table names exists where it says (compiler/capabilities.py): the
executor calls `module_of(kind).step(kind)` for each plan node kind a backend runs."""

from __future__ import annotations

import importlib

import pytest

from ftc.compiler import capabilities as cap
from ftc.compiler.plan import NODE_KINDS


@pytest.mark.parametrize("backend", cap.BACKENDS, ids=lambda b: b.name)
def test_each_named_step_is_a_function_of_its_module(backend: cap.Backend) -> None:
    kinds = [k for k in (*NODE_KINDS, "evaluate_file") if backend.step(k) is not None]
    assert set(backend.train_steps) <= set(kinds) and {"evaluate", "latency"} <= set(kinds)
    for kind in kinds:
        module = importlib.import_module(backend.module_of(kind))
        name = backend.step(kind)
        assert callable(getattr(module, str(name), None)), f"{backend.name}: {module.__name__}.{name} for {kind}"
