"""How close is ftc's static memory estimate (compiler/estimate.py, rule FT160, `ftc plan`) to the
GPU memory that real training steps take?

    python3 bench/memory_estimate.py measure --out results.json     # on a CUDA machine (torch, transformers,
                                                                    # peft, bitsandbytes, trl, datasets)
    python3 bench/memory_estimate.py measure --out holdout.json --models qwen2-0.5b,tinyllama-1.1b,gpt2-medium
    .venv/bin/python bench/memory_estimate.py report results.json   # here: ftc's estimate per case, the table
    .venv/bin/python bench/memory_estimate.py measure --out /tmp/t.json --models tiny-llama,tiny-bert --device cpu

Cases run in rounds (the extreme shapes of every model and method first), so that a run stopped by
`--deadline` still covers the grid coarsely. The results of the runs on an H100 are in bench/results/
(bench/README.md describes them); tests/unit/test_estimate.py recomputes the estimate for each case.

`measure` builds each model of MODELS from a config with random weights (no hub download), saves it
to a local folder the way a real checkpoint is shipped (Llama-style models in bf16, the BERT encoder in
fp32), and for every case of the grid loads it and trains a few steps the way ftc's text backend does
(runtime/backends/loading.py, text.py, hf.py): `from_pretrained` with the same arguments (QLoRA: nf4,
double quantisation, bf16 compute, `device_map={"": 0}`), `prepare_model_for_kbit_training` then
`get_peft_model` with ftc's LoRA defaults (rank 8, alpha 16, dropout 0.05, all-linear), a transformers
`Trainer` (classification) or TRL `SFTTrainer` (generation) with ftc's training arguments (bf16, AdamW,
clipping 1.0, gradient checkpointing on or off), on random token ids of exactly `seq` tokens. Per case it
records `torch.cuda.max_memory_allocated` / `max_memory_reserved` (loading and training apart), the CUDA
context outside PyTorch's allocator (`mem_get_info` used - reserved), parameter bytes after loading,
losses and timings. Results are written after every case, so a run cut short keeps what it measured.

`report` rebuilds each model's folder here (its config.json and a header-only model.safetensors with
the saved tensor shapes: all that ftc reads), writes one spec per case (task, method, batch size,
gradient checkpointing, `max_length` = seq, bf16), checks it with `--no-data` semantics through
`check_file`, and calls the estimate exactly as rule FT160 does. The measured footprint compared with the
estimate is peak reserved + CUDA context: what has to fit in the card (`budget.gpu_memory`).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9

# Shapes of public models (SmolLM-135M/360M, Llama-3.2-1B/3B, bert-base-uncased); weights are random.
MODELS: dict[str, dict[str, Any]] = {
    "smollm-135m": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 576, "intermediate_size": 1536,
                    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                    "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 2048},
    "smollm-360m": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 960, "intermediate_size": 2560,
                    "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
                    "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 2048},
    "llama-1b": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 2048, "intermediate_size": 8192,
                 "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                 "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 131072,
                 "rope_theta": 500000.0},
    "llama-3b": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 3072, "intermediate_size": 8192,
                 "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
                 "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 131072,
                 "rope_theta": 500000.0},
    "bert-base": {"arch": "bert", "dtype": "float32", "hidden_size": 768, "intermediate_size": 3072,
                  "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
                  "max_position_embeddings": 512},
    # held out of the calibration (bench/results/memory_estimate_h100_holdout.json): other proportions, an
    # untied head, a plain MLP in an fp32 checkpoint (Qwen2-0.5B, TinyLlama-1.1B, GPT-2 medium shapes)
    "qwen2-0.5b": {"arch": "qwen2", "dtype": "bfloat16", "hidden_size": 896, "intermediate_size": 4864,
                   "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                   "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768,
                   "rope_theta": 1000000.0, "shapes": ((512, 8), (2048, 1), (2048, 4))},
    "tinyllama-1.1b": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 2048, "intermediate_size": 5632,
                       "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                       "vocab_size": 32000, "tie_word_embeddings": False, "max_position_embeddings": 2048,
                       "shapes": ((512, 8), (2048, 1), (2048, 4))},
    "gpt2-medium": {"arch": "gpt2", "dtype": "float32", "n_embd": 1024, "n_layer": 24, "n_head": 16,
                    "vocab_size": 50257, "n_positions": 1024, "shapes": ((512, 8), (1024, 1), (1024, 4))},
    # for a quick check of the script on a CPU (`--models tiny-llama,tiny-bert --device cpu`)
    "tiny-llama": {"arch": "llama", "dtype": "bfloat16", "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "vocab_size": 512, "tie_word_embeddings": True, "max_position_embeddings": 2048},
    "tiny-bert": {"arch": "bert", "dtype": "float32", "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 512,
                  "max_position_embeddings": 512},
}
DEFAULT_MODELS = ("bert-base", "smollm-135m", "smollm-360m", "llama-1b", "llama-3b")
METHODS = ("full", "lora", "qlora")
LLM_SHAPES = ((512, 1), (512, 8), (2048, 1), (2048, 4), (2048, 8))  # (sequence, batch)
ENCODER_SHAPES = ((512, 1), (512, 4), (512, 8))
LORA = {"rank": 8, "alpha": 16, "dropout": 0.05}  # ftc's defaults (compiler/schema.py, LoraMethod)


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    gc: bool
    seq: int
    batch: int

    @property
    def id(self) -> str:
        return f"{self.model}/{self.method}/{'gc' if self.gc else 'nogc'}/s{self.seq}/b{self.batch}"

    @property
    def task(self) -> str:
        return "classification" if MODELS[self.model]["arch"] == "bert" else "generation"


def _shapes(model: str) -> tuple[tuple[int, int], ...]:
    info = MODELS[model]
    return tuple(info.get("shapes") or (ENCODER_SHAPES if info["arch"] == "bert" else LLM_SHAPES))


def grid(models: list[str], methods: list[str]) -> list[Case]:
    """Every case, in rounds: the extreme shapes of every model and method first, so that a run cut
    short by its deadline still covers the whole grid coarsely."""
    out = []
    for m in models:
        shapes = _shapes(m)
        if m.startswith("tiny-"):
            shapes = ((64, 2), (128, 4))
        for method in methods:
            for gc_on in (False, True):
                out += [Case(m, method, gc_on, s, b) for s, b in shapes]

    def rank(c: Case) -> tuple[int, int]:
        shapes = _shapes(c.model)
        order = [0, len(shapes) - 1] + list(range(1, len(shapes) - 1))
        i = shapes.index((c.seq, c.batch)) if (c.seq, c.batch) in shapes else 0
        return order.index(i), models.index(c.model)

    return sorted(out, key=rank)


# ---------------------------------------------------------------------------------------------
# measure (on the GPU machine)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def _safetensors_header(folder: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                out[name] = [meta["dtype"], meta["shape"]]
    return out


def build_model(name: str, root: Path, device: str) -> dict[str, Any]:
    """Random weights from the config, saved like a shipped checkpoint; returns what report needs."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForPreTraining

    dims = {k: v for k, v in MODELS[name].items() if k not in ("arch", "dtype", "shapes")}
    arch = MODELS[name]["arch"]
    dtype = getattr(torch, MODELS[name]["dtype"])
    folder = root / name
    if arch == "bert":
        cfg: Any = AutoConfig.for_model("bert", **dims, pad_token_id=0)
        cls: Any = AutoModelForPreTraining  # like bert-base-uncased: pooler, MLM and NSP heads
    else:
        cfg = AutoConfig.for_model(arch, **dims, pad_token_id=0, bos_token_id=2, eos_token_id=2)
        cls = AutoModelForCausalLM
    t0 = time.perf_counter()
    torch.manual_seed(0)
    try:
        with torch.device(device):
            model = cls.from_config(cfg, dtype=dtype)
    except Exception:  # noqa: BLE001 - fall back to CPU init
        model = cls.from_config(cfg, dtype=dtype)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    config = json.loads((folder / "config.json").read_text())
    header = _safetensors_header(folder)
    params = sum(math.prod(shape) for _, shape in header.values())
    return {"config": config, "safetensors": header, "params": params, "build_s": round(time.perf_counter() - t0, 1)}


