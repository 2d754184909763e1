"""timm models for the vision backend: the local base, its head, the method, artifacts, loading.

The base is a local folder in timm's layout (config.json + model.safetensors), loaded with
`timm.create_model("local-dir:<folder>", pretrained=True)`; hub ids are refused (no network).

The head (the same policy as the text classifier, whose base gets the spec's labels and a new head
when the sizes differ): a base whose head has as many classes as the spec's labels keeps it (rows
reordered when its `label_names` are the spec's labels in another order); any other head is
replaced by a new one for the spec's labels, initialised under a fixed seed (HEAD_SEED: the base's
evaluation depends on the base and the labels only, so the run cache may reuse it). Evaluating the
base then measures that untrained head (a random classifier), and the EvalResult says so (extra["head"]).

Methods:
  full   every weight trains, then `unfreeze` (only these) and `freeze` patterns (text.py's rules);
         `progressive [...]`: the groups unfreeze in the listed order, one every `unfreeze_every`
         epochs (group i trains from epoch i * unfreeze_every); the head trains from the start and
         weights outside every group stay frozen
  lora   peft LoRA; targets: every Linear and ungrouped Conv2d but the head when `targets` is not
         written (grouped/depthwise convolutions cannot be merged), every Linear but the head for
         ["all-linear"], else the named modules (peft's suffix match); the head trains fully
         (modules_to_save)
A BatchNorm layer whose weights do not train keeps its running statistics (eval mode), so that a
LoRA adapter describes the whole change and a frozen layer stays frozen.

Artifacts (run_dir/artifacts), safetensors only, each with ftc_artifact.json (labels, base, how to load):
  model/    full: a timm folder (config.json with num_classes and label_names, model.safetensors):
            timm.create_model("local-dir:model", pretrained=True)
  adapter/  lora: PeftModel.from_pretrained(timm.create_model("local-dir:<base>", pretrained=True), "adapter")
            (add num_classes=N when the base's head was replaced: see ftc_artifact.json's `load`)
  merged/   lora with `merge true`: the adapter merged into the base, a timm folder like model/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftc.compiler import hub
from ftc.runtime.api import TrainContext
from ftc.runtime.backends.artifacts import publish, staging
from ftc.runtime.backends.hf import Emit, device_of
from ftc.runtime.backends.loading import (
    HUB_PREFIXES,
    labels_of,
    require_peft_safetensors,
    require_safetensors,
)

WEIGHTS = "model.safetensors"
HEAD_SEED = 0


def base_dir(ctx: TrainContext) -> Path:
    base = ctx.spec.model.base
    if base.startswith(HUB_PREFIXES):
        how = hub.timm_help(base)  # the words FT155 uses at check time
        raise ValueError(f"`base {base!r}` is a hub id, and ftc does not download at run time. {how[0].upper()}{how[1:]}")
    path = ctx.base_path().expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"base model folder {path} does not exist")
    require_safetensors(path, "vision")  # a pickle instead of model.safetensors is refused with its conversion
    for name in ("config.json", WEIGHTS):
        if not (path / name).is_file():
            raise ValueError(f"{path} has no {name}: not a timm model folder (write one with "
                             f"timm.models.save_for_hf(model, folder, safe_serialization=True))")
    return path


def create(folder: Path, **kwargs: Any) -> Any:
    """A timm model from a local folder, with its weights: model.safetensors, which timm's
    `local-dir:` prefers to any other file (timm/models/_hub.py `load_state_dict_from_path`)."""
    import timm

    if not (folder / WEIGHTS).is_file():  # timm would fall back to a pickle (.pth, .bin) with torch.load
        require_safetensors(folder, "vision")
        raise ValueError(f"{folder} has no {WEIGHTS}: not a timm model folder")

    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise ValueError(f"timm cannot load the model in {folder}: {e}") from e


def classifier_name(model: Any) -> str:
    """The head's module name (pretrained_cfg `classifier`, else the module get_classifier() returns)."""
    modules = dict(model.named_modules())
    names = model.pretrained_cfg.get("classifier")
    for name in [names] if isinstance(names, str) else list(names or ()):
        if name in modules:
            return str(name)
    head = model.get_classifier()
    found = next((n for n, m in modules.items() if m is head and n), None)
    if found is None:
        raise ValueError(f"cannot find the classifier head of {type(model).__name__}")
    return str(found)


