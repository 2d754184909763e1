"""Tokenised data reused from the content-addressed cache (the plan's `data.tokenize` step).

Four places tokenise training data:
- classification: ftc itself (text.py `_classification_dataset`): the texts and label ids of a
  split become `input_ids`/`attention_mask`/`labels` (rows over the limit dropped when the spec's
  policy says so); `reuse` stores that dataset and hands it back on the next run;
- SFT for generation and extraction: TRL's `SFTTrainer` prepares its datasets itself (chat
  template or prompt + completion, EOS, tokenising, completion or assistant masks turned into
  labels, truncation, packing). `sft_trainer` builds the trainer and stores what TRL prepared
  (`trainer.train_dataset`, `trainer.eval_dataset`); on a hit it passes those back with
  `dataset_kwargs={"skip_prepare_dataset": True}`, TRL 1.16's documented way to hand it
  trainer-ready data (with a `labels` column), so TRL's own output is reused, not re-derived;
- the reward model (reward.py `_pairs_dataset`): ftc tokenises text pairs itself into TRL's
  processed columns `chosen_ids`/`rejected_ids`, which TRL 1.16's `RewardTrainer._prepare_dataset`
  detects (`is_processed`) and does not tokenise again; `reuse` stores them. Chat pairs are
  tokenised by TRL (chat template) and not cached;
- DPO: TRL 1.16's `DPOTrainer.__init__` prepares every text dataset (trl/trainer/dpo_trainer.py,
  "skip_prepare_dataset = self._is_vision_dataset") and its `_prepare_dataset` has no
  processed-column check and no config flag (it extracts the prompt, appends EOS, tokenises
  `prompt`/`chosen`/`rejected` into `prompt_ids`/`chosen_ids`/`rejected_ids`, drops rows whose
  prompt fills `max_length` under `keep_start`). `dpo_trainer` builds a subclass whose
  `_prepare_dataset` returns the stored dataset on a hit (TRL's is not called) and calls TRL's and
  stores its result on a miss. That method is private, so the subclass is used only with TRL
  1.16.x and while its signature is exactly (self, dataset, processing_class, args, dataset_name);
  otherwise the plain trainer runs and a note says why the cache is off.

The key is a sha256 (`compiler/data/cache.key_of`: ftc's version first) over: the kind; the
transformers and tokenizers versions; the tokenizer (sha256 of each file of the folder
it was loaded from except weights, its class, vocabulary size, special tokens, padding and
truncation sides, model_max_length, chat template); a sha256 of exactly what is tokenised (the
texts and label ids, the prompt/completion or messages rows, or the preference pairs); and the
settings (classification and reward: max length and policy; SFT and DPO: the trl version, every
SFTConfig or DPOConfig field TRL's preparation reads, and the role, since evaluation may pack
differently).

An entry is a folder `<cache>/tokens/<key>/`: the dataset as Arrow (`Dataset.save_to_disk`: Arrow
files plus JSON state, no pickle) and `ftc_tokens.json` (row counts, what was dropped). It is
written into a temporary folder and renamed into place, so a reader sees a whole entry or none;
an unreadable entry is a miss; a cache that cannot be written only makes the next run slower.
Entries are loaded into memory (nothing is ever written next to them). `FTC_NO_CACHE=1`
disables the cache (no key is even computed), `FTC_CACHE_DIR` moves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.compiler.data.cache import cache_dir, file_digest, key_of

Emit = Callable[[dict[str, Any]], None]
META = "ftc_tokens.json"
REUSED = "tokenised data reused from the cache"
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx",
                             ".npz", ".ot", ".pkl"})
# SFTConfig fields read by TRL 1.16's `SFTTrainer._prepare_dataset` (and what decides them)
SFT_FIELDS = ("max_length", "packing", "packing_strategy", "padding_free", "completion_only_loss",
              "assistant_only_loss", "dataset_text_field", "truncation_mode", "shuffle_dataset", "eos_token",
              "pad_token", "chat_template_path", "loss_type")


def enabled() -> bool:
    return cache_dir() is not None


def content_digest(value: Any) -> str:
    """sha256 of a JSON value (the inputs to tokenise), canonical: sorted keys, exact unicode."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tokenizer_fingerprint(tok: Any, folder: Path | None) -> dict[str, Any]:
    """What decides how `tok` tokenises: its files (hashed through the file-hash index, so an
    unchanged file is not read again) and the settings ftc or the user may change in memory."""
    files: dict[str, str] = {}
    if folder is not None and folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in WEIGHT_SUFFIXES:
                files[f.name] = file_digest(f)
    return {"class": type(tok).__name__, "files": files, "size": len(tok),
            "special": getattr(tok, "special_tokens_map", {}),
            "padding_side": getattr(tok, "padding_side", None), "truncation_side": getattr(tok, "truncation_side", None),
            "model_max_length": getattr(tok, "model_max_length", None),
            "chat_template": getattr(tok, "chat_template", None)}


