"""What a base model folder holds, read without torch: its files, config and module names.

A folder is a local base or the cached snapshot of an `hf:` base (compiler/hub.py). Module names
come from the safetensors headers (compiler/weights.py `read_headers`: every *.safetensors file,
so a sharded checkpoint's shards, or open_clip's `open_clip_model.safetensors`). A tensor
`a.b.weight` is the parameter `weight` of the module `a.b`; every prefix (`a`) is a module too (a
container, with no parameter of its own). Batch-norm statistics are buffers, not parameters.

What the runtime needs in a folder (runtime/backends/loading.py, vision_model.py, multimodal_model.py):
  text        config.json, weights (safetensors or pytorch_model.bin, sharded or not), a tokenizer
  vision      config.json and model.safetensors (timm's `local-dir:` layout)
  multimodal  open_clip_config.json and a .safetensors file; the tokenizer's files when
              `model_cfg.text_cfg.hf_tokenizer_name` is set (open_clip then reads them from the folder)
A text tokenizer is tokenizer.json or the vocabulary files a tokenizer class builds one from. Without
them transformers 5 still builds a tokenizer from config.json's model type, with an empty
vocabulary: every word becomes [UNK] and the run trains on nothing, without an error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler import weights

INDEX = "model.safetensors.index.json"
TEXT_WEIGHTS = ("model.safetensors", INDEX, "pytorch_model.bin", "pytorch_model.bin.index.json")
TIMM_FILES = ("config.json", "model.safetensors")
OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
# tokenizer.json, or the vocabulary a tokenizer class reads: WordPiece, BPE (vocab + merges),
# SentencePiece or tiktoken models
VOCABULARIES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"), ("tokenizer.model",),
                ("spiece.model",), ("sentencepiece.bpe.model",), ("sentencepiece.model",))
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Modules:
    """Parameter and module names of a model, from its tensors."""

    params: dict[str, int]  # parameter name -> number of dimensions (buffers left out)

    @functools.cached_property
    def own(self) -> dict[str, dict[str, int]]:
        """module -> its own parameters (leaf name -> ndim); containers have none."""
        out: dict[str, dict[str, int]] = {}
        for name, ndim in self.params.items():
            module, _, leaf = name.rpartition(".")
            out.setdefault(module, {})[leaf] = ndim
        return out

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Every module path: each parameter's module and all of that module's prefixes."""
        out: set[str] = set()
        for module in self.own:
            parts = module.split(".") if module else []
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return frozenset(out)

    def is_layer(self, module: str) -> bool:
        """A layer LoRA can adapt has a weight matrix (or kernel) of its own: a Linear, Conv1D,
        Conv or Embedding; a container or a norm does not."""
        return self.own.get(module, {}).get("weight", 0) >= 2

    @functools.cached_property
    def linear_kinds(self) -> list[str]:
        """The distinct last components of 2-D `.weight`s: the names LoRA targets are written in."""
        return sorted({m.rsplit(".", 1)[-1] for m, p in self.own.items() if m and p.get("weight") == 2})

    def matching(self, target: str) -> list[str]:
        """Modules a LoRA target names, as peft matches a list entry: the full name or a `.suffix`.
        A full name written with a prefix the file lacks (`bert.encoder...` for a folder saved
        from BertModel, loaded into BertForSequenceClassification) matches too."""
        return sorted(n for n in self.names if n == target or n.endswith(f".{target}") or target.endswith(f".{n}"))


def modules(folder: Path) -> Modules | None:
    """The folder's parameters from its safetensors headers (every *.safetensors file: a sharded
    checkpoint's shards too); None when it has none to read."""
    try:
        headers = weights.read_headers(folder)
    except (OverflowError, MemoryError):  # a header length past what a file can hold: not safetensors
        return None
    if not headers:
        return None
    return Modules({n: len(shape) for n, (_, shape) in sorted(headers.items())
                    if n.rsplit(".", 1)[-1] not in BUFFERS})


def config(folder: Path, name: str = "config.json") -> dict[str, Any] | None:
    path = folder / name
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def has_any(folder: Path, names: Iterable[str]) -> bool:
    return any((folder / n).is_file() for n in names)


def has_vocabulary(folder: Path) -> bool:
    """tokenizer.json, or a complete set of vocabulary files."""
    return any(all((folder / f).is_file() for f in group) for group in VOCABULARIES)


def missing_files(folder: Path, modality: str) -> list[str]:
    """What the runtime needs in this folder and does not find, in words (empty when complete)."""
    if modality == "vision":
        return [f for f in TIMM_FILES if not (folder / f).is_file()]
    if modality == "multimodal":
        out = [] if (folder / OPEN_CLIP_CONFIG).is_file() else [OPEN_CLIP_CONFIG]
        if not list(folder.glob("*.safetensors")):
            out.append(f"weights ({OPEN_CLIP_WEIGHTS})")
        cfg = config(folder, OPEN_CLIP_CONFIG) or {}
        text_cfg = (cfg.get("model_cfg") or {}).get("text_cfg") or {}
        if isinstance(text_cfg, dict) and text_cfg.get("hf_tokenizer_name") and not has_vocabulary(folder):
            out.append("tokenizer files (tokenizer.json; `text_cfg.hf_tokenizer_name` reads them from the folder)")
        return out
    out = [] if (folder / "config.json").is_file() else ["config.json"]
    if not has_any(folder, TEXT_WEIGHTS):
        out.append("weights (model.safetensors, or its shards and model.safetensors.index.json)")
    if not has_vocabulary(folder):
        out.append("tokenizer files (tokenizer.json, or vocab.txt, or vocab.json + merges.txt, or a "
                   "SentencePiece tokenizer.model)")
    return out