def _reorder_head(model: Any, order: list[int]) -> None:
    import torch

    head = dict(model.named_modules())[classifier_name(model)]
    with torch.no_grad():
        for p in head.parameters():
            if p.shape[0] == len(order):
                p.copy_(p[order].clone())


def load_base(ctx: TrainContext) -> tuple[Any, str | None]:
    """(the base with a head for the spec's labels, a note when that head is not the base's own)."""
    import torch

    model = create(base_dir(ctx))
    labels = labels_of(ctx)
    n = int(model.num_classes)
    names = model.pretrained_cfg.get("label_names")
    names = list(names.values()) if isinstance(names, dict) else list(names or [])
    note = None
    if n == len(labels) and names and names != labels:
        if sorted(names) == sorted(labels):
            _reorder_head(model, [names.index(x) for x in labels])
        else:
            note = (f"the base's head names its classes {names}; they are used, by position, as the spec's "
                    f"labels {labels}")
    elif n != len(labels):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(HEAD_SEED)
            model.reset_classifier(len(labels))
        note = (f"the base's head has {n} classes and the spec {len(labels)} labels: the base is scored with a new, "
                f"untrained head (initialised under seed {HEAD_SEED}), so its metrics measure that random head, not "
                f"the base's features")
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": len(labels), "label_names": labels}
    return model, note


# ---------------------------------------------------------------------------------------------
# Methods


def _progressive(model: Any, groups: tuple[str, ...], head: str) -> list[list[Any]]:
    """The parameters of each progressive group (in order); everything else but the head frozen."""
    from ftc.runtime.backends.text import name_matches

    out: list[list[Any]] = []
    named = list(model.named_parameters())
    for pattern in groups:
        params = [p for n, p in named if name_matches(n, pattern) and p.requires_grad]
        if not params:
            raise ValueError(f"progressive group {pattern!r} matches no trainable parameter of "
                             f"{type(model).__name__} (e.g. {', '.join(n for n, _ in named[:3])})")
        out.append(params)
    grouped = {id(p) for g in out for p in g}
    for n, p in named:
        if id(p) not in grouped and not name_matches(n, head):
            p.requires_grad_(False)
    return out


def lora_targets(model: Any, ctx: TrainContext, head: str) -> list[str] | str:
    import torch

    m = ctx.spec.method
    modules = list(model.named_modules())
    if not m.given("targets"):
        return [n for n, mod in modules if n and n != head and not n.startswith(f"{head}.")
                and (isinstance(mod, torch.nn.Linear) or (isinstance(mod, torch.nn.Conv2d) and mod.groups == 1))]
    if tuple(m.targets) == ("all-linear",):
        return [n for n, mod in modules if isinstance(mod, torch.nn.Linear) and n != head]
    targets = [t for t in m.targets if t != head]
    for t in targets:
        if not any(n == t or n.endswith(f".{t}") for n, _ in modules):
            raise ValueError(f"LoRA target {t!r} matches no module of {type(model).__name__} "
                             f"(e.g. {', '.join(n for n, _ in modules[1:4])})")
    return targets


def attach(model: Any, ctx: TrainContext) -> tuple[Any, list[list[Any]]]:
    """(the model made trainable as the spec's method says, the progressive groups or [])."""
    from peft import LoraConfig, get_peft_model

    m = ctx.spec.method
    head = classifier_name(model)
    if m.kind == "full":
        from ftc.runtime.backends.text import attach_method

        model = attach_method(model, ctx)
        return model, _progressive(model, tuple(m.progressive), head) if m.progressive else []
    if m.kind != "lora":
        raise ValueError(f"`method {m.kind}` does not apply to vision models: use `full` or `lora`")
    config = LoraConfig(r=m.rank, lora_alpha=m.alpha, lora_dropout=m.dropout, bias=m.bias,
                        target_modules=lora_targets(model, ctx, head), modules_to_save=[head],
                        base_model_name_or_path=str(base_dir(ctx)))
    model.name_or_path = str(base_dir(ctx))  # what peft records as the adapter's base
    try:
        return get_peft_model(model, config), []
    except ValueError as e:
        raise ValueError(f"LoRA cannot adapt this model as the spec says: {e}") from e


