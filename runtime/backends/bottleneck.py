"""Bottleneck adapters (Houlsby et al., 2019): ftc's own, because peft 0.21 ships none.

peft removed its early `bottleneck` tuner and has not brought it back (huggingface/peft#244 open
since 2023; the PR that proposed it again, #2657, was closed), so `method adapters` is built here.

Each adapter is a small residual MLP applied to the output of a block's output projection:

    y = proj(x);   y <- y + dropout(up(gelu(down(y))))

`placement ffn` wraps the feed-forward output projection of every block (BERT `output.dense`,
GPT-2 `mlp.c_proj`, Llama `mlp.down_proj`, ...), `attention` the attention output projection
(`attention.output.dense`, `attn.c_proj`, `self_attn.o_proj`, ...), `both` both (Houlsby's
layout); in BERT-style blocks this is before the residual add and LayerNorm, as in the paper.
`up` starts at zero, so an untrained adapter leaves the model exactly as the base. The base is
frozen; for classification the task head trains too and is saved with the adapters.

On disk (a folder):
    ftc_adapters.json       {"format": "ftc-bottleneck-adapters", "version": 1,
                             "base_model_name_or_path", "bottleneck", "placement", "dropout",
                             "activation": "gelu", "targets": [module names], "head": [param names]}
    adapters.safetensors    "<target>.ftc_adapter.down.weight|bias", "<target>.ftc_adapter.up.weight|bias",
                            and the task head's parameters under their base-model names

Loading back: `load_adapters(model, folder)` on the base loaded with transformers. Without ftc:
for every target module T, register a forward hook returning `out + up(gelu(down(out)))` with
the weights `T.ftc_adapter.{down,up}.{weight,bias}` from the safetensors file (nn.Linear layout),
and load the head's tensors with `model.load_state_dict(tensors, strict=False)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "ftc-bottleneck-adapters"
CONFIG_NAME = "ftc_adapters.json"
WEIGHTS_NAME = "adapters.safetensors"
ATTR = "ftc_adapter"

# Output projections by placement, as dotted name suffixes (matched on component boundaries).
ATTENTION = ("attention.output.dense", "attn.c_proj", "self_attn.o_proj", "attention.dense",
             "self_attn.out_proj", "attention.out_lin", "attn.out_proj")
FFN = ("output.dense", "mlp.c_proj", "mlp.down_proj", "mlp.dense_4h_to_h", "mlp.fc2", "mlp.fc_out",
       "ffn.lin2", "fc2")
HEADS = ("classifier", "score", "pre_classifier")


class BottleneckAdapter(nn.Module):
    """h -> h + dropout(up(gelu(down(h)))), with `up` initialised to zero (identity at start)."""

    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        branch = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        out: torch.Tensor = h + self.dropout(branch).to(h.dtype)
        return out


def _ends_with(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def find_targets(model: nn.Module, placement: str) -> list[str]:
    """Names of the output projections an adapter follows, in module order."""
    want_attn = placement in ("attention", "both")
    want_ffn = placement in ("ffn", "both")
    out: list[str] = []
    for name, _ in model.named_modules():
        if any(_ends_with(name, s) for s in ATTENTION):
            if want_attn:
                out.append(name)
        elif any(_ends_with(name, s) for s in FFN) and want_ffn:
            out.append(name)
    return out


def _width(module: nn.Module) -> int:
    for attr in ("out_features", "nf"):  # nn.Linear, transformers' GPT-2 Conv1D
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    raise ValueError(f"cannot tell the output width of {type(module).__name__}")


def _hook(module: nn.Module, args: Any, output: Any) -> Any:
    adapter = getattr(module, ATTR)
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def add_adapters(model: nn.Module, bottleneck: int, placement: str, dropout: float = 0.0,
                 targets: list[str] | None = None) -> list[str]:
    """Insert an adapter after each target projection; returns the target names."""
    names = targets if targets is not None else find_targets(model, placement)
    if not names:
        raise ValueError(f"no {placement} output projections found in {type(model).__name__}: ftc's "
                         f"bottleneck adapters know BERT, GPT-2, GPT-NeoX, GPT-J, OPT, DistilBERT and "
                         f"Llama-style blocks; use `method lora` for this model")
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        ref = next(module.parameters())
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        adapter = BottleneckAdapter(_width(module), bottleneck, dropout).to(device=ref.device, dtype=dtype)
        module.add_module(ATTR, adapter)
        module.register_forward_hook(_hook)
    return names


def head_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.split(".")[0] in HEADS]


def prepare(model: nn.Module, bottleneck: int, placement: str, dropout: float, *, train_head: bool) -> list[str]:
    """Freeze the base, add adapters, unfreeze the adapters (and the task head)."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = add_adapters(model, bottleneck, placement, dropout)
    heads = set(head_names(model)) if train_head else set()
    for n, p in model.named_parameters():
        if f".{ATTR}." in n or n in heads:
            p.requires_grad_(True)
    info = {"bottleneck": bottleneck, "placement": placement, "dropout": dropout, "targets": names,
            "head": sorted(heads)}
    model.ftc_adapters = info  # type: ignore[assignment]
    return names


def save_adapters(model: nn.Module, folder: Path, base_model: str) -> None:
    from safetensors.torch import save_file

    info = getattr(model, "ftc_adapters", None)
    if info is None:
        raise ValueError("the model has no ftc bottleneck adapters")
    folder.mkdir(parents=True, exist_ok=True)
    keep = set(info["head"])
    tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters()
               if f".{ATTR}." in n or n in keep}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {"format": FORMAT, "version": 1, "base_model_name_or_path": base_model, "activation": "gelu", **info}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def is_adapter_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


def load_adapters(model: nn.Module, folder: Path) -> nn.Module:
    """Add the saved adapters to a freshly loaded base model and load their weights (and head)."""
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG_NAME} is not an ftc bottleneck-adapter config")
    add_adapters(model, config["bottleneck"], config["placement"], config.get("dropout", 0.0), config["targets"])
    tensors = load_file(str(folder / WEIGHTS_NAME))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"adapter weights that fit no module: {result.unexpected_keys[:5]}")
    missing = [k for k in result.missing_keys if f".{ATTR}." in k]
    if missing:
        raise ValueError(f"adapter weights missing from {folder}: {missing[:5]}")
    info = {k: config[k] for k in ("bottleneck", "placement", "dropout", "targets", "head")}
    model.ftc_adapters = info  # type: ignore[assignment]
    return model
