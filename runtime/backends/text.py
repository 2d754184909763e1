"""Text backend: attach the spec's method to a local base, train with SFT, evaluate.

What this module does: attach the spec's method (`attach_method`, `peft_config`, `name_matches`),
build the SFT and classification datasets, and train (`fit_sft` keeps the model, `train_sft` is the
executor's step). It re-exports nothing; the rest of the text backend lives where it is defined:
    loading.py     set_seed, load_base, load_tokenizer, base_dir, labels_of (the base model)
    hf.py          Recorder, training_arguments, trainer_callbacks, resume_checkpoint, train_block,
                   make_trainer_class, quiet (shared with the DPO, reward and policy trainers)
    artifacts.py   save_artifacts, export_merged, load_trained (any artifact below)
    text_eval.py   evaluate, evaluate_file, measure_latency (the executor's evaluation steps,
                   named in compiler/capabilities.py)

Nothing is downloaded: the base is a local folder or a snapshot in the Hugging Face cache, and the
Hugging Face libraries run offline (set in backends/__init__.py before they are imported).

Artifacts (ctx.run_dir/"artifacts"), safetensors only, each folder renamed into place complete:
    adapter/    peft adapter (lora, qlora, prompt_tuning, prefix_tuning) + tokenizer:
                PeftModel.from_pretrained(AutoModelFor*.from_pretrained(base), "adapter")
    adapters/   ftc bottleneck adapters + tokenizer (see bottleneck.py for loading)
    model/      full fine-tune: AutoModelFor*.from_pretrained("model")
    merged/     LoRA merged into the base (`merge true`, not for a quantised base)
    ftc_artifact.json  in each: kind, method, task, base path, labels, how to load
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime.api import TrainContext, TrainResult
from ftc.runtime.backends.artifacts import (
    export_merged,
    save_artifacts,
)
from ftc.runtime.backends.hf import (
    Emit,
    Recorder,
    early_stopping_metric,
    is_classification,
    make_trainer_class,
    quiet,
    resume_checkpoint,
    task_of,
    train_block,
    trainer_callbacks,
    training_arguments,
)
from ftc.runtime.backends.loading import (
    base_dir,
    is_quantized,
    load_base,
    set_seed,
    virtual_positions,
)

PEFT_METHODS = ("lora", "qlora", "prompt_tuning", "prefix_tuning")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}{% generation %}"
    "{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# Methods


def name_matches(name: str, pattern: str) -> bool:
    """A freeze/unfreeze pattern matches a parameter by fnmatch on its full name, on a module
    prefix (`bert.embeddings`), a component run (`embeddings`, `layer.0`) or a suffix (`bias`)."""
    return any(fnmatch.fnmatchcase(name, p) for p in (pattern, f"{pattern}.*", f"*.{pattern}", f"*.{pattern}.*"))


def _full(model: Any, method: s.FullMethod) -> Any:
    names = [n for n, _ in model.named_parameters()]
    for pat in (*method.unfreeze, *method.freeze):
        if not any(name_matches(n, pat) for n in names):
            raise ValueError(f"pattern {pat!r} matches no parameter of {type(model).__name__} "
                             f"(e.g. {', '.join(names[:3])})")
    for n, p in model.named_parameters():
        trainable = any(name_matches(n, pat) for pat in method.unfreeze) if method.unfreeze else True
        if any(name_matches(n, pat) for pat in method.freeze):
            trainable = False
        p.requires_grad_(trainable)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("`freeze`/`unfreeze` leave no parameter to train")
    return model


def _peft_task(task: str) -> str:
    return "SEQ_CLS" if is_classification(task) else "CAUSAL_LM"


def peft_config(ctx: TrainContext, task: str) -> Any:
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    m = ctx.spec.method
    base = str(base_dir(ctx))
    if m.kind in ("lora", "qlora"):
        targets: Any = "all-linear" if tuple(m.targets) == ("all-linear",) else list(m.targets)
        return LoraConfig(r=m.rank, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets,
                          bias=m.bias, task_type=_peft_task(task), base_model_name_or_path=base)
    if m.kind == "prompt_tuning":
        init: dict[str, Any] = {"prompt_tuning_init": PromptTuningInit.RANDOM}
        if m.init_text:
            init = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": m.init_text,
                    "tokenizer_name_or_path": base}
        return PromptTuningConfig(task_type=_peft_task(task), num_virtual_tokens=m.virtual_tokens,
                                  base_model_name_or_path=base, **init)
    if m.kind == "prefix_tuning":
        return PrefixTuningConfig(task_type=_peft_task(task), num_virtual_tokens=m.prefix_length,
                                  prefix_projection=m.projection, base_model_name_or_path=base)
    raise ValueError(f"`method {m.kind}` is not a peft method")


def attach_method(model: Any, ctx: TrainContext, *, for_task: str | None = None) -> Any:
    """Make the model trainable the way the spec's method says; returns the (possibly wrapped) model.

    full: every parameter, then `unfreeze` (only these) and `freeze` patterns; lora/qlora, prompt and
    prefix tuning: a peft model (qlora, or any quantised base, is prepared for k-bit training
    first); adapters: ftc's bottleneck adapters with the base frozen.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    m = ctx.spec.method
    task = task_of(ctx, for_task)
    if m.kind == "full":
        if is_quantized(model):
            raise ValueError("a quantised base cannot be fully fine-tuned: use `method qlora`")
        return _full(model, m)
    if m.kind == "adapters":
        from ftc.runtime.backends import bottleneck

        bottleneck.prepare(model, m.bottleneck, m.placement, m.dropout, train_head=is_classification(task))
        return model
    if is_quantized(model):
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=train_block(ctx).gradient_checkpointing)
    return get_peft_model(model, peft_config(ctx, task))