def _tokenizer(vocab_size: int, seq: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                                   model_max_length=seq)


def _param_bytes(model: Any) -> dict[str, float]:
    by_dtype: dict[str, float] = {}
    trainable = 0
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel() * p.element_size()
        trainable += p.numel() if p.requires_grad else 0
    return {**{f"bytes_{k}": v for k, v in sorted(by_dtype.items())}, "trainable": trainable}


def _train_args(case: Case, out_dir: Path, cuda: bool, steps: int, config_cls: Any, **extra: Any) -> Any:
    # ftc's runtime/backends/hf.py training_arguments(), field by field where memory could depend on it
    args: dict[str, Any] = dict(
        output_dir=str(out_dir), max_steps=steps, num_train_epochs=1.0, learning_rate=2e-4,
        lr_scheduler_type="linear", warmup_steps=0, per_device_train_batch_size=case.batch,
        per_device_eval_batch_size=case.batch, gradient_accumulation_steps=1, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", bf16=cuda, fp16=False, seed=42, data_seed=42,
        save_strategy="no", eval_strategy="no", logging_strategy="steps", logging_steps=1,
        logging_first_step=True, include_num_input_tokens_seen="non_padding", report_to="none",
        disable_tqdm=True, use_cpu=not cuda, dataloader_pin_memory=cuda, dataloader_num_workers=0, **extra)
    fields = getattr(config_cls, "__dataclass_fields__", {})
    args["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = case.gc
    return config_cls(**args)


def run_case(case: Case, folder: Path, device: str, steps: int, work: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        BitsAndBytesConfig,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    cuda = device.startswith("cuda")
    classify = case.task == "classification"
    vocab = MODELS[case.model]["vocab_size"]
    tok = _tokenizer(vocab, case.seq)
    rec: dict[str, Any] = {}

    def peak() -> tuple[int, int]:
        if not cuda:
            return 0, 0
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        rec["start_allocated"] = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if case.method == "qlora":  # ftc: loading.quantization_config + load_base
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["classifier", "score", "pre_classifier"] if classify else None)
        kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
    if classify:
        kwargs.update(num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1},
                      ignore_mismatched_sizes=True)
    cls = AutoModelForSequenceClassification if classify else AutoModelForCausalLM
    model = cls.from_pretrained(str(folder), **kwargs)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if case.method == "full":  # ftc: text._full with no freeze/unfreeze patterns
        for p in model.parameters():
            p.requires_grad_(True)
    else:  # ftc: text.attach_method + peft_config
        if case.method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=case.gc)
        model = get_peft_model(model, LoraConfig(
            r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
            bias="none", task_type="SEQ_CLS" if classify else "CAUSAL_LM"))
    rec.update(_param_bytes(model))
    rec["total_params"] = sum(p.numel() for p in model.parameters())
    if cuda:
        rec["loaded_allocated"] = torch.cuda.memory_allocated()
    rec["load_peak_allocated"], rec["load_peak_reserved"] = peak()
    rec["load_s"] = round(time.perf_counter() - t0, 2)

    g = torch.Generator().manual_seed(0)
    n = case.batch * steps
    ids = torch.randint(3, vocab, (n, case.seq), generator=g).tolist()
    step_peaks: list[int] = []

    class Peaks(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            step_peaks.append(peak()[0])

    if classify:
        ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * case.seq] * n,
                                "labels": [i % 2 for i in range(n)]})
        args = _train_args(case, work / "ck", cuda, steps, TrainingArguments)
        trainer: Any = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                               data_collator=DataCollatorWithPadding(tok), callbacks=[Peaks()])
        rec["trainer"] = "Trainer"
    else:
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_dict({"input_ids": ids})
        args = _train_args(case, work / "ck", cuda, steps, SFTConfig, max_length=case.seq, packing=False,
                           completion_only_loss=None, assistant_only_loss=False, dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Peaks()])
        rec["trainer"] = "SFTTrainer"
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # ftc: hf.quiet
        trainer.remove_callback(cb)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    trainer.train()
    rec["train_s"] = round(time.perf_counter() - t1, 2)
    rec["train_peak_allocated"], rec["train_peak_reserved"] = peak()
    rec["step_peaks_allocated"] = step_peaks
    rec["losses"] = [round(float(h["loss"]), 4) for h in trainer.state.log_history if "loss" in h]
    if cuda:
        free, total = torch.cuda.mem_get_info()
        rec["device_used_end"] = total - free
        rec["context"] = total - free - torch.cuda.memory_reserved()
        rec["peak_allocated"] = max(rec["load_peak_allocated"], rec["train_peak_allocated"])
        rec["peak_reserved"] = max(rec["load_peak_reserved"], rec["train_peak_reserved"])
        rec["footprint"] = rec["peak_reserved"] + rec["context"]
    return rec


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def measure(args: argparse.Namespace) -> int:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    start = time.perf_counter()
    out_path = Path(args.out)
    env: dict[str, Any] = {"versions": _versions(), "device": args.device, "steps": args.steps}
    if args.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_total=p.total_memory)
    print(json.dumps(env), flush=True)
    result: dict[str, Any] = {"env": env, "lora": LORA, "models": {}, "cases": []}

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        out_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

    models = args.models.split(",")
    cases = grid(models, args.methods.split(","))
    if args.only:
        cases = [c for c in cases if any(part in c.id for part in args.only.split(","))]
    root = Path(tempfile.mkdtemp(prefix="ftc_mem_"))
    built: set[str] = set()
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "model": case.model, "method": case.method, "gc": case.gc,
                                 "seq": case.seq, "batch": case.batch, "task": case.task}
        if time.perf_counter() - start > args.deadline:
            entry["status"] = "skipped (deadline)"
            result["cases"].append(entry)
            continue
        if case.model not in built:
            result["models"][case.model] = build_model(case.model, root, args.device)
            built.add(case.model)
            _free(args.device)
        work = Path(tempfile.mkdtemp(prefix="case_", dir=root))
        try:
            entry.update(run_case(case, root / case.model, args.device, args.steps, work))
            entry["status"] = "ok"
        except torch.OutOfMemoryError as err:
            entry["status"] = "oom"
            entry["error"] = str(err).splitlines()[0][:300]
            if args.device.startswith("cuda"):
                entry["peak_allocated"] = torch.cuda.max_memory_allocated()
                entry["peak_reserved"] = torch.cuda.max_memory_reserved()
            del err
        except Exception as err:  # noqa: BLE001 - record and go on with the next case
            entry["status"] = "error"
            entry["error"] = f"{type(err).__name__}: {str(err)[:400]}"
            del err
        _free(args.device)
        if args.device.startswith("cuda"):
            entry["after_allocated"] = torch.cuda.memory_allocated()
        result["cases"].append(entry)
        save()
        fp = entry.get("footprint", entry.get("peak_reserved", 0)) / GB
        print(f"{time.perf_counter() - start:7.1f}s {case.id:38} {entry['status']:6} footprint {fp:6.2f} GB "
              f"alloc {entry.get('peak_allocated', 0) / GB:6.2f} GB {entry.get('train_s', '')}s "
              f"{entry.get('error', '')[:120]}", flush=True)
    save()
    return 0


