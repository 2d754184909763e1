"""Preference backends on TRL 1.16: DPO, and RLHF (a reward model, then RLOO or GRPO driven by it).

    train_dpo(ctx)                    DPOTrainer on prompt/chosen/rejected -> adapter or full model
    train_reward(ctx)                 RewardTrainer, a 1-label sequence classifier -> "reward" model
    train_policy(ctx, reward_dir)     RLOOTrainer or GRPOTrainer scored by that reward model
    reward_accuracy(ctx, dir, split)  share of the reward stage's pairs where chosen scores higher
    evaluate(ctx, model_dir, split)   EvalResult for a DPO model or an RLHF policy (None = the base)

Loading, methods, training arguments, callbacks, atomic checkpoints and artifacts come from the
text backend (text.py); this module adds what preference training needs on top.

Text: a completion follows its prompt after PROMPT_SEP ("\\n"), in training and evaluation alike,
so that the reward model scores at policy time what it saw in training (TRL's online trainers
score `prompt + completion`). Chat-format rows (message lists) pass through unchanged.

Reference model: with a PEFT method the model is wrapped before the trainer sees it; TRL 1.16
then clones the fresh adapter as "ref" (equal to the base while LoRA's B is zero) and that copy is
deleted before export. A full DPO fine-tune gets a frozen copy of the base from the same folder;
RLOO/GRPO load theirs from the model's own folder (`beta` > 0).

RLHF stages: each trains with its `train` block merged over the spec's (keys written in the stage
win) and keeps its checkpoints under run_dir/<stage>/checkpoints. The reward artifact is a full
AutoModelForSequenceClassification folder, run_dir/artifacts/reward (a LoRA reward model is
merged first): TRL's online trainers take a reward model as a path or a PreTrainedModel, and a
PeftModel is neither. The policy is exported like any text model (artifacts/adapter or model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s
from ftc.runtime import metrics
from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import text

if TYPE_CHECKING:
    from ftc.compiler.data.splits import Part

PROMPT_SEP = "\n"
MAX_NEW_TOKENS = 64  # policy completions (training and evaluation) when nothing smaller is asked
RL_LOG_KEYS = ("reward", "reward_std", "kl", "entropy", "rewards/accuracies", "rewards/margins", "accuracy")


# ---------------------------------------------------------------------------------------------
# Settings and contexts


def merged_train(base: s.Train | None, stage: s.Train | None) -> s.Train:
    """A stage's `train` block over the spec's: keys the user wrote in the stage win."""
    if stage is None:
        return base if base is not None else s.Train()
    if base is None:
        return stage
    written = {name: getattr(stage, name) for name in s.schema_fields(s.Train) if stage.given(name)}
    return dataclasses.replace(base, **written)


def train_settings(ctx: TrainContext, stage: str | None = None) -> s.Train:
    node = getattr(ctx.spec.signal, stage) if stage else None
    return merged_train(ctx.spec.train, node.train if node is not None else None)


def stage_context(ctx: TrainContext, stage: str) -> TrainContext:
    """ctx for one RLHF stage: its merged `train` block, and run_dir/<stage> for checkpoints."""
    spec = dataclasses.replace(ctx.spec, train=train_settings(ctx, stage))
    checked = dataclasses.replace(ctx.checked, spec=spec)
    return dataclasses.replace(ctx, checked=checked, run_dir=ctx.run_dir / stage)


def _rows(part: Part | None) -> list[dict[str, Any]]:
    return list(part.rows) if part is not None else []


def _with_sep(prompt: Any) -> Any:
    if isinstance(prompt, str) and prompt and not prompt.endswith(PROMPT_SEP):
        return prompt + PROMPT_SEP
    return prompt


def preference_rows(rows: list[dict[str, Any]], prompt: str, chosen: str, rejected: str) -> list[dict[str, Any]]:
    """Rows in TRL's explicit-prompt preference format (rows missing a field are left out)."""
    return [{"prompt": _with_sep(r[prompt]), "chosen": r[chosen], "rejected": r[rejected]} for r in rows
            if r.get(prompt) is not None and r.get(chosen) is not None and r.get(rejected) is not None]


def _limit(ctx: TrainContext, tok: Any, model: Any, data: s.Data | None = None) -> tuple[int, str]:
    """(max tokens, truncate|drop): `data`'s max_length (else the spec's), never past the model's
    positions."""
    limit, policy = text.max_length(ctx, tok, model)
    if data is not None and data.max_length is not None:
        limit, policy = data.max_length.tokens, data.max_length.policy
    return min(limit, _position_limit(model) or limit), policy