def key(kind: str, tokenizer: dict[str, Any], inputs: str, settings: dict[str, Any]) -> str:
    import tokenizers
    import transformers

    return key_of("tokens/1", kind, {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
                  tokenizer, inputs, settings)


def _entry(k: str) -> Path | None:
    root = cache_dir()
    return root / "tokens" / k if root is not None else None


def load(k: str) -> tuple[Any, dict[str, Any]] | None:
    """(dataset, meta) stored under key `k`, or None (a miss: absent, disabled or unreadable)."""
    from datasets import Dataset

    path = _entry(k)
    if path is None or not (path / META).is_file():
        return None
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        return Dataset.load_from_disk(str(path), keep_in_memory=True), dict(meta)
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(path, ignore_errors=True)  # unreadable: stored afresh by this run
        return None


def store(k: str, dataset: Any, meta: dict[str, Any]) -> bool:
    """Store `dataset` (a datasets.Dataset) under `k`: a temporary folder renamed into place."""
    from datasets import Dataset

    path = _entry(k)
    if path is None or path.exists() or not isinstance(dataset, Dataset):
        return False
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
        dataset.save_to_disk(str(tmp))
        (tmp / META).write_text(json.dumps({**meta, "rows": len(dataset)}, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError:  # another process stored it first, or the disk is full: only slower next time
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def reuse(make_key: Callable[[], str], build: Callable[[], tuple[Any, dict[str, Any]]], what: str,
          emit: Emit) -> tuple[Any, dict[str, Any]]:
    """`build()` -> (dataset, meta), or the stored result for the key when there is one (said as a
    note); the key is computed only when the cache is on."""
    if not enabled():
        return build()
    k = make_key()
    hit = load(k)
    if hit is not None:
        emit({"event": "note", "message": f"{REUSED} ({what}, {k[:10]})", "cache_key": k})
        return hit
    dataset, meta = build()
    store(k, dataset, meta)
    return dataset, meta


# ---------------------------------------------------------------------------------------------
# SFT: what TRL prepares


def sft_settings(args: Any, role: str) -> dict[str, Any]:
    import trl

    out = {name: getattr(args, name, None) for name in SFT_FIELDS}
    if role != "train" and getattr(args, "eval_packing", None) is not None:
        out["packing"] = args.eval_packing
    if out["shuffle_dataset"]:
        out["seed"] = args.seed
    return {"trl": trl.__version__, "role": role, **out}


def sft_trainer(cls: type, folder: Path | None, emit: Emit, **kwargs: Any) -> Any:
    """`cls(**kwargs)` (an SFTTrainer), with TRL's prepared datasets taken from the cache when both
    are there, and stored when TRL prepared them."""
    if not enabled() or getattr(kwargs["args"], "dataset_kwargs", None):
        return cls(**kwargs)
    args, tok = kwargs["args"], kwargs["processing_class"]
    given = {"train": kwargs.get("train_dataset"), "eval": kwargs.get("eval_dataset")}
    fingerprint = tokenizer_fingerprint(tok, folder)
    keys = {role: key("sft", fingerprint, content_digest(ds.to_list()), sft_settings(args, role))
            for role, ds in given.items() if ds is not None}
    hits = {role: load(k) for role, k in keys.items()}
    if all(hit is not None for hit in hits.values()):
        kwargs["train_dataset"] = hits["train"][0]  # type: ignore[index]
        if "eval" in hits:
            kwargs["eval_dataset"] = hits["eval"][0]  # type: ignore[index]
        args.dataset_kwargs = {"skip_prepare_dataset": True}
        roles = ", ".join("val" if r == "eval" else r for r in hits)
        emit({"event": "note", "message": f"{REUSED} ({roles}, {keys['train'][:10]})", "cache_key": keys["train"]})
        return cls(**kwargs)
    trainer = cls(**kwargs)
    prepared = {"train": trainer.train_dataset, "eval": trainer.eval_dataset}
    for role, k in keys.items():
        store(k, prepared[role], {"given_rows": len(given[role])})  # type: ignore[arg-type]
    return trainer


# ---------------------------------------------------------------------------------------------
# DPO: what TRL prepares, through its `_prepare_dataset`

# DPOConfig fields read by TRL 1.16's `DPOTrainer._prepare_dataset` (dataset_num_proc only
# parallelises its maps, which keep the row order)
DPO_FIELDS = ("max_length", "truncation_mode")
DPO_PARAMS = ("self", "dataset", "processing_class", "args", "dataset_name")


def dpo_cache_off(cls: type) -> str | None:
    """Why `cls._prepare_dataset` (TRL's DPOTrainer's) may not be wrapped by the cache, or None."""
    import inspect

    import trl

    if not trl.__version__.startswith("1.16."):
        return f"trl {trl.__version__} is not 1.16, whose DPOTrainer._prepare_dataset the cache wraps"
    params = tuple(inspect.signature(cls._prepare_dataset).parameters)  # type: ignore[attr-defined]
    if params != DPO_PARAMS:
        return f"DPOTrainer._prepare_dataset takes ({', '.join(params)}), not ({', '.join(DPO_PARAMS)})"
    return None


def dpo_settings(args: Any, role: str) -> dict[str, Any]:
    import trl

    return {"trl": trl.__version__, "role": role, **{name: getattr(args, name, None) for name in DPO_FIELDS}}


def dpo_trainer(cls: type, folder: Path | None, emit: Emit, **kwargs: Any) -> Any:
    """`cls(**kwargs)` (a DPOTrainer) whose `_prepare_dataset` (TRL's: prompt extracted, EOS
    appended, prompt/chosen/rejected tokenised, fully truncated rows dropped) hands back the stored
    result for the same rows, tokenizer and settings, and stores what TRL prepared otherwise. With
    another TRL than the one whose private method this relies on, the plain trainer (said once)."""
    if not enabled():
        return cls(**kwargs)
    why = dpo_cache_off(cls)
    if why is not None:
        emit({"event": "note", "message": f"DPO's tokenised data is not cached: {why}"})
        return cls(**kwargs)
    from datasets import Dataset

    fingerprints: dict[int, dict[str, Any]] = {}

    def prepare(self: Any, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        if not isinstance(dataset, Dataset):  # an IterableDataset is prepared lazily: not stored
            return cls._prepare_dataset(self, dataset, processing_class, args, dataset_name)  # type: ignore[attr-defined]
        if id(processing_class) not in fingerprints:
            fingerprints[id(processing_class)] = tokenizer_fingerprint(processing_class, folder)
        k = key("dpo", fingerprints[id(processing_class)], content_digest(dataset.to_list()),
                dpo_settings(args, dataset_name))
        hit = load(k)
        role = "val" if dataset_name == "eval" else dataset_name
        if hit is not None:
            emit({"event": "note", "message": f"{REUSED} (dpo {role}, {k[:10]})", "cache_key": k})
            return hit[0]
        prepared = cls._prepare_dataset(self, dataset, processing_class, args, dataset_name)  # type: ignore[attr-defined]
        store(k, prepared, {"given_rows": len(dataset), "role": dataset_name})
        return prepared

    return type(cls.__name__, (cls,), {"_prepare_dataset": prepare, "__module__": cls.__module__})(**kwargs)