# ---------------------------------------------------------------------------------------------
# report (here, with ftc installed)


SPEC = """spec "mem" {{
  intent {{ goal behavior; stability stable; owner "bench" }}
  model {{ modality text; base "models/{model}"; task {task}{labels} }}
  method {method} {{ rank {rank}; alpha {alpha} }}
  signal sft {{ input "text"; target "label" }}
  data {{
    train "data/train.jsonl" rows 2000
    val "data/val.jsonl" rows 300
    test "data/test.jsonl" rows 300
    max_length {seq} truncate
  }}
  train {{ steps 3; learning_rate 2e-4; batch_size {batch}; precision bf16; gradient_checkpointing {gc} }}
  eval {{ metric f1 macro; gate f1 >= 0.5 on test }}
  budget {{ gpu_memory 80GB }}
}}
"""


def _write_model(folder: Path, info: dict[str, Any]) -> None:
    """config.json and a header-only safetensors file: what ftc's estimate reads of a local base."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(info["config"], indent=1))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    size = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I64": 8}
    offset = 0
    for name, (dtype, shape) in sorted(info["safetensors"].items()):
        n = math.prod(shape) * size.get(dtype, 4)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)


def estimates(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """case id -> ftc's estimate (total and parts, bytes), computed the way rule FT160 computes it."""
    from ftc.compiler import estimate as est
    from ftc.compiler.check import CheckOptions, check_file

    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ftc_mem_report_") as tmp:
        root = Path(tmp)
        for name, info in result["models"].items():
            _write_model(root / "models" / name, info)
        for c in result["cases"]:
            text = SPEC.format(model=c["model"], task=c["task"], method=c["method"], rank=LORA["rank"],
                               alpha=LORA["alpha"], seq=c["seq"], batch=c["batch"], gc=str(c["gc"]).lower(),
                               labels='; labels ["a", "b"]' if c["task"] == "classification" else "")
            if c["method"] == "full":
                text = text.replace(f"method full {{ rank {LORA['rank']}; alpha {LORA['alpha']} }}",
                                    "method full { }")
            path = root / "spec.ftspec"
            path.write_text(text)
            res = check_file(path, CheckOptions(no_data=True))
            assert res.checked is not None, [d.message for d in res.diagnostics]
            spec, checked = res.checked.spec, res.checked
            shape = est.model_shape(spec.model, checked.dir_of(spec.model.at("base")))
            assert shape is not None, c["id"]
            e = est.estimate(spec, shape, est.default_seq_len(spec))
            out[c["id"]] = {"total": e.total, **{k: v for k, v in e.parts()}, "params": shape.params,
                            "source": shape.source, "ft160": any(d.code == "FT160" for d in res.diagnostics)}
    return out