# ---------------------------------------------------------------------------------------------
# Data


def max_length(ctx: TrainContext, tok: Any, model: Any) -> tuple[int, str]:
    data = ctx.spec.data
    if data is not None and data.max_length is not None:
        return data.max_length.tokens, data.max_length.policy
    cfg = model.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 1024
    model_max = tok.model_max_length if tok.model_max_length and tok.model_max_length < 10**6 else limit
    # prompt and prefix tuning take positions before the text: leave them room
    return max(1, int(min(limit, model_max, 1024)) - virtual_positions(ctx)), "truncate"


def target_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def ensure_chat_template(tok: Any, emit: Emit | None = None) -> None:
    if not getattr(tok, "chat_template", None):
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
        if emit is not None:
            emit({"event": "note", "message": "the tokenizer has no chat template; using ftc's role-tagged one"})


def sft_rows(ctx: TrainContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """prompt/completion rows (or {"messages": [...]}) for TRL from the spec's SFT fields."""
    sig = ctx.spec.signal
    if sig.messages:
        return [{"messages": list(r[sig.messages])} for r in rows if r.get(sig.messages)]
    if not sig.input or not sig.target:
        raise ValueError("`signal sft` needs `input` and `target` (or `messages`)")
    return [{"prompt": str(r[sig.input]), "completion": target_text(r[sig.target])} for r in rows
            if r.get(sig.input) is not None and r.get(sig.target) is not None]


def classification_rows(ctx: TrainContext, rows: list[dict[str, Any]], label2id: dict[str, int],
                        emit: Emit | None = None) -> tuple[list[str], list[int]]:
    sig = ctx.spec.signal
    texts, labels, unknown = [], [], 0
    for r in rows:
        label = r.get(sig.target)
        if r.get(sig.input) is None or label is None or str(label) not in label2id:
            unknown += 1
            continue
        texts.append(str(r[sig.input]))
        labels.append(label2id[str(label)])
    if unknown and emit is not None:
        emit({"event": "note", "message": f"skipped {unknown} row(s) without input or with a label outside `labels`"})
    return texts, labels


def _classification_dataset(ctx: TrainContext, split: str, tok: Any, model: Any, emit: Emit) -> Any:
    """The split tokenised, or the same dataset from the cache (tokcache.py) when nothing it
    depends on changed."""
    from ftc.runtime.backends import tokcache

    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    texts, labels = classification_rows(ctx, ctx.parts[split].rows, label2id, emit)
    limit, policy = max_length(ctx, tok, model)

    def make_key() -> str:
        return tokcache.key("classification", tokcache.tokenizer_fingerprint(tok, base_dir(ctx)),
                            tokcache.content_digest([texts, labels]), {"max_length": limit, "policy": policy})

    ds, meta = tokcache.reuse(make_key, lambda: _tokenize_classification(tok, texts, labels, limit, policy),
                              split, emit)
    if meta.get("dropped"):
        emit({"event": "note", "message": f"dropped {meta['dropped']} {split} row(s) over {limit} tokens"})
    return ds


def _tokenize_classification(tok: Any, texts: list[str], labels: list[int], limit: int,
                             policy: str) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset

    enc = tok(texts, truncation=policy == "truncate", max_length=limit)
    columns = {k: list(v) for k, v in enc.items()}
    columns["labels"] = labels
    ds = Dataset.from_dict(columns)
    before = len(ds)
    if policy == "drop":
        ds = ds.filter(lambda ex: len(ex["input_ids"]) <= limit)
    return ds, {"dropped": before - len(ds)}


def _sft_dataset(ctx: TrainContext, split: str, tok: Any, model: Any, emit: Emit) -> Any:
    from datasets import Dataset

    rows = sft_rows(ctx, ctx.parts[split].rows)
    limit, policy = max_length(ctx, tok, model)
    if policy == "drop":
        def length(r: dict[str, Any]) -> int:
            if "messages" in r:
                return len(tok.apply_chat_template(r["messages"], tokenize=True))
            return len(tok(r["prompt"] + r["completion"])["input_ids"]) + 1

        kept = [r for r in rows if length(r) <= limit]
        if len(kept) < len(rows):
            emit({"event": "note", "message": f"dropped {len(rows) - len(kept)} {split} row(s) over {limit} tokens"})
        rows = kept
    return Dataset.from_list(rows)


def classification_metric_fn(ctx: TrainContext) -> Callable[[Any], dict[str, float]]:
    from ftc.runtime import metrics

    declared = [(m.name, m.average) for m in ctx.spec.eval.metrics] if ctx.spec.eval else []

    def compute(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        out = metrics.classification_metrics(list(pred.label_ids), metrics.softmax(logits))
        out.pop("n", None)
        out.pop("loss", None)  # the trainer reports its own eval_loss
        return metrics.with_declared_averages(out, declared)

    return compute


# ---------------------------------------------------------------------------------------------
# SFT


@dataclass
class SftRun:
    result: TrainResult
    model: Any = None
    tokenizer: Any = None
    trainer: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _generation_early_stopping(ctx: TrainContext, has_val: bool) -> dict[str, Any]:
    """SFTTrainer's evaluations report loss (and token accuracy), not decoded metrics: early
    stopping watches val.loss; val.perplexity is the same ordering; anything else is refused."""
    es = early_stopping_metric(ctx) if has_val else None
    if es is None or es[0] == "loss":
        return {}
    if es[0] == "perplexity":
        return {"metric_for_best_model": "loss", "greater_is_better": False}
    raise ValueError(f"early stopping on `val.{es[0]}` needs a decoding evaluation during training, which "
                     f"the generation backend does not run; use `early_stopping ... on val.loss`")


def _sft_trainer(ctx: TrainContext, model: Any, tok: Any, emit: Emit) -> Any:
    """A Trainer (classification) or TRL SFTTrainer (generation, extraction) for this spec."""
    from transformers import DataCollatorWithPadding, Trainer

    task = task_of(ctx)
    has_val = "val" in ctx.parts and len(ctx.parts["val"]) > 0
    if is_classification(task):
        train_ds = _classification_dataset(ctx, "train", tok, model, emit)
        val_ds = _classification_dataset(ctx, "val", tok, model, emit) if has_val else None
        args = training_arguments(ctx, len(train_ds), emit=emit, has_val=has_val)
        return make_trainer_class(Trainer)(
            model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tok,
            data_collator=DataCollatorWithPadding(tok), compute_metrics=classification_metric_fn(ctx),
            callbacks=trainer_callbacks(ctx, emit, has_val=has_val))
    from trl import SFTConfig, SFTTrainer

    messages = bool(ctx.spec.signal.messages)
    if messages:
        ensure_chat_template(tok, emit)
    train_ds = _sft_dataset(ctx, "train", tok, model, emit)
    val_ds = _sft_dataset(ctx, "val", tok, model, emit) if has_val else None
    limit, _ = max_length(ctx, tok, model)
    packing = train_block(ctx).packing
    flash = str(getattr(model.config, "_attn_implementation", "")).startswith("flash")
    if packing and not flash:
        emit({"event": "note", "message": "packing without FlashAttention: sequences are packed `wrapped` "
                                          "(examples may attend across their boundaries)"})
    args = training_arguments(
        ctx, len(train_ds), config_cls=SFTConfig, emit=emit, has_val=has_val,
        max_length=limit, packing=packing, packing_strategy="bfd" if flash else "wrapped",
        completion_only_loss=None if messages else True, assistant_only_loss=messages,
        dataset_num_proc=None, **_generation_early_stopping(ctx, has_val))
    from ftc.runtime.backends import tokcache

    trainer = tokcache.sft_trainer(  # TRL tokenises in the trainer: its prepared datasets are cached
        make_trainer_class(SFTTrainer), base_dir(ctx), emit,
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tok,
        callbacks=trainer_callbacks(ctx, emit, has_val=has_val))
    return _biases_in_fp32(trainer)


def _biases_in_fp32(trainer: Any) -> Any:
    """TRL's SFTTrainer casts every trainable parameter of a quantised model to bf16 (QLoRA's
    adapter weights); the other trainable ones (the biases `bias all` or `lora_only` trains, which
    live in layers that are not quantised and are fed fp32 activations) go back to fp32, or their
    layers fail on mixed dtypes (`bias all` with `compute_dtype fp32`)."""
    import torch

    inner = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if is_quantized(inner):
        for name, p in trainer.model.named_parameters():
            if p.requires_grad and "lora_" not in name and p.dtype == torch.bfloat16:
                p.data = p.data.float()
    return trainer


def fit_sft(ctx: TrainContext) -> SftRun:
    """Train with SFT and write the artifact; keeps the trained model in memory (tests, merging)."""
    rec = Recorder(ctx)
    tr = train_block(ctx)
    if ctx.spec.signal is None or ctx.spec.signal.kind != "sft":
        raise ValueError("train_sft needs `signal sft`")
    if "train" not in ctx.parts or len(ctx.parts["train"]) == 0:
        raise ValueError("no training rows")
    set_seed(tr.seed)
    model, tok = load_base(ctx)
    model = attach_method(model, ctx)
    trainer = quiet(_sft_trainer(ctx, model, tok, rec))
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rec({"event": "start", "method": ctx.spec.method.kind, "task": task_of(ctx), "precision": precision,
         "requested_precision": tr.precision, "max_steps": trainer.args.max_steps,
         "trainable_params": trainable, "total_params": total, "device": ctx.device})
    resume = resume_checkpoint(ctx, rec)
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    model = trainer.model
    es = next((cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "EarlyStoppingCallback"), None)
    stopped = bool(es is not None and tr.early_stopping is not None
                   and es.early_stopping_patience_counter >= tr.early_stopping.patience
                   and state.global_step < state.max_steps)
    if stopped:
        assert tr.early_stopping is not None
        rec({"event": "note", "message": f"early stopping at step {state.global_step}: "
                                         f"{tr.early_stopping.metric} did not improve for {tr.early_stopping.patience} "
                                         f"evaluations", "step": state.global_step})
    model_dir, kind = _save(ctx, model, tok)
    best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
    rec({"event": "end", "step": state.global_step, "stopped_early": stopped, "artifact": str(model_dir),
         "best_checkpoint": str(best) if best else None, "best_metric": state.best_metric,
         "precision": precision})
    result = TrainResult(model_dir=model_dir, kind=kind, history=rec.history, steps=state.global_step,
                         stopped_early=stopped, best_checkpoint=best)
    return SftRun(result, model, tok, trainer, rec.history)


def _save(ctx: TrainContext, model: Any, tok: Any) -> tuple[Path, str]:
    """The artifacts, written by one process (rank 0 of a distributed node: runtime/dist.py); the
    others wait until they are written."""
    from ftc.runtime import dist

    saved = save_artifacts(ctx, model, tok) if dist.is_main() else (ctx.run_dir / "artifacts", "")
    dist.barrier()
    return saved


def train_sft(ctx: TrainContext) -> TrainResult:
    """Supervised fine-tuning as the spec says; see the module docstring for the artifacts."""
    from ftc.runtime import dist

    run = fit_sft(ctx)
    result, history = run.result, run.history
    del run  # free the training model before a merge loads the base again
    if not dist.is_main():
        return result  # rank 0 merges and reports the result (runtime/rank.py)
    rec = Recorder(ctx)
    rec.history = history
    result.merged_dir = export_merged(ctx, result.model_dir, rec)
    return result
