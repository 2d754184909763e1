"""Which fields of a row a spec's signal reads: cheap helpers shared by the data analysis, the data
rules and run-time deduplication (no heavy imports, so the rule table stays fast to import).

RLHF reads its field names from its stages (compiler/schema.py RlhfSignal): the spec's `data`
holds the policy's prompts (`policy { prompt "..." }`), and the reward stage's pairs too when
that stage has no `data` of its own; a reward stage's own `data` holds its pairs
(`reward { prompt "..."; chosen "..."; rejected "..." }`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s

if TYPE_CHECKING:
    from ftc.compiler.data.splits import Part


def input_fields(spec: s.Spec, stage: str | None = None) -> tuple[str, ...]:
    """The fields whose text a model sees as input: what leakage between splits compares and what
    deduplication keys on. `stage` "reward" names the fields of an RLHF reward stage's own data;
    without it, the fields of the spec's `data`."""
    sig = spec.signal
    if sig is None:
        return ()
    if isinstance(sig, s.SftSignal):
        return (sig.messages,) if sig.messages else ((sig.input,) if sig.input else ())
    if isinstance(sig, s.DpoSignal):
        return (sig.prompt,)
    if isinstance(sig, s.RlhfSignal):
        return _rlhf_inputs(sig, stage)
    if isinstance(sig, s.ContrastiveSignal):
        return (sig.image,) if sig.image else ((sig.anchor,) if sig.anchor else ())
    return ()


def _rlhf_inputs(sig: s.RlhfSignal, stage: str | None) -> tuple[str, ...]:
    """The reward stage's prompt for its own data; for the spec's data the policy's prompt, and
    the reward stage's prompt as well when it trains on that data under another column."""
    reward, policy = sig.reward, sig.policy
    if stage == "reward":
        return (reward.prompt,) if reward is not None else ()
    fields: tuple[str, ...] = (policy.prompt,) if policy is not None else ()
    if reward is not None and reward.data is None and reward.prompt not in fields:
        fields += (reward.prompt,)
    return fields


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


def part_texts(spec: s.Spec, part: Part, stage: str | None = None) -> list[str]:
    """Per row of `part`, what duplicates and leakage compare: the input text, or for an image the
    hash of its bytes (the same path in two split folders can hold different images, and one image
    can be saved under two names)."""
    fields = input_fields(spec, stage)
    texts = [row_text(r, fields) for r in part.rows]
    if part.image_sha256:
        texts = [f"image:{part.image_sha256[t]}" if t in part.image_sha256 else t for t in texts]
    return texts


def target_field(spec: s.Spec) -> str | None:
    sig = spec.signal
    if sig is not None and sig.kind == "sft" and sig.target:
        return str(sig.target)
    model = spec.model
    if model is not None and model.task == "image_classification":
        return "label"
    return None