def _fits(rows: list[dict[str, Any]], tok: Any, limit: int, policy: str, rec: text.Recorder,
          split: str) -> list[dict[str, Any]]:
    """`max_length N drop`: leave out text pairs whose longer side exceeds N tokens."""
    if policy != "drop":
        return rows

    def length(r: dict[str, Any]) -> int:
        if not isinstance(r["prompt"], str):
            return 0
        return max(len(tok(r["prompt"] + r[side])["input_ids"]) + 1 for side in ("chosen", "rejected"))

    kept = [r for r in rows if length(r) <= limit]
    if len(kept) < len(rows):
        rec.note(f"dropped {len(rows) - len(kept)} {split} pair(s) over {limit} tokens")
    return kept


# ---------------------------------------------------------------------------------------------
# Trainer plumbing shared by the three trainers


def _callbacks(ctx: TrainContext, rec: text.Recorder, evaluating: bool, split: str = "val") -> list[Any]:
    from ftc.runtime.backends.monitor import MonitorCallback
    from transformers import EarlyStoppingCallback

    class PreferenceMonitor(MonitorCallback):
        """Step events also carry the preference/RL scalars TRL logs (reward, kl, accuracies)."""

        def _step(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
            extra = {k: float(logs[k]) for k in RL_LOG_KEYS if isinstance(logs.get(k), (int, float))}
            emit = self.emit
            self.emit = lambda event: emit({**event, **extra})
            try:
                super()._step(args, state, logs)
            finally:
                self.emit = emit

    out: list[Any] = [PreferenceMonitor(rec, split=split)]
    es = text.train_block(ctx).early_stopping
    if es is not None and evaluating:
        out.append(EarlyStoppingCallback(early_stopping_patience=es.patience, early_stopping_threshold=es.min_delta))
    return out


def _best_metric(ctx: TrainContext, has_val: bool, accuracy: str, rec: text.Recorder) -> dict[str, Any]:
    """Early stopping's metric as this trainer reports it: `loss`, or `accuracy` under the name
    the trainer logs it (DPO: rewards/accuracies); another metric falls back to the loss."""
    found = text.early_stopping_metric(ctx) if has_val else None
    if found is None:
        return {}
    name = found[0]
    if name not in ("loss", "accuracy"):
        rec.note(f"early stopping on `{name}` is not measured while training this model; it watches the "
                 f"validation loss instead")
        name = "loss"
    metric = accuracy if name == "accuracy" else "loss"
    return {"metric_for_best_model": metric, "greater_is_better": name == "accuracy"}


def _fit(ctx: TrainContext, trainer: Any, rec: text.Recorder, model: Any, what: str) -> dict[str, Any]:
    """Train (resuming when asked); returns steps, stopped_early and the best checkpoint."""
    tr = text.train_block(ctx)
    text.quiet(trainer)
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    rec({"event": "start", "stage": what, "method": ctx.spec.method.kind, "precision": precision,
         "requested_precision": tr.precision, "max_steps": trainer.args.max_steps, "device": ctx.device,
         "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    trainer.train(resume_from_checkpoint=text.resume_checkpoint(ctx, rec))
    state = trainer.state
    es = next((cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "EarlyStoppingCallback"), None)
    stopped = bool(es is not None and tr.early_stopping is not None and state.global_step < state.max_steps
                   and es.early_stopping_patience_counter >= tr.early_stopping.patience)
    if stopped and tr.early_stopping is not None:
        rec.note(f"early stopping at step {state.global_step}: {tr.early_stopping.metric} did not improve "
                 f"for {tr.early_stopping.patience} evaluations", step=state.global_step)
    best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
    return {"steps": int(state.global_step), "stopped_early": stopped, "best_checkpoint": best}


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while TRL maps the data: the executor reports progress."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _without_ref(model: Any) -> Any:
    """Delete the "ref" adapter TRL adds beside "default", so only the trained one is exported."""
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")
    return model


def _end(rec: text.Recorder, run: dict[str, Any], model_dir: Path) -> None:
    best = run["best_checkpoint"]
    rec({"event": "end", "step": run["steps"], "stopped_early": run["stopped_early"], "artifact": str(model_dir),
         "best_checkpoint": str(best) if best else None})


# ---------------------------------------------------------------------------------------------
# DPO


@_quiet_datasets()
def train_dpo(ctx: TrainContext) -> TrainResult:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    sig = ctx.spec.signal
    rec = text.Recorder(ctx)
    text.set_seed(text.train_block(ctx).seed)
    model, tok = text.load_base(ctx)
    ref_model = text.load_base(ctx)[0] if ctx.spec.method.kind == "full" or ctx.spec.method.kind == "adapters" else None
    model = text.attach_method(model, ctx)
    limit, policy = _limit(ctx, tok, model)
    train_rows = _fits(preference_rows(_rows(ctx.parts.get("train")), sig.prompt, sig.chosen, sig.rejected),
                       tok, limit, policy, rec, "train")
    val_rows = _fits(preference_rows(_rows(ctx.parts.get("val")), sig.prompt, sig.chosen, sig.rejected),
                     tok, limit, policy, rec, "val")
    if not train_rows:
        raise ValueError("no preference pairs to train on")
    has_val = bool(val_rows)
    args = text.training_arguments(ctx, len(train_rows), config_cls=DPOConfig, emit=rec, has_val=has_val,
                                   beta=sig.beta, max_length=limit,
                                   **_best_metric(ctx, has_val, "rewards/accuracies", rec))
    trainer = text.make_trainer_class(DPOTrainer)(
        model=model, ref_model=ref_model, args=args, processing_class=tok, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None, callbacks=_callbacks(ctx, rec, has_val))
    run = _fit(ctx, trainer, rec, model, "dpo")
    model_dir, kind = text.save_artifacts(ctx, _without_ref(trainer.model), tok)
    _end(rec, run, model_dir)
    del trainer, model, ref_model
    merged = text.export_merged(ctx, model_dir, rec) if kind == "adapter" else None
    return TrainResult(model_dir, kind, merged_dir=merged, history=rec.history, **run)


# ---------------------------------------------------------------------------------------------
# RLHF stage 1: the reward model


def _reward_parts(ctx: TrainContext) -> dict[str, Part]:
    if ctx.stage_parts:
        return ctx.stage_parts
    stages = getattr(ctx.checked.data, "stages", None) or {}
    return stages.get("reward") or ctx.parts


def reward_dir(ctx: TrainContext) -> Path:
    return ctx.run_dir / "artifacts" / "reward"


def _position_limit(model: Any) -> int | None:
    cfg = model.config
    n = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    return int(n) if n else None


def _tokenized_pairs(rows: list[dict[str, Any]], tok: Any, limit: int) -> list[dict[str, Any]]:
    """prompt+chosen / prompt+rejected ids, EOS-terminated, truncated (keep start) to `limit`:
    TRL's own `max_length` would drop long pairs instead."""
    out = []
    for r in rows:
        pair = {}
        for side in ("chosen", "rejected"):
            ids = tok(r["prompt"] + r[side], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            pair[f"{side}_ids"] = ids[:limit]
        out.append(pair)
    return out


def _load_reward_base(ctx: TrainContext) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    path = text.base_dir(ctx)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = text.load_tokenizer(path, trust)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, trust_remote_code=trust)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _publish_reward(ctx: TrainContext, model: Any, tok: Any) -> Path:
    final = reward_dir(ctx)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    info = {"format": "ftc-artifact", "version": 1, "kind": "reward", "method": ctx.spec.method.kind,
            "task": "reward", "base_model": str(text.base_dir(ctx)), "prompt_separator": PROMPT_SEP,
            "load": "AutoModelForSequenceClassification.from_pretrained(this_folder)  # logits[:, 0] = reward"}
    (tmp / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    text.assert_no_pickles(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@_quiet_datasets()
def train_reward(ctx: TrainContext) -> TrainResult:
    """Stage 1: a reward model (the base with a 1-output head) on the reward stage's pairs."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    stage = ctx.spec.signal.reward
    if ctx.spec.method.kind not in ("full", "lora", "qlora"):
        raise ValueError(f"the reward model trains with `method full` or `lora` (merged into it), not "
                         f"`{ctx.spec.method.kind}`")
    sctx = stage_context(ctx, "reward")
    rec = text.Recorder(ctx)
    text.set_seed(text.train_block(sctx).seed)
    model, tok = _load_reward_base(sctx)
    model = text.attach_method(model, sctx, for_task="classification")
    parts = _reward_parts(ctx)
    limit, policy = _limit(sctx, tok, model, stage.data)

    def data(split: str) -> list[dict[str, Any]]:
        rows = preference_rows(_rows(parts.get(split)), stage.prompt, stage.chosen, stage.rejected)
        rows = _fits(rows, tok, limit, policy, rec, f"reward {split}")
        chat = any(not isinstance(r["prompt"], str) for r in rows)
        return rows if chat else _tokenized_pairs(rows, tok, limit)

    train_rows, val_rows = data("train"), data("val")
    if not train_rows:
        raise ValueError("no preference pairs to train the reward model on")
    has_val = bool(val_rows)
    args = text.training_arguments(sctx, len(train_rows), config_cls=RewardConfig, emit=rec, has_val=has_val,
                                   max_length=None, include_num_input_tokens_seen="no",  # pairs: no input_ids
                                   **_best_metric(sctx, has_val, "accuracy", rec))
    trainer = text.make_trainer_class(RewardTrainer)(
        model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None,
        callbacks=_callbacks(sctx, rec, has_val, split="reward.val"))
    run = _fit(sctx, trainer, rec, model, "reward")
    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    trained.config.pad_token_id = tok.pad_token_id
    out = _publish_reward(ctx, trained, tok)
    _end(rec, run, out)
    return TrainResult(out, "reward", history=rec.history, **run)


def load_reward_model(model_dir: Path, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    tok = text.load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval(), tok


def score(model: Any, tok: Any, texts: list[str], batch: int = 16) -> list[float]:
    """Reward-model scores of whole texts (prompt + PROMPT_SEP + completion)."""
    import torch

    out: list[float] = []
    limit = _position_limit(model)
    dev = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, padding_side="right",
                      truncation=limit is not None, max_length=limit, add_special_tokens=False)
            out.extend(model(**{k: v.to(dev) for k, v in enc.items()}).logits[:, 0].float().tolist())
    return out


def reward_accuracy(ctx: TrainContext, model_dir: Path, split: str) -> float:
    """Share of the reward stage's `split` pairs where the chosen answer scores higher (NaN when
    the split has no text pairs)."""
    stage = ctx.spec.signal.reward
    rows = preference_rows(_rows(_reward_parts(ctx).get(split)), stage.prompt, stage.chosen, stage.rejected)
    rows = [r for r in rows if isinstance(r["prompt"], str)]
    if not rows:
        return math.nan
    model, tok = load_reward_model(model_dir, text.device_of(ctx))
    chosen = score(model, tok, [r["prompt"] + r["chosen"] for r in rows])
    rejected = score(model, tok, [r["prompt"] + r["rejected"] for r in rows])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)


# ---------------------------------------------------------------------------------------------
# RLHF stage 2: the policy


def _prompt_rows(rows: list[dict[str, Any]], field: str, tok: Any, budget: int) -> list[dict[str, Any]]:
    """{"prompt": text} rows; a text prompt over the budget keeps its end (the question)."""
    out = []
    for r in rows:
        if r.get(field) is None:
            continue
        p = _with_sep(r[field])
        if isinstance(p, str):
            ids = tok(p, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                p = tok.decode(ids[-budget:])
        out.append({"prompt": p})
    return out


def _generation_batch(tr: s.Train, generations: int) -> int:
    """Completions per generation round: a multiple of the micro-batch × grad_accum and of
    `generations` (TRL needs whole prompt groups in a round)."""
    step = tr.batch_size * tr.grad_accum
    return step * generations // math.gcd(step, generations)


def _new_tokens(limit: int, asked: int | None) -> int:
    return max(1, asked if asked else min(MAX_NEW_TOKENS, limit // 2))


@_quiet_datasets()
def train_policy(ctx: TrainContext, reward_dir: Path, *, max_new_tokens: int | None = None) -> TrainResult:
    """Stage 2: RLOO or GRPO on the prompts of the spec's train split, scored by the reward model."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    stage = ctx.spec.signal.policy
    sctx = stage_context(ctx, "policy")
    tr = text.train_block(sctx)
    rec = text.Recorder(ctx)
    text.set_seed(tr.seed)
    model, tok = text.load_base(sctx)
    model = text.attach_method(model, sctx)
    reward_model, reward_tok = load_reward_model(reward_dir, text.device_of(ctx))
    limit, _ = _limit(sctx, tok, model)
    new = _new_tokens(limit, max_new_tokens)
    rows = _prompt_rows(_rows(ctx.parts.get("train")), stage.prompt, tok, max(1, limit - new))
    if not rows:
        raise ValueError(f"no prompts (`{stage.prompt}`) in the train split for the policy")
    if tr.early_stopping is not None:
        rec.note("early stopping is not applied to policy optimisation (it would need generation on val); "
                 "the KL penalty and the step budget bound the run")
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if stage.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = text.training_arguments(
        sctx, len(rows) * stage.generations, config_cls=config_cls, emit=rec, has_val=False,
        num_generations=stage.generations, generation_batch_size=_generation_batch(tr, stage.generations),
        max_completion_length=new, beta=stage.kl_coef, include_num_input_tokens_seen="no")
    trainer = text.make_trainer_class(trainer_cls)(
        model=model, reward_funcs=reward_model, args=args, processing_class=tok,
        reward_processing_classes=reward_tok, train_dataset=Dataset.from_list(rows),
        callbacks=_callbacks(sctx, rec, False))
    run = _fit(sctx, trainer, rec, model, f"policy ({stage.algorithm})")
    model_dir, kind = text.save_artifacts(ctx, _without_ref(trainer.model), tok)
    _end(rec, run, model_dir)
    del trainer, model
    merged = text.export_merged(ctx, model_dir, rec) if kind == "adapter" else None
    return TrainResult(model_dir, kind, merged_dir=merged, history=rec.history, **run)


# ---------------------------------------------------------------------------------------------
# Evaluation


def completion_logps(model: Any, tok: Any, prompts: list[str], completions: list[str], limit: int,
                     batch: int = 8) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each completion (+ EOS) after its prompt,
    tokenised as TRL does: the completion starts where prompt and prompt+completion diverge."""
    import torch

    seqs: list[tuple[list[int], int]] = []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tok(p)["input_ids"]
        full = (tok(p + c)["input_ids"] + [tok.eos_token_id])[:limit]
        start = 0
        while start < min(len(p_ids), len(full)) and p_ids[start] == full[start]:
            start += 1
        seqs.append((full, max(1, start)))
    out: list[tuple[float, int]] = []
    dev = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(seqs), batch):
            chunk = seqs[i:i + batch]
            width = max(len(f) for f, _ in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (f, _) in enumerate(chunk):
                ids[r, :len(f)], mask[r, :len(f)] = torch.tensor(f), 1
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()[:, -width:]
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].to(dev).unsqueeze(-1)).squeeze(-1)
            for r, (f, start) in enumerate(chunk):
                picked = logp[r, start - 1:len(f) - 1]
                out.append((float(picked.sum()), int(picked.numel())))
    return out


def _slices(ctx: TrainContext, rows: list[dict[str, Any]], kept: list[int],
            compute: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    position = {row: i for i, row in enumerate(kept)}
    for slc in ctx.spec.data.slices if ctx.spec.data is not None else ():
        chosen = [position[r] for r in metrics.slice_indices(rows, slc.conditions) if r in position]
        out[slc.name] = {**compute(chosen), "n": float(len(chosen))} if chosen else {"n": 0.0}
    return out


def _split_rows(ctx: TrainContext, split: str) -> list[dict[str, Any]]:
    part = ctx.parts.get(split)
    if part is None:
        raise ValueError(f"no `{split}` split to evaluate on (splits: {', '.join(sorted(ctx.parts)) or 'none'})")
    return part.rows


def _evaluate_dpo(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """accuracy: the model gives the chosen reply a higher log-likelihood than the rejected one;
    loss/perplexity: per-token NLL of the chosen replies (comparable with the base: the regression
    guard); dpo_loss and reward_margin: DPO's objective against the base as the reference."""
    sig = ctx.spec.signal
    rows = _split_rows(ctx, split)
    kept = [i for i, r in enumerate(rows) if isinstance(r.get(sig.prompt), str)
            and isinstance(r.get(sig.chosen), str) and isinstance(r.get(sig.rejected), str)]
    model, tok = text.load_trained(ctx, model_dir)
    limit, _ = _limit(ctx, tok, model)
    prompts = [_with_sep(rows[i][sig.prompt]) for i in kept]
    batch = text.train_block(ctx).batch_size
    chosen = completion_logps(model, tok, prompts, [rows[i][sig.chosen] for i in kept], limit, batch)
    rejected = completion_logps(model, tok, prompts, [rows[i][sig.rejected] for i in kept], limit, batch)
    ref_c, ref_r = chosen, rejected
    if model_dir is not None:
        base, _ = text.load_trained(ctx, None)
        ref_c = completion_logps(base, tok, prompts, [rows[i][sig.chosen] for i in kept], limit, batch)
        ref_r = completion_logps(base, tok, prompts, [rows[i][sig.rejected] for i in kept], limit, batch)

    def compute(idx: list[int]) -> dict[str, float]:
        tokens = sum(chosen[i][1] for i in idx)
        loss = -sum(chosen[i][0] for i in idx) / tokens if tokens else math.nan
        margins = [sig.beta * ((chosen[i][0] - ref_c[i][0]) - (rejected[i][0] - ref_r[i][0])) for i in idx]
        return {"accuracy": sum(chosen[i][0] > rejected[i][0] for i in idx) / len(idx), "loss": loss,
                "perplexity": math.exp(loss) if loss < 700 else math.inf,
                "dpo_loss": sum(math.log1p(math.exp(-m)) for m in margins) / len(idx),
                "reward_margin": sum(margins) / len(idx)}

    return EvalResult(split=split, metrics=compute(list(range(len(kept)))) if kept else {},
                      slices=_slices(ctx, rows, kept, compute), n=len(kept),
                      extra={"skipped": len(rows) - len(kept)})


def _reference_field(rows: list[dict[str, Any]], ctx: TrainContext) -> str | None:
    """The held-out answer field of an RLHF eval split: `reference`, else the reward stage's
    chosen field, `target` or `completion`, whichever the rows have."""
    for name in ("reference", ctx.spec.signal.reward.chosen, "target", "completion"):
        if rows and all(isinstance(r.get(name), str) for r in rows):
            return str(name)
    return None


def _generate(model: Any, tok: Any, prompts: list[str], new: int, batch: int) -> list[str]:
    import torch

    out: list[str] = []
    dev = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, padding_side="left")
            gen = model.generate(**{k: v.to(dev) for k, v in enc.items()}, max_new_tokens=new, do_sample=False,
                                 num_beams=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def _evaluate_policy(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """loss/perplexity: per-token NLL of the split's reference answers; reward: mean score of
    greedy completions by the run's reward model (when trained); reward_accuracy: the reward
    model on the reward stage's split of the same name (when it has one)."""
    stage = ctx.spec.signal.policy
    rows = _split_rows(ctx, split)
    kept = [i for i, r in enumerate(rows) if isinstance(r.get(stage.prompt), str)]
    model, tok = text.load_trained(ctx, model_dir)
    limit, _ = _limit(ctx, tok, model)
    batch = text.train_block(ctx).batch_size
    prompts = [_with_sep(rows[i][stage.prompt]) for i in kept]
    ref = _reference_field([rows[i] for i in kept], ctx)
    nll = completion_logps(model, tok, prompts, [rows[i][ref] for i in kept], limit, batch) if ref else []
    rewards: list[float] = []
    rdir = reward_dir(ctx)
    if (rdir / "config.json").is_file() and prompts:
        completions = _generate(model, tok, prompts, _new_tokens(limit, None), batch)
        rmodel, rtok = load_reward_model(rdir, text.device_of(ctx))
        rewards = score(rmodel, rtok, [p + c for p, c in zip(prompts, completions, strict=True)])

    def compute(idx: list[int]) -> dict[str, float]:
        out: dict[str, float] = {}
        if nll:
            tokens = sum(nll[i][1] for i in idx)
            loss = -sum(nll[i][0] for i in idx) / tokens if tokens else math.nan
            out.update(loss=loss, perplexity=math.exp(loss) if loss < 700 else math.inf)
        if rewards:
            out["reward"] = sum(rewards[i] for i in idx) / len(idx)
        return out

    result = compute(list(range(len(kept)))) if kept else {}
    if (rdir / "config.json").is_file() and split in _reward_parts(ctx):
        accuracy = reward_accuracy(ctx, rdir, split)
        if not math.isnan(accuracy):
            result["reward_accuracy"] = accuracy
    return EvalResult(split=split, metrics=result, slices=_slices(ctx, rows, kept, compute), n=len(kept),
                      extra={"reference_field": ref, "skipped": len(rows) - len(kept)})


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """Metrics of a DPO model or an RLHF policy (`model_dir` None: the base) on `split`."""
    if ctx.spec.signal.kind == "dpo":
        return _evaluate_dpo(ctx, model_dir, split)
    return _evaluate_policy(ctx, model_dir, split)
