"""Static estimates: parameter count and training memory per GPU. No torch; reads config.json and
the safetensors header when the base is a local folder, otherwise the spec's declared `params`.

The memory model (documented so that users can check it), calibrated against peaks measured on an
H100 with ftc's text backend (bench/memory_estimate.py, bench/results/memory_estimate_h100.json:
Llama-style models of 135M to 3B parameters and a BERT encoder; full, LoRA and QLoRA; sequence 512 and
2048; batch 1 to 8; gradient checkpointing on and off; checked on Qwen2-0.5B, TinyLlama-1.1B and GPT-2
shapes held out of the fit: bench/results/memory_estimate_h100_holdout.json). Vision models get the
same per-token terms with 197 tokens per image when config.json gives a transformer's shape; a timm
folder (no shape in its config.json, parameters counted from the safetensors headers) gets a measured
per-image activation term instead (_IMAGE_ACT: resnet18/50, convnext_tiny, vit_small on an H100,
bench/memory_vision.py; every case over-estimated, by 12-56%); multimodal (open_clip) is unmeasured.
Weights load in the dtype they were saved in (config.json `dtype`/`torch_dtype`, else the safetensors
header; transformers' `dtype="auto"`); when nothing says, a base of 1B parameters or more is taken to
be 16-bit and a smaller one fp32.
  weights      full fine-tune: params x bytes of that dtype (a 16-bit checkpoint trains in 16 bits
               under bf16/fp16 mixed precision: the Trainer does not upcast it). LoRA and other adapters:
               the frozen base likewise, plus the adapter weights in fp32. QLoRA (and `quantize 4bit`):
               the linear layers at 0.516 bytes/param with double quantisation (nf4 + uint8 absmax per 64
               + fp32 per 256 blocks), 0.5625 without; `quantize 8bit` at 1 byte; the rest (embeddings,
               an untied LM head, norms) in fp32, where `prepare_model_for_kbit_training` puts it
  gradients    trainable params x bytes of their dtype (the weights' for a full fine-tune, 4 for adapters)
  optimizer    AdamW: two moments in the trainable params' dtype, plus one more such buffer during the
               step (torch's foreach implementation); 8-bit AdamW: 2 bytes/param; SGD: one buffer
  activations  per token (sequence x micro-batch) and layer, a_h x hidden + a_f x ffn bytes (_ACT, by
               method and MLP kind; + 10.5 x ffn for an activation computed in several elementwise ops,
               such as GPT-2's gelu_new; SDPA attention stores no seq x seq scores); with gradient
               checkpointing, per token 2 x hidden per layer (4 when the residual stream is fp32: QLoRA,
               fp32 checkpoints) plus one layer recomputed in the backward pass (_ACT_GC); x 2 for fp32
               weights in fp32 precision. Without checkpointing, also autocast's 16-bit copies of fp32
               weights (2 bytes/param) and, for a full fine-tune of a causal LM, the LM head's gradient
               accumulated in fp32 (vocab x hidden x 4). Generation: the tiled LM-head projection of ftc's
               SFT trainer, up to 4096 tokens x 32768 vocabulary entries x 2 bytes.
               Gradients fill in while the backward pass frees activations, so the peak is weights +
               optimizer state + the larger of (activations) and (gradients + the step's buffer); the
               `activations` part is what the backward pass needs beyond the gradients and the step's
               buffer (0 when the optimizer step is the peak), so that the parts add up to the total
  overhead     1.3 GB (0.85 for the CUDA context and cuBLAS workspace: 0.80-0.82 GB measured outside
               PyTorch's allocator plus 0.07 GB allocated before the model; 0.45 of allocator reserve)
               plus 13% of the allocated peak for the caching allocator's fragmentation (measured
               reserved/allocated at the peak: median 1.05, 90th percentile 1.16, at most 1.37). The
               margins make every measured case an over-estimate (by 1-38%, median 14%): a budget
               check must not pass a run that cannot fit
Trainable parameters of a full fine-tune with `freeze`/`unfreeze` (compiler/weights.py, matched as the
runtime matches `named_parameters()`): counted exactly from a local base's safetensors headers; without
weights, matched against the Llama-style module names laid out from config.json's shape, or from a
shape guessed from `params` (both approximate, and the estimate says so); when the patterns name no
module of such a layout, every parameter is counted (and the estimate says that too). A Mixtral-style
MoE layer (config.json `num_local_experts`) counts every expert's weights, and its activations the
`num_experts_per_tok` experts each token passes through (unmeasured).
Sharding: ZeRO-1 divides optimizer state by the GPU count, ZeRO-2 also gradients, ZeRO-3 and FSDP
(full) also weights; DDP divides nothing. Not modelled: the extra forward passes of preference training
(DPO's reference model, RLHF), eager attention's seq x seq scores, full logits of trainers that
materialise them (ftc's SFT trainer projects the LM head in tiles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s
from ftc.compiler import weights as wt

GB = 1e9
CONTEXT = 0.85 * GB  # CUDA context and cuBLAS workspace
SLACK = 0.45 * GB  # the caching allocator's reserve beyond what is allocated: a floor ...
FRAGMENTATION = 0.13  # ... and a share of what is allocated
OVERHEAD = CONTEXT + SLACK  # the fixed part of the overhead

# Activation bytes per token and layer: (x hidden, x ffn), 16-bit autocast, SDPA attention, for a gated
# MLP (Llama-style, 3 matrices) and a plain one (2): least-squares fits of the measured peaks, rounded up.
_ACT: dict[str, tuple[float, float]] = {"full": (22.0, 8.5), "lora": (30.0, 10.0), "qlora": (31.0, 15.5)}
_ACT_PLAIN: dict[str, tuple[float, float]] = {"full": (22.0, 6.0), "lora": (30.0, 7.0), "qlora": (31.0, 8.5)}
# With gradient checkpointing: the layer recomputed in the backward pass, with its gradients, per token.
_ACT_GC: dict[str, tuple[float, float]] = {"full": (33.5, 18.0), "lora": (33.5, 18.0), "qlora": (30.0, 22.5)}
# ftc's SFT trainer projects the LM head in tiles of up to 4096 tokens x 32768 vocabulary entries.
_HEAD_TILE = (4096, 32768)
_DTYPE_BYTES = {"float32": 4.0, "float": 4.0, "float16": 2.0, "half": 2.0, "bfloat16": 2.0, "float64": 8.0,
                "F32": 4.0, "F16": 2.0, "BF16": 2.0, "F64": 8.0}
_GATED_ACTS = ("silu", "swish", "swiglu", "geglu", "gelu_pytorch_tanh")
# Activations that transformers computes in several elementwise ops, each keeping an ffn-wide tensor for
# the backward pass (GPT-2's gelu_new): bytes per token, layer and ffn unit on top of _ACT / _ACT_GC.
_UNFUSED_ACTS = ("gelu_new", "gelu_fast", "gelu_python", "gelu_python_tanh", "gelu_accurate", "gelu_10",
                 "quick_gelu", "laplace", "mish", "relu2")
_UNFUSED_EXTRA = 10.5
# A timm image classifier known only by its parameter count (its config.json gives no shape): bytes of
# activations per image and parameter at 224², bf16 autocast, by method (LoRA on convolutions keeps
# each adapted layer's input and low-rank intermediate as well). Fitted to resnet18, resnet50,
# convnext_tiny and vit_small_patch16_224 trained by ftc's vision backend on an H100 (batch 8 and 32,
# bench/memory_vision.py, bench/results/memory_vision_h100.json): the whole estimate is 1.12-1.56x the
# measured footprint (median 1.33). Not covered: depthwise-heavy nets (EfficientNet, MobileNet) keep far
# more activations per parameter, so this term can under-estimate them; declare a larger budget there.
_IMAGE_ACT: dict[str, float] = {"full": 2.0, "lora": 2.8}
DECLARED_VOCAB = 50_000  # vocabulary assumed when only `params` is known


@dataclass(frozen=True)
class Shape:
    params: float
    layers: int
    hidden: int
    heads: int
    ffn: int
    source: str  # where the numbers come from
    vocab: int = 0
    tied: bool = True
    kv_dim: int = 0  # width of the key and value projections (grouped-query attention); 0: hidden
    gated: bool = True  # MLP with a gate projection (Llama-style, 3 matrices) or plain (2)
    dtype_bytes: float | None = None  # bytes per weight as saved; None: unknown
    unfused_act: bool = False  # an MLP activation computed in several elementwise ops (_UNFUSED_ACTS)
    guessed: bool = False  # only the parameter count is known (a timm/open_clip folder, declared params)
    pixels: int = 224 * 224  # input pixels per image (timm's pretrained_cfg input_size), for vision models
    experts: int = 0  # Mixtral-style MoE: experts per layer (0: dense)
    experts_per_token: int = 1  # experts each token passes through (activations)
    # the tensors freeze/unfreeze patterns select from, and where their names come from:
    # "safetensors" (exact), "config.json" (laid out from its shape), "params" (from a guessed shape)
    tensors: tuple[wt.Tensor, ...] = field(default=(), repr=False, compare=False)
    layout: str = ""


@dataclass(frozen=True)
class Estimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    trainable: float
    shape: Shape
    trainable_note: str = ""  # how `trainable` was counted, when freeze/unfreeze patterns apply

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def parts(self) -> list[tuple[str, float]]:
        return [("weights", self.weights), ("gradients", self.gradients), ("optimizer state", self.optimizer),
                ("activations", self.activations), ("overhead", self.overhead)]


def is_local(base: str) -> bool:
    return ":" not in base.split("/")[0] or base.startswith(("./", "/", "../"))


@dataclass(frozen=True)
class _Dims:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    tied: bool
    kv_dim: int
    gated: bool
    dtype_bytes: float | None
    unfused_act: bool
    model_type: str | None = None
    experts: int = 0
    experts_per_token: int = 1

    def params(self) -> float:
        h, f = self.hidden, self.ffn
        mlp = (3 if self.gated else 2) * h * f
        if self.experts:
            mlp = self.experts * (mlp + h)  # every expert, and the router
        per_layer = 2 * h * h + 2 * h * self.kv_dim + mlp
        return float(self.layers * per_layer + self.vocab * h * (1 if self.tied else 2))

    def layout(self) -> tuple[wt.Tensor, ...]:
        return wt.llama_layout(wt.Dims(self.layers, self.hidden, self.ffn, self.vocab, self.kv_dim, self.gated,
                                       self.tied, self.experts))


def _from_config(cfg: dict[str, Any]) -> _Dims | None:
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
    kv_heads = get("num_key_value_heads", "num_kv_heads", "n_head_kv") or (1 if cfg.get("multi_query") else heads)
    head_dim = get("head_dim") or hidden // heads
    act = str(cfg.get("hidden_act") or cfg.get("hidden_activation") or cfg.get("activation_function") or "")
    gated = act in _GATED_ACTS or "gated" in str(cfg.get("feed_forward_proj", ""))
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    experts = get("num_local_experts") or 0  # Mixtral-style MoE
    model_type = cfg.get("model_type")
    return _Dims(hidden, layers, heads, ffn, vocab, tied, min(hidden, kv_heads * head_dim), gated,
                 _DTYPE_BYTES.get(str(dtype).removeprefix("torch.")) if dtype else None, act in _UNFUSED_ACTS,
                 model_type if isinstance(model_type, str) else None, experts,
                 (get("num_experts_per_tok") or 2) if experts else 1)


@dataclass(frozen=True)
class _Counted:
    params: float
    dtype_bytes: float | None  # of the first tensor
    tensors: tuple[wt.Tensor, ...]


def _safetensors(folder: Path, model_type: str | None) -> _Counted | None:
    """Parameter count, bytes per weight of the first tensor and every tensor, from the headers."""
    headers = wt.read_headers(folder)
    if not headers:
        return None
    tensors = wt.from_headers(headers, model_type)
    first = _DTYPE_BYTES.get(str(next(iter(headers.values()))[0]))
    return _Counted(float(sum(t.numel for t in tensors)), first, tensors)


def model_shape(model: s.Model, base_dir: Path) -> Shape | None:
    """Parameter count and transformer shape: local config.json / safetensors, else declared params."""
    if is_local(model.base):
        folder = Path(model.base) if Path(model.base).is_absolute() else base_dir / model.base
        cfg_path = folder / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
        except (OSError, ValueError):
            cfg = None
        d = _from_config(cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}) if cfg else None
        counted = _safetensors(folder, d.model_type if d is not None else None)
        if d is not None:
            return _shape_of(d, counted)
        if counted:  # a timm or open_clip folder: the count from the weights, the shape guessed from it
            return replace(_guessed(counted.params, "safetensors", counted.dtype_bytes, _pixels(cfg)),
                           tensors=counted.tensors, layout="safetensors")
    if model.params is None:
        return None
    shape = _guessed(model.params, "declared params", None, 224 * 224)
    dims = _Dims(shape.hidden, shape.layers, shape.heads, shape.ffn, shape.vocab, shape.tied, shape.hidden,
                 shape.gated, None, False)
    return replace(shape, tensors=dims.layout(), layout="params")


def _shape_of(d: _Dims, counted: _Counted | None) -> Shape:
    """A transformer's shape from config.json; the count and tensors from the weights when there are any."""
    params = counted.params if counted else d.params()
    dtype = d.dtype_bytes or (counted.dtype_bytes if counted else None)
    return Shape(params, d.layers, d.hidden, d.heads, d.ffn, "safetensors" if counted else "config.json",
                 d.vocab, d.tied, d.kv_dim, d.gated, dtype, d.unfused_act, experts=d.experts,
                 experts_per_token=d.experts_per_token, tensors=counted.tensors if counted else d.layout(),
                 layout="safetensors" if counted else "config.json")


