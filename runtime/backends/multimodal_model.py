"""open_clip models for the multimodal backend: the local base, the method, artifacts, loading back.

A base is a local open_clip folder: open_clip_config.json ({"model_cfg": ..., "preprocess_cfg":
...}) and open_clip_model.safetensors, plus the tokenizer files when `model_cfg.text_cfg` names an
`hf_tokenizer_name` (open_clip then reads the tokenizer from the folder). open_clip itself loads it:
`open_clip.create_model_and_transforms("local-dir:<folder>")`. Hub ids (`open_clip:ViT-B-32`,
`hf-hub:...`) are refused: ftc does not download at run time.

Methods: `full` trains every weight (then `unfreeze`/`freeze` patterns, as for text); `lora` puts
peft LoRA on the towers' Linear layers. open_clip's default blocks use nn.MultiheadAttention, whose
forward reads `attn.out_proj.weight` directly instead of calling `out_proj`: LoRA there would never
run, so `targets ["all-linear"]` means every nn.Linear that runs through its own forward (the MLPs'
`c_fc`/`c_proj` of both towers, the out_proj of open_clip's custom attention blocks, a Linear text
projection); a target that names only a MultiheadAttention's out_proj, or no Linear layer, is refused.
The logit scale is frozen at 1/temperature of the spec (the loss uses the spec's temperature), so
the exported model scores pairs as it was trained to.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

from ftc.compiler import hub
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import hf, text
from ftc.runtime.backends.artifacts import publish, staging
from ftc.runtime.backends.loading import HUB_PREFIXES, require_peft_safetensors, require_safetensors

CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
OPEN_CLIP_HUB = (*HUB_PREFIXES, "hf-hub:")
# a base folder's files that an open_clip folder written from it does not take (weights are rewritten;
# everything else, open_clip_config.json and the tokenizer's files, is copied)
NOT_COPIED = ("ftc_artifact.json", "adapter_config.json", "README.md")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def base_dir(ctx: TrainContext) -> Path:
    """The base's local open_clip folder, absolute; hub ids and folders open_clip cannot load are refused."""
    base = ctx.spec.model.base
    if base.startswith(OPEN_CLIP_HUB):
        how = hub.open_clip_help(base, ctx.spec.model.pretrained)  # the words FT155 uses at check time
        raise ValueError(f"`base {base!r}` is a hub id, and ftc does not download at run time. {how[0].upper()}{how[1:]}")
    path = ctx.base_path().expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"base model folder {path} does not exist")
    check_folder(path)
    return path


def check_folder(path: Path) -> None:
    if not (path / CONFIG).is_file():
        raise ValueError(f"{path} has no {CONFIG}: not an open_clip model folder (open_clip's `local-dir:` "
                         f"layout holds {CONFIG} and {WEIGHTS})")
    require_safetensors(path, "multimodal")  # the file open_clip would choose is a pickle
    if not list(path.glob("*.safetensors")):
        raise ValueError(f"{path} holds no .safetensors weights (open_clip would start from random weights); "
                         f"save the state dict to {path / WEIGHTS}")


def load_clip(folder: Path, device: str) -> tuple[Any, Any, Any]:
    """(model in eval mode on `device`, tokenizer, evaluation preprocess) of an open_clip folder."""
    import open_clip  # type: ignore[import-untyped]

    check_folder(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    return model.eval(), tok, preprocess


def set_temperature(model: Any, temperature: float) -> None:
    """Freeze the logit scale at the spec's temperature (exp(logit_scale) = 1 / temperature)."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    scale = getattr(inner, "logit_scale", None)
    if isinstance(scale, torch.nn.Parameter):
        with torch.no_grad():
            scale.fill_(math.log(1.0 / temperature))
        scale.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Methods


def _callable_linears(model: Any) -> list[str]:
    """Names of the nn.Linear modules whose own forward runs (not a MultiheadAttention's out_proj)."""
    import torch

    inside_mha = {f"{name}.out_proj" for name, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)}
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name not in inside_mha]


def lora_targets(model: Any, targets: tuple[str, ...]) -> list[str]:
    """The module names LoRA adapts: every callable Linear for `all-linear`, else the callable
    Linear modules whose name is a target or ends with `.target` (peft's matching), checked here so
    that a target LoRA cannot serve (a container, a MultiheadAttention or its out_proj) reads clearly."""
    linears = _callable_linears(model)
    if tuple(targets) == ("all-linear",):
        if not linears:
            raise ValueError("the open_clip model has no Linear layer that LoRA can adapt")
        return linears
    names = [name for name, _ in model.named_modules() if name]
    kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
    out: list[str] = []
    for target in targets:
        hits = [n for n in names if n == target or n.endswith(f".{target}")]
        usable = [n for n in hits if n in set(linears)]
        if not hits:
            raise ValueError(f"LoRA target {target!r} matches no module of the open_clip model "
                             f"(its LoRA-able Linear layers: {', '.join(kinds)})")
        if not usable and any(n.endswith("out_proj") for n in hits):
            raise ValueError(f"LoRA target {target!r} names only the out_proj of nn.MultiheadAttention, whose "
                             "forward is never called (PyTorch reads its weight directly): the adapter would do "
                             f'nothing. Target the Linear layers that run ({", ".join(kinds)}) or use ["all-linear"]')
        if not usable:
            raise ValueError(f"LoRA target {target!r} is not a Linear layer (LoRA adapts the Linear layers "
                             f"{', '.join(kinds)}; nn.MultiheadAttention is not adapted)")
        out.extend(usable)
    return sorted(set(out))


