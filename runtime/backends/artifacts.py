"""Artifacts: what a trained text model leaves in ctx.run_dir/"artifacts", and loading it back.

Each folder is written under a hidden temporary name and renamed into place when complete, holds
safetensors only (checked: no pickle-format file may appear), the tokenizer, and ftc_artifact.json
(kind, method, task, absolute base path, labels, how to load it without ftc).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import basemodel
from ftc.runtime.api import TrainContext, TrainResult
from ftc.runtime.backends.hf import Emit, device_of, is_classification, task_of
from ftc.runtime.backends.loading import (
    base_dir,
    is_quantized,
    labels_of,
    load_base,
    load_tokenizer,
    model_class,
    quantization_config,
    require_peft_safetensors,
)

PICKLE_SUFFIXES = basemodel.PICKLE_SUFFIXES  # no pickle-format file may appear in an artifact


@dataclass
class Fitted:
    """A finished training run that keeps its model in memory (tests compare it with the artifact)."""

    result: TrainResult
    model: Any = None
    tokenizer: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _artifact_info(ctx: TrainContext, kind: str, task: str) -> dict[str, Any]:
    base = str(base_dir(ctx))
    info: dict[str, Any] = {"format": "ftc-artifact", "version": 1, "kind": kind, "method": ctx.spec.method.kind,
                            "task": task, "base_model": base}
    if is_classification(task):
        info["labels"] = labels_of(ctx)
    cls = "AutoModelForSequenceClassification" if is_classification(task) else "AutoModelForCausalLM"
    q = quantization_config(ctx, None, task) if kind in ("adapter", "adapters") else None
    if q is not None:  # the base the adapter was trained over: load it the same way
        info["quantization"] = q.to_dict()
    if kind == "adapter":
        extra = ", num_labels=len(labels), id2label=dict(enumerate(labels))" if is_classification(task) else ""
        extra += ", quantization_config=BitsAndBytesConfig.from_dict(quantization)" if q is not None else ""
        info["load"] = f"PeftModel.from_pretrained({cls}.from_pretrained(base_model{extra}), this_folder)"
    elif kind == "adapters":
        info["load"] = "ftc.runtime.backends.bottleneck.load_adapters(base, this_folder)  # see ftc_adapters.json"
    else:
        info["load"] = f"{cls}.from_pretrained(this_folder)"
    return info


def assert_no_pickles(folder: Path) -> None:
    bad = [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if bad:
        raise RuntimeError(f"pickle files in an artifact: {[str(p) for p in bad]}")


def canonicalise(folder: Path) -> None:
    """Make an artifact's bytes depend on the training only, so the same run gives the same hash:
    peft writes `target_modules` from a set (its order follows Python's per-process string hash),
    and a fast tokenizer saves whatever truncation/padding its last call left set (a tokenised-data
    cache hit skips those calls). Loading is unaffected: peft reads a list as well as a set, and
    transformers sets truncation and padding on every call."""
    for cfg in folder.rglob("adapter_config.json"):
        doc = json.loads(cfg.read_text(encoding="utf-8"))
        changed = False
        for key in ("target_modules", "modules_to_save", "layers_to_transform"):
            if isinstance(doc.get(key), list) and all(isinstance(v, (str, int)) for v in doc[key]):
                ordered = sorted(doc[key], key=str)
                changed |= ordered != doc[key]
                doc[key] = ordered
        if changed:
            cfg.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for tok in folder.rglob("tokenizer.json"):
        doc = json.loads(tok.read_text(encoding="utf-8"))
        if doc.get("truncation") is not None or doc.get("padding") is not None:
            doc["truncation"], doc["padding"] = None, None
            tok.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished folder into place (replacing an older one)."""
    assert_no_pickles(tmp)
    canonicalise(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def staging(final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_artifacts(ctx: TrainContext, model: Any, tok: Any, *, for_task: str | None = None) -> tuple[Path, str]:
    """Write the trained model as ftc artifacts; returns (folder, TrainResult kind)."""
    from ftc.runtime.backends import bottleneck
    from peft import PeftModel

    task = task_of(ctx, for_task)
    root = ctx.run_dir / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    base = str(base_dir(ctx))
    if isinstance(model, PeftModel):
        final, kind, what = root / "adapter", "adapter", "adapter"
        tmp = staging(final)
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base  # resolves without ftc, from any working directory
        model.save_pretrained(str(tmp), safe_serialization=True)
    elif getattr(model, "ftc_adapters", None) is not None:
        final, kind, what = root / "adapters", "adapter", "adapters"
        tmp = staging(final)
        bottleneck.save_adapters(model, tmp, base)
    else:
        final, kind, what = root / "model", "full", "full"
        tmp = staging(final)
        model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / "ftc_artifact.json").write_text(json.dumps(_artifact_info(ctx, what, task), indent=2) + "\n",
                                           encoding="utf-8")
    return publish(tmp, final), kind


def load_trained(ctx: TrainContext, model_dir: Path | None, *, for_task: str | None = None) -> tuple[Any, Any]:
    """Any artifact of this backend (peft adapter, bottleneck adapters, full or merged model), or
    the base model itself when `model_dir` is None; in eval mode on ctx.device."""
    from ftc.runtime.backends import bottleneck
    from peft import PeftModel

    task = task_of(ctx, for_task)
    if model_dir is None:
        model, tok = load_base(ctx, for_task=for_task)
    elif (model_dir / "adapter_config.json").is_file():
        model, _ = load_base(ctx, for_task=for_task)
        require_peft_safetensors(model_dir)
        model = PeftModel.from_pretrained(model, str(model_dir))
        tok = load_tokenizer(model_dir, bool(ctx.spec.model.trust_remote_code))
    elif bottleneck.is_adapter_folder(model_dir):
        model, _ = load_base(ctx, for_task=for_task)
        model = bottleneck.load_adapters(model, model_dir)
        tok = load_tokenizer(model_dir, bool(ctx.spec.model.trust_remote_code))
    else:
        trust = bool(ctx.spec.model.trust_remote_code)
        model = model_class(task).from_pretrained(str(model_dir), trust_remote_code=trust, use_safetensors=True)
        tok = load_tokenizer(model_dir, trust)
    if not is_quantized(model):
        model.to(device_of(ctx))
    model.eval()
    return model, tok


def export_merged(ctx: TrainContext, adapter_dir: Path, emit: Emit, *, for_task: str | None = None) -> Path | None:
    """LoRA merged into a fresh copy of the base (`merge true`); None where it cannot be."""
    m = ctx.spec.method
    if not getattr(m, "merge", False):
        return None
    if m.kind != "lora":
        emit({"event": "note", "message": f"`merge true` is skipped for `method {m.kind}`: "
                                          f"{'the base is quantised' if m.kind == 'qlora' else 'nothing to merge'}"})
        return None
    if ctx.spec.model.quantize in ("4bit", "8bit"):
        emit({"event": "note", "message": "`merge true` is skipped: the base is quantised"})
        return None
    model, tok = load_trained(ctx, adapter_dir, for_task=for_task)
    merged = model.merge_and_unload()
    final = ctx.run_dir / "artifacts" / "merged"
    tmp = staging(final)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    info = _artifact_info(ctx, "merged", task_of(ctx, for_task))
    (tmp / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return publish(tmp, final)

