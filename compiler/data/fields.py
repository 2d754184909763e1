"""Which fields of a row a spec's signal reads: cheap helpers shared by the data analysis and the
data rules (no heavy imports, so the rule table stays fast to import)."""

from __future__ import annotations

import json
from typing import Any

from ftc.compiler import schema as s


def input_fields(spec: s.Spec) -> tuple[str, ...]:
    """The fields whose text a model sees as input: what leakage between splits compares."""
    sig = spec.signal
    if sig is None:
        return ()
    if sig.kind == "sft":
        return (sig.messages,) if sig.messages else ((sig.input,) if sig.input else ())
    if sig.kind in ("dpo", "rlhf"):
        return (getattr(sig, "prompt", None) or "prompt",)
    if sig.kind == "contrastive":
        return (sig.image,) if sig.image else ((sig.anchor,) if sig.anchor else ())
    return ()


def row_text(row: dict[str, Any], fields: tuple[str, ...]) -> str:
    parts: list[str] = []
    for name in fields:
        value = row.get(name)
        if isinstance(value, list):  # chat messages: every non-assistant turn
            parts.extend(str(m.get("content", "")) for m in value
                         if isinstance(m, dict) and m.get("role") != "assistant")
        elif value is not None:
            parts.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return "\n".join(parts)


def target_field(spec: s.Spec) -> str | None:
    sig = spec.signal
    if sig is not None and sig.kind == "sft" and sig.target:
        return str(sig.target)
    model = spec.model
    if model is not None and model.task == "image_classification":
        return "label"
    return None