def attach(model: Any, ctx: TrainContext) -> Any:
    """The spec's method on an open_clip model: full (freeze/unfreeze patterns) or peft LoRA."""
    from peft import LoraConfig, get_peft_model

    m = ctx.spec.method
    set_temperature(model, float(ctx.spec.signal.temperature))
    if m.kind == "full":
        model = text.attach_method(model, ctx)
        set_temperature(model, float(ctx.spec.signal.temperature))  # stays frozen whatever the patterns say
        return model
    if m.kind != "lora":
        raise ValueError(f"`method {m.kind}` is not supported for open_clip models (full or lora)")
    config = LoraConfig(r=m.rank, lora_alpha=m.alpha, lora_dropout=m.dropout, bias=m.bias,
                        target_modules=lora_targets(model, m.targets))
    model.name_or_path = str(base_dir(ctx))  # what peft records as base_model_name_or_path
    return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------
# Artifacts


def _info(ctx: TrainContext, kind: str, load: str) -> dict[str, Any]:
    return {"format": "ftc-artifact", "version": 1, "kind": kind, "method": ctx.spec.method.kind,
            "task": "image_text_contrastive", "base_model": str(base_dir(ctx)),
            "temperature": float(ctx.spec.signal.temperature), "normalize": True, "load": load}


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    (folder / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


FULL_LOAD = ('model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + this_folder); '
             'tokenizer = open_clip.get_tokenizer("local-dir:" + this_folder); '
             "model.encode_image / model.encode_text, normalize=True")


def save_open_clip(ctx: TrainContext, model: Any, final: Path, kind: str) -> Path:
    """An open_clip folder: the base's config and tokenizer files, the model's weights (safetensors)."""
    from safetensors.torch import save_file

    base = base_dir(ctx)
    tmp = staging(final)
    for f in sorted(base.iterdir()):
        if f.is_file() and f.suffix not in WEIGHT_SUFFIXES and f.name not in NOT_COPIED:
            shutil.copy2(f, tmp / f.name)  # open_clip_config.json and the tokenizer's files
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    _write_info(tmp, _info(ctx, kind, FULL_LOAD))
    return publish(tmp, final)


def export(ctx: TrainContext, model: Any, rec: hf.Recorder) -> tuple[Path, Path | None, str, Any]:
    """(model_dir, merged_dir, TrainResult kind, the model as loaded from model_dir).

    full -> artifacts/model/ (an open_clip folder); lora -> artifacts/adapter/ (peft, over the base
    folder named in adapter_config.json) and, with `merge true`, artifacts/merged/ (an open_clip
    folder with the update merged in)."""
    root = ctx.run_dir / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    if not hasattr(model, "peft_config"):
        return save_open_clip(ctx, model, root / "model", "full"), None, "full", model
    tmp = staging(root / "adapter")
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = str(base_dir(ctx))  # resolves without ftc, from any working directory
    with warnings.catch_warnings():  # peft looks for a transformers config.json beside the base to no purpose
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(str(tmp), safe_serialization=True)
    load = ('PeftModel.from_pretrained(open_clip.create_model_and_transforms("local-dir:" + base_model)[0], '
            'this_folder); tokenizer = open_clip.get_tokenizer("local-dir:" + base_model)')
    _write_info(tmp, _info(ctx, "adapter", load))
    adapter = publish(tmp, root / "adapter")
    merged = None
    if getattr(ctx.spec.method, "merge", False):
        import copy

        merged_model = copy.deepcopy(model).merge_and_unload()
        merged = save_open_clip(ctx, merged_model, root / "merged", "merged")
        rec.note(f"LoRA merged into an open_clip folder: {merged}")
    return adapter, merged, "adapter", model


def load_trained(ctx: TrainContext, model_dir: Path | None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, preprocess) of an artifact of this backend (peft adapter or open_clip
    folder), or of the base when `model_dir` is None; in eval mode on ctx.device."""
    device = hf.device_of(ctx)
    if model_dir is None:
        return load_clip(base_dir(ctx), device)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        cfg = json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8"))
        base = Path(cfg.get("base_model_name_or_path") or base_dir(ctx))
        model, tok, preprocess = load_clip(base, device)
        require_peft_safetensors(model_dir)
        return PeftModel.from_pretrained(model, str(model_dir)).eval(), tok, preprocess
    return load_clip(model_dir, device)
