"""What a base model folder holds, read without torch: its files, config and module names.

A folder is a local base or the cached snapshot of an `hf:` base (compiler/hub.py). Module names
come from the safetensors headers (compiler/weights.py `read_headers`: every *.safetensors file,
so a sharded checkpoint's shards, or open_clip's `open_clip_model.safetensors`). A tensor
`a.b.weight` is the parameter `weight` of the module `a.b`; every prefix (`a`) is a module too (a
container, with no parameter of its own). Batch-norm statistics are buffers, not parameters.

What the runtime needs in a folder (runtime/backends/loading.py, vision_model.py, multimodal_model.py):
  text        config.json, safetensors weights (model.safetensors, or shards and their index), a tokenizer
  vision      config.json and model.safetensors (timm's `local-dir:` layout)
  multimodal  open_clip_config.json and a .safetensors file; the tokenizer's files when
              `model_cfg.text_cfg.hf_tokenizer_name` is set (open_clip then reads them from the folder)
A text tokenizer is tokenizer.json or the vocabulary files a tokenizer class builds one from. Without
them transformers 5 still builds a tokenizer from config.json's model type, with an empty
vocabulary: every word becomes [UNK] and the run trains on nothing, without an error.

Weights are read as safetensors only (`pickled_weights`): a pickle (`pytorch_model.bin`, `*.pt`,
`*.pth`, `*.ckpt`) runs code when it is unpickled, so a folder whose loader would read one is
refused by `ftc check` (FT162) and by the runtime (runtime/backends/loading.py `require_safetensors`),
with the one-line conversion (`conversion`). Remote code (`remote_code`): the .py files that a
config's `auto_map` names (config.json, tokenizer_config.json), with every other .py file of the
folder (a code file's relative imports), hashed so that the plan pins them (compiler/plan.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler import weights

INDEX = "model.safetensors.index.json"
TEXT_WEIGHTS = ("model.safetensors", INDEX)  # what transformers reads with use_safetensors=True
TIMM_FILES = ("config.json", "model.safetensors")
OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
# tokenizer.json, or the vocabulary a tokenizer class reads: WordPiece, BPE (vocab + merges),
# SentencePiece or tiktoken models
VOCABULARIES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"), ("tokenizer.model",),
                ("spiece.model",), ("sentencepiece.bpe.model",), ("sentencepiece.model",))
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# pickles a Hugging Face Trainer checkpoint holds beside the weights: never loaded as weights
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")
# open_clip's `local-dir:` choice among several weight files (open_clip/factory.py _find_checkpoint_in_dir)
OPEN_CLIP_ORDER = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                   "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth",
                   "model.pth")
AUTO_MAP_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


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
    pickled = bool(pickled_weights(folder, modality))  # FT162 says what to do with those
    if modality == "vision":
        return [f for f in TIMM_FILES if not (folder / f).is_file() and not (pickled and f.endswith(".safetensors"))]
    if modality == "multimodal":
        out = [] if (folder / OPEN_CLIP_CONFIG).is_file() else [OPEN_CLIP_CONFIG]
        if not list(folder.glob("*.safetensors")) and not pickled:
            out.append(f"weights ({OPEN_CLIP_WEIGHTS})")
        cfg = config(folder, OPEN_CLIP_CONFIG) or {}
        text_cfg = (cfg.get("model_cfg") or {}).get("text_cfg") or {}
        if isinstance(text_cfg, dict) and text_cfg.get("hf_tokenizer_name") and not has_vocabulary(folder):
            out.append("tokenizer files (tokenizer.json; `text_cfg.hf_tokenizer_name` reads them from the folder)")
        return out
    out = [] if (folder / "config.json").is_file() else ["config.json"]
    if not has_any(folder, TEXT_WEIGHTS) and not pickled:
        out.append("weights (model.safetensors, or its shards and model.safetensors.index.json)")
    if not has_vocabulary(folder):
        out.append("tokenizer files (tokenizer.json, or vocab.txt, or vocab.json + merges.txt, or a "
                   "SentencePiece tokenizer.model)")
    return out



# ---------------------------------------------------------------------------------------------
# Weights: safetensors only


def _names(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


def pickle_files(folder: Path) -> list[str]:
    """The folder's pickled weight files (a Trainer checkpoint's optimizer and state pickles left out)."""
    return [n for n in _names(folder) if n.endswith(PICKLE_SUFFIXES) and not n.startswith(NOT_WEIGHTS)]


def open_clip_choice(folder: Path) -> str | None:
    """The weight file open_clip's `local-dir:` loads (its own order: a preferred name first, so
    `open_clip_pytorch_model.bin` wins over `model.safetensors`), or None when it finds none."""
    found = [n for n in _names(folder) if n.endswith((".safetensors", ".bin", ".pth"))]
    preferred = [n for n in OPEN_CLIP_ORDER if n in found]
    if preferred:
        return preferred[0]
    found.sort(key=lambda n: not n.endswith(".safetensors"))
    return found[0] if found else None


def pickled_weights(folder: Path, modality: str) -> list[str]:
    """The pickles the run would load from this folder for lack of safetensors (empty when it
    loads safetensors, or finds no weights at all: FT157's case)."""
    if modality == "multimodal":
        choice = open_clip_choice(folder)
        return [choice] if choice is not None and not choice.endswith(".safetensors") else []
    has = (folder / "model.safetensors").is_file() or (modality == "text" and (folder / INDEX).is_file())
    return [] if has else pickle_files(folder)


def conversion(folder: str, modality: str, architecture: str | None, hub_ref: tuple[str, str] | None = None) -> str:
    """The one-line command that rewrites a base's pickled weights as safetensors (`folder` as the
    user writes it; a hub base is written to a local folder, `hub_ref` = (repo, commit))."""
    if modality == "vision":
        return (f"python -c \"import timm; m = timm.create_model({'local-dir:' + folder!r}, pretrained=True); "
                f"timm.models.save_for_hf(m, {folder!r}, safe_serialization=True)\"")
    if modality == "multimodal":
        return (f"python -c \"import open_clip, safetensors.torch as st; m = open_clip.create_model_and_transforms("
                f"{'local-dir:' + folder!r})[0]; st.save_model(m, {folder + '/' + OPEN_CLIP_WEIGHTS!r})\"")
    cls = architecture if architecture is not None and architecture.isidentifier() else "AutoModel"
    if hub_ref is not None:
        repo, commit = hub_ref
        out = f"models/{repo.rsplit('/', 1)[-1]}"
        return (f"python -c \"from transformers import AutoTokenizer, {cls} as M; r, v = {repo!r}, {commit!r}; "
                f"M.from_pretrained(r, revision=v).save_pretrained({out!r}, safe_serialization=True); "
                f"AutoTokenizer.from_pretrained(r, revision=v).save_pretrained({out!r})\"")
    return (f"python -c \"from transformers import {cls} as M; "
            f"M.from_pretrained({folder!r}).save_pretrained({folder!r}, safe_serialization=True)\"")


def architecture(folder: Path) -> str | None:
    archs = (config(folder) or {}).get("architectures")
    return str(archs[0]) if isinstance(archs, list) and archs and isinstance(archs[0], str) else None


# ---------------------------------------------------------------------------------------------
# Remote code


def auto_map_modules(folder: Path) -> tuple[list[str], list[str]]:
    """(code files in the folder that `auto_map` names, references to another repository's code:
    `org/name--module.Class`), from the folder's configs."""
    local: set[str] = set()
    external: set[str] = set()
    for name in AUTO_MAP_CONFIGS:
        auto_map = (config(folder, name) or {}).get("auto_map")
        for ref in _refs(auto_map):
            if "--" in ref:
                external.add(ref)
            elif "." in ref:
                local.add(ref.rsplit(".", 1)[0] + ".py")
    return sorted(local), sorted(external)


def _refs(auto_map: Any) -> Iterator[str]:
    if not isinstance(auto_map, dict):
        return
    for value in auto_map.values():
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, str):
                yield ref


def remote_code(folder: Path) -> dict[str, str | None]:
    """The base's own code as transformers would run it with `trust_remote_code`: file name ->
    sha256 (None for a file auto_map names that is missing): the files auto_map names and every
    other .py file of the folder (what they import relatively). Empty without an auto_map."""
    named, external = auto_map_modules(folder)
    if not named and not external:
        return {}
    files = sorted(set(named) | {n for n in _names(folder) if n.endswith(".py")})
    out: dict[str, str | None] = {n: _sha256(folder / n) for n in files}
    out.update({ref: None for ref in external})
    return out


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    if not path.is_file():  # missing, or not a regular file (a FIFO would block the read)
        return None
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()
