"""The unit and golden tests' Hugging Face cache: tests/golden/_hub (written by its make_hub.py).

`ftc check` looks for an `hf:` base in the local Hugging Face cache (FT154). The specs these tests
check name fake repositories (`hf:org/encoder` at revision `3f2a9c1`, ...); pointing HF_HUB_CACHE
at a cache that holds them makes every test see the same cache, never the developer's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HUB = Path(__file__).resolve().parents[1] / "golden" / "_hub"


@pytest.fixture(autouse=True)
def _test_hub(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(HUB))
    return HUB
