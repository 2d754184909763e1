"""RLHF stage 2: the policy, optimised with TRL's RLOOTrainer or GRPOTrainer against the reward
model of stage 1 (passed as a reward function, whatever method trained it); and its evaluation.

The policy trains with the spec's method and is exported like any text model (artifacts/adapter,
adapters or model). The KL reference: with a PEFT method TRL disables the adapter; otherwise
(full, bottleneck adapters) it loads the base from the model's own folder (`kl_coef` > 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import preference_common as pc
from ftc.runtime.backends import reward, text
from ftc.runtime.backends.artifacts import Fitted


def _prompt_rows(rows: list[dict[str, Any]], field: str, tok: Any, budget: int) -> list[dict[str, Any]]:
    """{"prompt": text} rows; a text prompt over the budget keeps its end (the question)."""
    out = []
    for r in rows:
        if r.get(field) is None:
            continue
        p = pc.with_sep(r[field])
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


def new_tokens(limit: int, asked: int | None) -> int:
    return max(1, asked if asked else min(pc.MAX_NEW_TOKENS, limit // 2))


@pc.quiet_datasets()
def fit_policy(ctx: TrainContext, reward_dir: Path, *, max_new_tokens: int | None = None) -> Fitted:
    """Stage 2 on the prompts of the spec's train split; keeps the trained policy in memory."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    stage = ctx.spec.signal.policy
    sctx = pc.stage_context(ctx, "policy")
    tr = text.train_block(sctx)
    rec = text.Recorder(ctx)
    text.set_seed(tr.seed)
    model, tok = text.load_base(sctx)
    model = text.attach_method(model, sctx)
    scorer = reward.load_reward_model(reward_dir, text.device_of(ctx))
    limit, _ = pc.limit_of(sctx, tok, model)
    new = new_tokens(limit, max_new_tokens)
    rows = _prompt_rows(pc.rows_of(ctx.parts.get("train")), stage.prompt, tok, max(1, limit - new))
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
        model=model, reward_funcs=scorer, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
        callbacks=pc.callbacks(sctx, rec, False))
    run = pc.fit(sctx, trainer, rec, model, f"policy ({stage.algorithm})")
    trained = pc.without_ref(trainer.model)
    model_dir, kind = text.save_artifacts(ctx, trained, tok)
    pc.end(rec, run, model_dir)
    return Fitted(TrainResult(model_dir, kind, history=rec.history, **run), trained, tok, rec.history)


def train_policy(ctx: TrainContext, reward_dir: Path, *, max_new_tokens: int | None = None) -> TrainResult:
    """Stage 2: RLOO or GRPO on the prompts of the spec's train split, scored by the reward model."""
    fitted = fit_policy(ctx, reward_dir, max_new_tokens=max_new_tokens)
    result = fitted.result
    del fitted  # free the training model before a merge loads the base again
    rec = text.Recorder(ctx)
    rec.history = result.history
    if result.kind == "adapter":
        result.merged_dir = text.export_merged(ctx, result.model_dir, rec)
    return result


# ---------------------------------------------------------------------------------------------
# Evaluation


def _reference_field(rows: list[dict[str, Any]], ctx: TrainContext) -> str | None:
    """The held-out answer field of an RLHF eval split: `reference`, else the reward stage's
    chosen field, `target` or `completion`, whichever the rows have."""
    for name in ("reference", ctx.spec.signal.reward.chosen, "target", "completion"):
        if rows and all(isinstance(r.get(name), str) for r in rows):
            return str(name)
    return None


def generate(model: Any, tok: Any, prompts: list[str], new: int, batch: int) -> list[str]:
    """Greedy completions (left-padded batches), decoded without the prompt."""
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


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """loss/perplexity: per-token NLL of the split's reference answers; reward: mean score of
    greedy completions by the run's reward model (when trained); reward_accuracy: the reward
    model on the reward stage's split of the same name (when it has one)."""
    stage = ctx.spec.signal.policy
    rows = pc.split_rows(ctx, split)
    kept = [i for i, r in enumerate(rows) if isinstance(r.get(stage.prompt), str)]
    model, tok = text.load_trained(ctx, model_dir)
    limit, _ = pc.limit_of(ctx, tok, model)
    batch = text.train_block(ctx).batch_size
    prompts = [pc.with_sep(rows[i][stage.prompt]) for i in kept]
    ref = _reference_field([rows[i] for i in kept], ctx)
    nll = pc.completion_logps(model, tok, prompts, [rows[i][ref] for i in kept], limit, batch) if ref else []
    rewards: list[float] = []
    rdir = reward.reward_dir(ctx)
    trained_reward = reward.is_reward_folder(rdir)
    if trained_reward and prompts:
        completions = generate(model, tok, prompts, new_tokens(limit, None), batch)
        scorer = reward.load_reward_model(rdir, text.device_of(ctx))
        rewards = scorer.score([p + c for p, c in zip(prompts, completions, strict=True)])

    def compute(idx: list[int]) -> dict[str, float]:
        out: dict[str, float] = {}
        if nll:
            tokens = sum(nll[i][1] for i in idx)
            loss = -sum(nll[i][0] for i in idx) / tokens if tokens else math.nan
            out.update(loss=loss, perplexity=pc.perplexity(loss))
        if rewards:
            out["reward"] = sum(rewards[i] for i in idx) / len(idx)
        return out

    result = compute(list(range(len(kept)))) if kept else {}
    if trained_reward and split in reward.reward_parts(ctx):
        accuracy = reward.reward_accuracy(ctx, rdir, split)
        if not math.isnan(accuracy):
            result["reward_accuracy"] = accuracy
    return EvalResult(split=split, metrics=result, slices=pc.slice_metrics(ctx, rows, kept, compute), n=len(kept),
                      extra={"reference_field": ref, "skipped": len(rows) - len(kept)})