def _measured(c: dict[str, Any], what: str) -> float | None:
    if c.get("status") != "ok":
        return None
    return float(c["footprint"] if what == "footprint" else c["peak_allocated"])


def summary(rows: list[tuple[float, float]]) -> dict[str, Any]:
    errs = [abs(e / m - 1) for e, m in rows]
    ratios = [e / m for e, m in rows]
    under = [r for r in ratios if r < 1]
    return {"cases": len(rows), "median_abs_err_pct": 100 * statistics.median(errs),
            "mean_abs_err_pct": 100 * statistics.fmean(errs), "min_ratio": min(ratios), "max_ratio": max(ratios),
            "under": len(under)}


def report(args: argparse.Namespace) -> int:
    path = Path(args.results)
    result = json.loads(path.read_text())
    est_now = estimates(result)
    compare = {"now": est_now}
    saved = result.get("estimates", {})
    for key in saved:
        compare[key] = saved[key]
    what = args.against
    print(f"{result['env'].get('gpu', result['env']['device'])}, {result['env']['versions']}")
    print(f"measured = {'peak reserved + CUDA context' if what == 'footprint' else 'peak allocated'}; "
          f"ratio = estimate / measured (< 1: under-estimate)\n")
    keys = [k for k in compare if k != "now"] + ["now"]
    head = f"{'case':38} {'measured':>9}" + "".join(f" {'est ' + k:>11} {'ratio':>6}" for k in keys)
    print(head)
    for c in result["cases"]:
        m = _measured(c, what)
        line = f"{c['id']:38} " + (f"{m / GB:9.2f}" if m else f"{c.get('status', '?')[:9]:>9}")
        for k in keys:
            e = compare[k].get(c["id"], {}).get("total")
            if e is None:
                line += f" {'':>11} {'':>6}"
                continue
            line += f" {e / GB:11.2f} " + (f"{e / m:6.2f}" if m else f"{'':>6}")
        if c.get("status") == "oom":
            line += "  (OOM at %.1f GB)" % (c.get("peak_reserved", 0) / GB)
        print(line)
    print()
    groups: dict[str, Any] = {"all": lambda c: True, "measured >= 8 GB": lambda c: _measured(c, what) >= 8 * GB}
    for method in METHODS:
        groups[method] = lambda c, m=method: c["method"] == m
    groups["gradient checkpointing"] = lambda c: c["gc"]
    groups["no checkpointing"] = lambda c: not c["gc"]
    for k in keys:
        for name, keep in groups.items():
            pairs = [(compare[k][c["id"]]["total"], _measured(c, what)) for c in result["cases"]
                     if _measured(c, what) and c["id"] in compare[k] and keep(c)]
            if not pairs:
                continue
            s = summary(pairs)
            worst = min(pairs, key=lambda em: em[0] / em[1])
            print(f"estimate {k:7} {name:23}: {s['cases']:3} cases, median |error| {s['median_abs_err_pct']:5.1f}%, "
                  f"mean {s['mean_abs_err_pct']:5.1f}%, ratio {s['min_ratio']:.2f}..{s['max_ratio']:.2f}, "
                  f"under {s['under']:2} (worst {worst[0] / GB:.2f} GB for {worst[1] / GB:.2f} GB)")
    ooms = [c for c in result["cases"] if c.get("status") == "oom"]
    if ooms:
        card = result["env"].get("gpu_total", 0)
        missed = [c["id"] for c in ooms if est_now[c["id"]]["total"] < card]
        print(f"OOM cases: {len(ooms)}; estimated under the card's {card / GB:.1f} GB (a miss): {missed or 'none'}")
    if args.save_estimates:
        result.setdefault("estimates", {})[args.save_estimates] = {
            k: {"total": round(v["total"])} for k, v in est_now.items()}
        path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"saved the current estimates as {args.save_estimates!r} in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="train each case on the GPU; write the measurements")
    m.add_argument("--out", required=True)
    m.add_argument("--models", default=",".join(DEFAULT_MODELS))
    m.add_argument("--methods", default=",".join(METHODS))
    m.add_argument("--only", default="", help="comma-separated substrings of case ids to keep")
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--device", default="cuda")
    m.add_argument("--deadline", type=float, default=520.0, help="seconds after which no case starts")
    r = sub.add_parser("report", help="ftc's estimate beside each measurement")
    r.add_argument("results")
    r.add_argument("--against", choices=("footprint", "allocated"), default="footprint")
    r.add_argument("--save-estimates", default="", help="store the current estimates in the file under this key")
    args = ap.parse_args(argv)
    return measure(args) if args.cmd == "measure" else report(args)


if __name__ == "__main__":
    sys.exit(main())
