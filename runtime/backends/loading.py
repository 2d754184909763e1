"""Load a base model from its folder (a local folder, or an `hf:` base's snapshot in the Hugging Face
cache, found offline by compiler/hub.py as `ftc check` finds it): labels, quantisation, tokenizer.

Weights load from safetensors only: `require_safetensors` refuses a folder whose loader would
unpickle a file (the words of FT162, compiler/basemodel.py decides which file that is), every
transformers `from_pretrained` of weights here passes `use_safetensors=True`, and `require_peft_safetensors`
refuses an adapter folder without adapter_model.safetensors (peft would torch.load adapter_model.bin).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.compiler import basemodel, hub
from ftc.runtime.api import TrainContext
from ftc.runtime.backends.hf import device_of, is_classification, task_of

if TYPE_CHECKING:
    import torch

HUB_PREFIXES = ("hf:", "hf://", "timm:", "open_clip:", "http://", "https://")


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) in one call."""
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def base_dir(ctx: TrainContext) -> Path:
    """The base model's folder, absolute: a local folder, or the cached snapshot of an `hf:` base at
    its revision (nothing is downloaded); other hub ids and missing folders are refused."""
    model = ctx.spec.model
    cached = hub.find_base(model.base, getattr(model, "revision", None))
    if cached is not None:
        if cached.folder is None:
            raise ValueError(f"`base {model.base!r}`: {cached.problem} (looked in {cached.looked}), and ftc does "
                             f"not download at run time. Download it once: `{cached.download}`")
        path = cached.folder.resolve()
    elif model.base.startswith(HUB_PREFIXES):
        raise ValueError(f"`base {model.base!r}` is a hub id, and ftc does not download at run time. Download it once "
                         f"(e.g. `hf download {model.base.split(':', 1)[-1]} --local-dir models/NAME`) "
                         f"and set `base` to that local folder")
    else:
        path = ctx.base_path().expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"base model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json: not a transformers model folder")
    require_safetensors(path, "text")
    return path


def require_safetensors(folder: Path, modality: str) -> None:
    """Refuse a model folder whose loader (transformers, timm or open_clip) would unpickle a file."""
    pickles = basemodel.pickled_weights(folder, modality)
    if pickles:
        fix = basemodel.conversion(str(folder), modality, basemodel.architecture(folder))
        raise ValueError(f"{folder} holds its weights as pickles ({', '.join(pickles)}), which run code when "
                         f"loaded: ftc loads safetensors only. Convert them once, where you trust the file: `{fix}`")


def require_peft_safetensors(folder: Path) -> None:
    """An adapter folder must hold adapter_model.safetensors (else peft unpickles adapter_model.bin)."""
    if not (folder / "adapter_model.safetensors").is_file():
        found = ", ".join(basemodel.pickle_files(folder)) or "no weights"
        raise ValueError(f"the adapter {folder} has no adapter_model.safetensors ({found}): ftc loads safetensors "
                         "only (peft writes it with `save_pretrained(folder, safe_serialization=True)`)")


def labels_of(ctx: TrainContext) -> list[str]:
    """The spec's labels, or the sorted target values of the training split when it has none."""
    model = ctx.spec.model
    if model.labels:
        return list(model.labels)
    target = getattr(ctx.spec.signal, "target", None) or "label"
    part = ctx.parts.get("train")
    values = {str(r[target]) for r in (part.rows if part is not None else []) if r.get(target) is not None}
    if not values:
        raise ValueError("classification needs `labels` in `model` (or a target field in the training data)")
    return sorted(values)


def _dtype(name: str) -> torch.dtype:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def quantization_config(ctx: TrainContext, quantize: str | None, task: str) -> Any:
    """BitsAndBytesConfig for `method qlora` / `model.quantize`, or None."""
    from transformers import BitsAndBytesConfig

    method = ctx.spec.method
    if quantize is None:
        if method is not None and method.kind == "qlora":
            quantize = "4bit" if method.bits == 4 else "8bit" if method.bits == 8 else f"{method.bits}bit"
        else:
            quantize = ctx.spec.model.quantize
    if quantize in (None, "none"):
        return None
    # A classifier's head is freshly trained: it stays in floating point.
    skip = ["classifier", "score", "pre_classifier"] if is_classification(task) else None
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)  # type: ignore[no-untyped-call]
    if quantize != "4bit":
        raise ValueError(f"bitsandbytes quantises to 4 or 8 bits, not {quantize}")
    q = method if method is not None and method.kind == "qlora" else None
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type if q else "nf4",
        bnb_4bit_use_double_quant=q.double_quant if q else True,
        bnb_4bit_compute_dtype=_dtype(q.compute_dtype if q else "bf16"),
        llm_int8_skip_modules=skip,
    )


def virtual_positions(ctx: TrainContext) -> int:
    """Positions that prompt or prefix tuning takes before the text (the virtual tokens, or the
    prefix's key/value length, which shifts the text's position ids): less room for the text."""
    m = ctx.spec.method
    if m is None:
        return 0
    return int(m.virtual_tokens if m.kind == "prompt_tuning" else m.prefix_length if m.kind == "prefix_tuning" else 0)


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"the tokenizer in {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def model_class(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if is_classification(task) else AutoModelForCausalLM


def load_base(ctx: TrainContext, *, for_task: str | None = None, quantize: str | None = None) -> tuple[Any, Any]:
    """The base model and tokenizer from the spec's local folder.

    classification -> AutoModelForSequenceClassification with the spec's labels (a head of another
    size is re-initialised); generation, extraction, preference -> AutoModelForCausalLM.
    `quantize` ("4bit", "8bit", "none") overrides what the spec says (qlora -> 4bit, model.quantize).
    """
    path = base_dir(ctx)
    task = task_of(ctx, for_task)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = load_tokenizer(path, trust)
    kwargs: dict[str, Any] = {"trust_remote_code": trust, "use_safetensors": True}
    q = quantization_config(ctx, quantize, task)
    if q is not None:
        kwargs["quantization_config"] = q
        kwargs["device_map"] = {"": 0} if device_of(ctx).startswith("cuda") else {"": "cpu"}
    if is_classification(task):
        labels = labels_of(ctx)
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True)
    model = model_class(task).from_pretrained(str(path), **kwargs)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok

