"""Static estimates: parameter count and training memory per GPU. No torch; reads config.json or
a safetensors header when the base is a local folder, otherwise the spec's declared `params`.

The memory model (documented so that users can check it):
  weights      frozen base: params × bytes of its dtype (4-bit ≈ 0.52 bytes with double
               quantisation, 0.56 without; 8-bit = 1); a full fine-tune in mixed precision keeps
               fp32 master weights and 16-bit copies (6 bytes/param), in fp32 4 bytes/param
  gradients    trainable params × 4 bytes (2 for a 16-bit full fine-tune)
  optimizer    AdamW: 8 bytes per trainable param (two fp32 moments); 8-bit AdamW: 2; SGD: 4
  activations  per layer, seq × batch × hidden × (34 + 5 × heads × seq / hidden) bytes (Korthikanti
               et al. 2022, 16-bit); × 2 in fp32; with gradient checkpointing 2 × seq × batch × hidden
  overhead     0.75 GB for the CUDA context and allocator fragmentation
Sharding: ZeRO-1 divides optimizer state by the GPU count, ZeRO-2 also gradients, ZeRO-3 and FSDP
(full) also weights; DDP divides nothing.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s

GB = 1e9
OVERHEAD = 0.75 * GB


@dataclass(frozen=True)
class Shape:
    params: float
    layers: int
    hidden: int
    heads: int
    ffn: int
    source: str  # where the numbers come from


@dataclass(frozen=True)
class Estimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    trainable: float
    shape: Shape

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def parts(self) -> list[tuple[str, float]]:
        return [("weights", self.weights), ("gradients", self.gradients), ("optimizer state", self.optimizer),
                ("activations", self.activations), ("overhead", self.overhead)]


def _is_local(base: str) -> bool:
    return ":" not in base.split("/")[0] or base.startswith(("./", "/", "../"))


def _from_config(cfg: dict[str, Any]) -> tuple[int, int, int, int, int, bool] | None:
    def get(*names: str) -> Any:
        return next((cfg[n] for n in names if isinstance(cfg.get(n), int)), None)

    hidden = get("hidden_size", "n_embd", "d_model", "dim")
    layers = get("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if hidden is None or layers is None:
        return None
    heads = get("num_attention_heads", "n_head", "num_heads") or max(1, hidden // 64)
    ffn = get("intermediate_size", "n_inner", "ffn_dim", "d_ff") or 4 * hidden
    vocab = get("vocab_size") or 0
    tied = bool(cfg.get("tie_word_embeddings", True))
    return hidden, layers, heads, ffn, vocab, tied


def _safetensors_params(folder: Path) -> float | None:
    total = 0.0
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        try:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta.get("shape", [])) if meta.get("shape") else 1
    return total or None


def model_shape(model: s.Model, base_dir: Path) -> Shape | None:
    """Parameter count and transformer shape: local config.json / safetensors, else declared params."""
    if _is_local(model.base):
        folder = Path(model.base) if Path(model.base).is_absolute() else base_dir / model.base
        cfg_path = folder / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
        except (OSError, ValueError):
            cfg = None
        dims = _from_config(cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}) if cfg else None
        if dims is not None:
            hidden, layers, heads, ffn, vocab, tied = dims
            counted = _safetensors_params(folder)
            params = counted or (layers * (4 * hidden * hidden + 2 * hidden * ffn) + vocab * hidden * (1 if tied else 2))
            return Shape(params, layers, hidden, heads, ffn, "safetensors" if counted else "config.json")
    if model.params is None:
        return None
    layers = max(1, round((model.params / (12 * 128 * 128)) ** (1 / 3)))
    hidden = max(64, 128 * layers)
    return Shape(model.params, layers, hidden, max(1, hidden // 128), 4 * hidden, "declared params")


def _trainable(method: Any, shape: Shape) -> float:
    h, n_layers = shape.hidden, shape.layers
    if method.kind == "full":
        return shape.params
    if method.kind in ("lora", "qlora"):
        if "all-linear" in method.targets:
            per_layer = 4 * (2 * h) + 3 * (h + shape.ffn)
        else:
            per_layer = len(method.targets) * 2 * h
        return float(method.rank * per_layer * n_layers)
    if method.kind == "adapters":
        return float(n_layers * 2 * h * method.bottleneck * (2 if method.placement == "both" else 1))
    if method.kind == "prompt_tuning":
        return float(method.virtual_tokens * h)
    return float(method.prefix_length * n_layers * 2 * h)


def _base_bytes(method: Any, model: s.Model, precision: str) -> float:
    if method.kind == "qlora" or model.quantize == "4bit":
        return 0.52 if getattr(method, "double_quant", True) else 0.56
    if model.quantize == "8bit":
        return 1.0
    return 4.0 if precision == "fp32" else 2.0


def estimate(spec: s.Spec, shape: Shape, seq_len: int) -> Estimate:
    method, model = spec.method, spec.model
    tr = spec.train or s.Train()
    budget = spec.budget or s.Budget()
    assert method is not None and model is not None
    trainable = _trainable(method, shape)
    mixed = tr.precision != "fp32"
    if method.kind == "full":
        weights = shape.params * (6.0 if mixed else 4.0)
        grads = trainable * (2.0 if mixed else 4.0)
    else:
        weights = shape.params * _base_bytes(method, model, tr.precision) + trainable * 4
        grads = trainable * 4.0
    opt_bytes = {"adamw": 8.0, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 4.0}[tr.optimizer]
    optimizer = trainable * opt_bytes
    s_, b, h, a = seq_len, tr.batch_size, shape.hidden, shape.heads
    if tr.gradient_checkpointing:
        acts = 2.0 * s_ * b * h * shape.layers
    else:
        acts = s_ * b * h * (34 + 5 * a * s_ / h) * shape.layers
    acts *= 2.0 if tr.precision == "fp32" else 1.0
    weights, grads, optimizer = _shard(budget, weights, grads, optimizer)
    return Estimate(weights, grads, optimizer, acts, OVERHEAD, trainable, shape)


def _shard(budget: s.Budget, w: float, g: float, o: float) -> tuple[float, float, float]:
    n = budget.gpus * budget.nodes
    if n <= 1:
        return w, g, o
    stage = budget.deepspeed_stage if budget.strategy == "deepspeed" else None
    if budget.strategy == "fsdp":
        stage = {"full": 3, "hybrid": 3, "grad_op": 2}.get(budget.fsdp_sharding or "full", 3)
    if stage is None:
        return w, g, o
    return (w / n if stage >= 3 else w, g / n if stage >= 2 else g, o / n)


def default_seq_len(spec: s.Spec) -> int:
    data = spec.data
    if data is not None and data.max_length is not None:
        return data.max_length.tokens
    model = spec.model
    return 197 if model is not None and model.modality != "text" else 512


def fmt_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 1e6:.0f} MB"
