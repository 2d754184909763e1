"""A base model's tensors without loading them, and which of them a full fine-tune trains.

No torch: a local folder's safetensors headers give every tensor's name, dtype and shape (the one
header reader of the front end: compiler/estimate.py and bench/ read headers through it). Without
weights, `llama_layout` lays the tensors out from a config's shape, named as transformers names
a Llama-family model's parameters (`model.layers.3.mlp.gate_proj.weight`; a Mixtral-style MoE
layer's router `mlp.gate` and experts `mlp.experts.gate_up_proj` / `down_proj`): an approximation.

Names are matched as the runtime matches them (`name_matches`, runtime/backends/text.py applies
the same rule to `model.named_parameters()`): `freeze`/`unfreeze` patterns select parameters by
fnmatch on the full name, a module prefix, a run of components or a suffix. Transformers 5 renames
some checkpoints' tensors when it loads them: Mixtral-style and Qwen2-MoE-style checkpoints keep
one tensor per expert (`block_sparse_moe.experts.3.w1.weight`) that it fuses into one per layer
(`mlp.experts.gate_up_proj`; transformers/conversion_mapping.py). Each tensor here carries both
names, so a pattern written against either selects it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tensor:
    """One tensor: its names (as saved, then as the runtime's parameter), its size and dtype."""

    names: tuple[str, ...]
    numel: int
    dtype: str | None = None


def read_headers(folder: Path) -> dict[str, tuple[str | None, tuple[int, ...]]] | None:
    """name -> (dtype, shape) of every tensor in the folder's *.safetensors files (their JSON
    headers only); {} when there are none, None when a header cannot be read."""
    out: dict[str, tuple[str | None, tuple[int, ...]]] = {}
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        if not isinstance(header, dict):
            return None
        for name, meta in header.items():
            if name != "__metadata__" and isinstance(meta, dict):
                dtype = meta.get("dtype")
                out[name] = (str(dtype) if dtype else None, tuple(int(x) for x in meta.get("shape") or ()))
    return out


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


# Transformers 5's load-time renames of MoE experts (conversion_mapping.py), by model_type.
_MIXTRAL_STYLE = frozenset({"mixtral", "minimax", "minimax_m2"})
_QWEN2_MOE_STYLE = frozenset({"qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe",
                              "dots1", "ernie4_5_moe", "hunyuan_v1_moe", "flex_olmo", "exaone_moe",
                              "cohere2_moe", "qwen3_next"})
_MIXTRAL_EXPERT = re.compile(r"\.experts\.\d+\.w([123])\.weight$")
_QWEN_EXPERT = re.compile(r"\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight$")


def runtime_name(name: str, model_type: str | None) -> str:
    """The parameter name transformers gives a checkpoint tensor once loaded (the same name for
    most models; MoE experts fused per layer for the Mixtral and Qwen2-MoE families)."""
    if model_type in _MIXTRAL_STYLE:
        name = name.replace(".block_sparse_moe.", ".mlp.")
        m = _MIXTRAL_EXPERT.search(name)
        if m:
            fused = "down_proj" if m.group(1) == "2" else "gate_up_proj"
            return name[:m.start()] + f".experts.{fused}"
    elif model_type in _QWEN2_MOE_STYLE:
        m = _QWEN_EXPERT.search(name)
        if m:
            fused = "down_proj" if m.group(1) == "down_proj" else "gate_up_proj"
            return name[:m.start()] + f".experts.{fused}"
    return name


def from_headers(headers: dict[str, tuple[str | None, tuple[int, ...]]], model_type: str | None) -> tuple[Tensor, ...]:
    out = []
    for name, (dtype, shape) in headers.items():
        loaded = runtime_name(name, model_type)
        out.append(Tensor((name, loaded) if loaded != name else (name,), numel(shape), dtype))
    return tuple(out)


@dataclass(frozen=True)
class Dims:
    """What `llama_layout` needs of a shape (compiler/estimate.py's Shape has these fields)."""

    layers: int
    hidden: int
    ffn: int
    vocab: int
    kv_dim: int
    gated: bool
    tied: bool
    experts: int = 0  # Mixtral-style MoE: experts per layer (0: a dense MLP)


def llama_layout(d: Dims) -> tuple[Tensor, ...]:
    """The parameters of a Llama-family causal LM of this shape, named as transformers names them
    (and, for MoE experts, also as Mixtral checkpoints save them)."""
    h, kv = d.hidden, d.kv_dim or d.hidden
    out = [Tensor(("model.embed_tokens.weight",), d.vocab * h)]
    for i in range(d.layers):
        p = f"model.layers.{i}"
        out += [Tensor((f"{p}.self_attn.{n}.weight",), size) for n, size in
                (("q_proj", h * h), ("k_proj", kv * h), ("v_proj", kv * h), ("o_proj", h * h))]
        out += _mlp(p, d)
        out += [Tensor((f"{p}.{n}.weight",), h) for n in ("input_layernorm", "post_attention_layernorm")]
    out.append(Tensor(("model.norm.weight",), h))
    if not d.tied:
        out.append(Tensor(("lm_head.weight",), d.vocab * h))
    return tuple(out)


def _mlp(p: str, d: Dims) -> list[Tensor]:
    h, f = d.hidden, d.ffn
    if not d.experts:
        return [Tensor((f"{p}.mlp.{n}.weight",), h * f) for n in ("gate_proj", "up_proj", "down_proj")
                if d.gated or n != "gate_proj"]
    out = [Tensor((f"{p}.block_sparse_moe.gate.weight", f"{p}.mlp.gate.weight"), d.experts * h)]
    for j in range(d.experts):
        saved = f"{p}.block_sparse_moe.experts.{j}"
        out += [Tensor((f"{saved}.w1.weight", f"{p}.mlp.experts.gate_up_proj"), h * f),
                Tensor((f"{saved}.w2.weight", f"{p}.mlp.experts.down_proj"), h * f),
                Tensor((f"{saved}.w3.weight", f"{p}.mlp.experts.gate_up_proj"), h * f)]
    return out


# ---------------------------------------------------------------------------------------------
# freeze / unfreeze


def name_matches(name: str, pattern: str) -> bool:
    """A freeze/unfreeze pattern matches a parameter by fnmatch on its full name, on a module
    prefix (`bert.embeddings`), a component run (`embeddings`, `layer.0`) or a suffix (`bias`)."""
    return any(fnmatch.fnmatchcase(name, p) for p in (pattern, f"{pattern}.*", f"*.{pattern}", f"*.{pattern}.*"))


def _any_name(t: Tensor, pattern: str) -> bool:
    return any(name_matches(n, pattern) for n in t.names)


def trains(t: Tensor, freeze: tuple[str, ...], unfreeze: tuple[str, ...]) -> bool:
    """Whether a full fine-tune trains the tensor: only what `unfreeze` names (all when it is
    empty), never what `freeze` names."""
    if unfreeze and not any(_any_name(t, pat) for pat in unfreeze):
        return False
    return not any(_any_name(t, pat) for pat in freeze)


@dataclass(frozen=True)
class Selection:
    """What freeze/unfreeze select of a list of tensors."""

    trainable: int  # elements of the selected tensors
    total: int  # elements of all tensors
    tensors: int  # how many tensors are selected
    unmatched: tuple[str, ...]  # patterns that match no tensor (the run stops on them)


def select(tensors: tuple[Tensor, ...], freeze: tuple[str, ...], unfreeze: tuple[str, ...]) -> Selection:
    chosen = [t for t in tensors if trains(t, freeze, unfreeze)]
    unmatched = tuple(p for p in (*unfreeze, *freeze) if not any(_any_name(t, p) for t in tensors))
    return Selection(sum(t.numel for t in chosen), sum(t.numel for t in tensors), len(chosen), unmatched)


def describe(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names)