def freeze_frozen_norms(model: Any) -> None:
    """BatchNorm layers whose weights do not train keep their running statistics (call after train())."""
    import torch

    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in mod.parameters(recurse=False)):
            mod.eval()


# ---------------------------------------------------------------------------------------------
# Artifacts


def _info(ctx: TrainContext, kind: str, n_classes: int) -> dict[str, Any]:
    base = str(base_dir(ctx))
    info: dict[str, Any] = {"format": "ftc-artifact", "version": 1, "kind": kind, "method": ctx.spec.method.kind,
                            "task": ctx.spec.model.task, "base_model": base, "labels": labels_of(ctx),
                            "library": "timm"}
    if kind == "adapter":
        base_classes = int(json.loads((Path(base) / "config.json").read_text(encoding="utf-8")).get("num_classes", 0))
        extra = f", num_classes={n_classes}" if base_classes != n_classes else ""
        info["load"] = (f"PeftModel.from_pretrained(timm.create_model('local-dir:' + base_model, pretrained=True"
                        f"{extra}), this_folder)")
    else:
        info["load"] = "timm.create_model('local-dir:' + this_folder, pretrained=True)"
    info["preprocess"] = "timm.data.create_transform(**timm.data.resolve_data_config(model=model))"
    return info


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    (folder / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def save_timm(model: Any, folder: Path, labels: list[str]) -> None:
    from timm.models import save_for_hf

    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": len(labels), "label_names": labels}
    save_for_hf(model, str(folder), model_config={"label_names": labels}, safe_serialization=True)


def save_artifacts(ctx: TrainContext, model: Any) -> tuple[Path, str]:
    """Write the trained model (module docstring); returns (folder, TrainResult kind)."""
    root = ctx.run_dir / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    labels = labels_of(ctx)
    if hasattr(model, "peft_config"):
        final, kind = root / "adapter", "adapter"
        tmp = staging(final)
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = str(base_dir(ctx))
        model.save_pretrained(str(tmp), safe_serialization=True)
    else:
        final, kind = root / "model", "full"
        tmp = staging(final)
        save_timm(model, tmp, labels)
    _write_info(tmp, _info(ctx, kind, len(labels)))
    return publish(tmp, final), kind


def export_merged(ctx: TrainContext, model: Any, emit: Emit) -> Path | None:
    """The LoRA update merged into the base (`merge true`), as a timm folder; None otherwise."""
    if not getattr(ctx.spec.method, "merge", False) or not hasattr(model, "merge_and_unload"):
        return None
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    final = ctx.run_dir / "artifacts" / "merged"
    tmp = staging(final)
    save_timm(merged, tmp, labels_of(ctx))
    _write_info(tmp, _info(ctx, "merged", len(labels_of(ctx))))
    emit({"event": "note", "message": f"merged the LoRA update into a copy of the base: {final}"})
    return publish(tmp, final)


def load_trained(ctx: TrainContext, model_dir: Path | None) -> tuple[Any, str | None]:
    """(the model of an artifact folder of this backend, or the base when None, in eval mode on
    ctx.device; the head note of the base)."""
    from peft import PeftModel

    note = None
    if model_dir is None:
        model, note = load_base(ctx)
    elif (model_dir / "adapter_config.json").is_file():
        base, _ = load_base(ctx)
        require_peft_safetensors(model_dir)
        model = PeftModel.from_pretrained(base, str(model_dir))
    else:
        model = create(model_dir)
    model.to(device_of(ctx))
    model.eval()
    return model, note