def _pixels(cfg: Any) -> int:
    """Input pixels per image from timm's config.json (`pretrained_cfg.input_size` [C, H, W]), else 224²."""
    pre = cfg.get("pretrained_cfg") if isinstance(cfg, dict) else None
    size = pre.get("input_size") if isinstance(pre, dict) else None
    if isinstance(size, list) and len(size) == 3 and all(isinstance(x, int) and x > 0 for x in size[1:]):
        return int(size[1] * size[2])
    return 224 * 224


def _guessed(params: float, source: str, dtype: float | None, pixels: int) -> Shape:
    """A transformer shape for a parameter count alone (layers ~ cube root of the count)."""
    layers = max(1, round((params / (12 * 128 * 128)) ** (1 / 3)))
    hidden = max(64, 128 * layers)
    vocab = min(DECLARED_VOCAB, int(0.2 * params / hidden))
    return Shape(params, layers, hidden, max(1, hidden // 128), 4 * hidden, source, vocab, dtype_bytes=dtype,
                 guessed=True, pixels=pixels)


def _trainable(method: Any, shape: Shape) -> float:
    h, n_layers = shape.hidden, shape.layers
    if method.kind == "full":
        return shape.params
    if method.kind in ("lora", "qlora"):
        if "all-linear" in method.targets:
            kv = shape.kv_dim or h
            per_layer = 2 * (2 * h) + 2 * (h + kv) + (3 if shape.gated else 2) * (h + shape.ffn)
        else:
            per_layer = len(method.targets) * 2 * h
        return float(method.rank * per_layer * n_layers)
    if method.kind == "adapters":
        return float(n_layers * 2 * h * method.bottleneck * (2 if method.placement == "both" else 1))
    if method.kind == "prompt_tuning":
        return float(method.virtual_tokens * h)
    return float(method.prefix_length * n_layers * 2 * h)


_LAYOUTS = {"config.json": "the Llama-style module names laid out from config.json's shape (no weights to read)",
            "params": "the Llama-style module names of a shape guessed from `params`"}
_ALL = "every parameter counted as trainable: "


def trainable_params(method: Any, shape: Shape) -> tuple[float, str]:
    """Parameters the method trains, and how a full fine-tune's were counted under its
    `freeze`/`unfreeze` patterns ("" when nothing needs saying: the method's own count, or every
    parameter of a full fine-tune without patterns)."""
    if method.kind != "full":
        return _trainable(method, shape), ""
    freeze, unfreeze = tuple(method.freeze), tuple(method.unfreeze)
    if not freeze and not unfreeze:
        return shape.params, ""
    if not shape.tensors:
        return shape.params, _ALL + "freeze/unfreeze cannot be matched without the base's weights or config.json"
    sel = wt.select(shape.tensors, freeze, unfreeze)
    if shape.layout == "safetensors":
        return float(sel.trainable), _exact_note(sel, len(shape.tensors))
    where = _LAYOUTS.get(shape.layout, "an assumed layout")
    missing = tuple(p for p in sel.unmatched if p in unfreeze)
    if missing:
        return shape.params, _ALL + f"{wt.describe(missing)} names no module of {where}"
    scale = shape.params / sel.total if shape.layout == "params" and sel.total else 1.0
    return sel.trainable * scale, f"approximate: freeze/unfreeze matched against {where}"


def _exact_note(sel: wt.Selection, tensors: int) -> str:
    note = f"{sel.tensors} of {tensors} tensors selected by freeze/unfreeze, counted from the safetensors headers"
    if sel.unmatched:
        note += f"; {wt.describe(sel.unmatched)} matches no tensor (the run stops on it)"
    return note


def weight_bytes(shape: Shape) -> float:
    """Bytes per weight as loaded: the saved dtype, else 2 from 1B parameters up and 4 below."""
    if shape.dtype_bytes is not None:
        return shape.dtype_bytes
    return 2.0 if shape.params >= 1e9 else 4.0


def _quant_bytes(method: Any, model: s.Model) -> float | None:
    """Bytes per quantised linear weight, or None for a base that is not quantised."""
    if method.kind == "qlora" or model.quantize == "4bit":
        return 0.516 if getattr(method, "double_quant", True) else 0.5625
    if model.quantize == "8bit":
        return 1.0
    return None


def _frozen_base(method: Any, model: s.Model, shape: Shape) -> tuple[float, bool]:
    """Bytes of the frozen base, and whether its residual stream runs in fp32."""
    w = weight_bytes(shape)
    q = _quant_bytes(method, model)
    if q is None:
        return shape.params * w, w >= 4
    embeddings = _embeddings(shape)
    return (shape.params - embeddings) * q + embeddings * 4.0, True  # the rest upcast to fp32


def _embeddings(shape: Shape) -> float:
    """Parameters a quantiser leaves in floating point (and k-bit preparation upcasts to fp32): the
    embeddings and an untied LM head; norms and biases are too small to count."""
    return min(shape.params, float(shape.vocab * shape.hidden * (1 if shape.tied else 2)))


def estimate(spec: s.Spec, shape: Shape, seq_len: int) -> Estimate:
    method, model = spec.method, spec.model
    tr = spec.train or s.Train()
    budget = spec.budget or s.Budget()
    assert method is not None and model is not None
    trainable, note = trainable_params(method, shape)
    w = weight_bytes(shape)
    if method.kind == "full":
        weights, fp32_stream, tb = shape.params * w, w >= 4, w
        key = "full"
    else:
        weights, fp32_stream = _frozen_base(method, model, shape)
        weights += trainable * 4.0
        tb = 4.0  # adapter weights are fp32 (peft's autocast_adapter_dtype)
        key = "qlora" if _quant_bytes(method, model) is not None else "lora"
    grads = trainable * tb
    if tr.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        states, step = trainable * 2.0, 0.0
    elif tr.optimizer == "sgd":
        states, step = trainable * tb, 0.0
    else:
        states, step = trainable * 2 * tb, trainable * tb
    if model.modality == "vision" and shape.guessed:
        acts = _image_activations(key, shape, tr.batch_size, tr.precision == "fp32")
    else:
        acts = _activations(key, shape, seq_len * tr.batch_size, tr.gradient_checkpointing,
                            fp32_stream, tr.precision == "fp32" and w >= 4)
    if model.task in ("generation", "extraction"):
        acts += min(seq_len * tr.batch_size, _HEAD_TILE[0]) * min(shape.vocab, _HEAD_TILE[1]) * 2.0
    if not tr.gradient_checkpointing:
        if method.kind == "full" and model.task != "classification":
            acts += shape.vocab * shape.hidden * 4.0  # the LM head's gradient, accumulated in fp32 first
        if w >= 4 and tr.precision != "fp32" and key != "qlora":
            acts += shape.params * 2.0  # autocast's 16-bit copies of fp32 weights, kept for the backward pass
    weights, grads, states, step = _shard(budget, weights, grads, states, step)
    beyond = max(0.0, acts - grads - step)  # gradients fill in while activations are freed
    allocated = weights + states + max(acts, grads + step)
    if key == "qlora":  # loading: the 16-bit embeddings are still there while their fp32 copies are made
        beyond += max(0.0, weights + _embeddings(shape) * 2.0 - allocated)
        allocated = max(allocated, weights + _embeddings(shape) * 2.0)
    return Estimate(weights, grads, states + step, beyond, OVERHEAD + FRAGMENTATION * allocated, trainable, shape,
                    note)


def _image_activations(key: str, shape: Shape, images: int, fp32: bool) -> float:
    """A timm image model known only by its parameter count: bytes kept for the backward pass per
    image, _IMAGE_ACT[method] x parameters x (pixels / 224²), doubled in fp32."""
    per_image = _IMAGE_ACT["full" if key == "full" else "lora"] * shape.params * shape.pixels / (224 * 224)
    return images * per_image * (2.0 if fp32 else 1.0)


def _activations(key: str, shape: Shape, tokens: int, checkpointing: bool, fp32_stream: bool,
                 fp32_all: bool) -> float:
    h, f = shape.hidden, shape.ffn * shape.experts_per_token
    scale = 2.0 if fp32_all else 1.0
    extra = _UNFUSED_EXTRA if shape.unfused_act else 0.0
    if checkpointing:
        a_h, a_f = _ACT_GC[key]
        per_token = (4.0 if fp32_stream else 2.0) * h * shape.layers + scale * (a_h * h + (a_f + extra) * f)
    else:
        a_h, a_f = (_ACT if shape.gated else _ACT_PLAIN)[key]
        per_token = scale * (a_h * h + (a_f + extra) * f) * shape.layers
    return tokens * per_token


def _shard(budget: s.Budget, w: float, g: float, o: float, step: float) -> tuple[float, float, float, float]:
    n = budget.gpus * budget.nodes
    if n <= 1:
        return w, g, o, step
    stage = budget.deepspeed_stage if budget.strategy == "deepspeed" else None
    if budget.strategy == "fsdp":
        stage = {"full": 3, "hybrid": 3, "grad_op": 2}.get(budget.fsdp_sharding or "full", 3)
    if stage is None:
        return w, g, o, step
    return (w / n if stage >= 3 else w, g / n if stage >= 2 else g, o / n, step / n)


def default_seq_len(spec: s.Spec) -> int:
    data = spec.data
    if data is not None and data.max_length is not None:
        return data.max_length.tokens
    model = spec.model
    return 197 if model is not None and model.modality != "text" else 512


def fmt_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 1e6:.0f} MB"
