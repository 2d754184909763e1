"""DPO on TRL 1.16: prompt/chosen/rejected pairs -> an adapter (any PEFT method), ftc bottleneck
adapters, or a full model; and its evaluation against the base.

Reference model: with a PEFT method the model is wrapped before the trainer sees it; TRL then
clones the fresh adapter as "ref" (the starting policy: the base while LoRA's B is zero, the base
with the initial virtual tokens for prompt and prefix tuning), and that copy is deleted before
export. A full fine-tune and bottleneck adapters (identity at the start) get a frozen copy of the
base from the same folder.

Tokenised data: TRL's DPOTrainer prepares (tokenises) the pairs itself; `tokcache.dpo_trainer`
stores what it prepared and hands it back on the next run with the same pairs, tokenizer and
settings (tokcache.py says how).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import artifacts, hf, loading, text, tokcache
from ftc.runtime.backends import preference_common as pc
from ftc.runtime.backends.artifacts import Fitted


@pc.quiet_datasets()
def fit_dpo(ctx: TrainContext) -> Fitted:
    """Train with DPO and write the artifact; keeps the trained model in memory."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    sig = ctx.spec.signal
    rec = hf.Recorder(ctx)
    loading.set_seed(hf.train_block(ctx).seed)
    model, tok = loading.load_base(ctx)
    ref_model = loading.load_base(ctx)[0] if ctx.spec.method.kind in ("full", "adapters") else None
    model = text.attach_method(model, ctx)
    limit, policy = pc.limit_of(ctx, tok, model)

    def pairs(split: str) -> list[dict[str, Any]]:
        rows = pc.preference_rows(pc.rows_of(ctx.parts.get(split)), sig.prompt, sig.chosen, sig.rejected)
        return pc.fits(rows, tok, limit, policy, rec, split)

    train_rows, val_rows = pairs("train"), pairs("val")
    if not train_rows:
        raise ValueError("no preference pairs to train on")
    has_val = bool(val_rows)
    args = hf.training_arguments(ctx, len(train_rows), config_cls=DPOConfig, emit=rec, has_val=has_val,
                                   beta=sig.beta, max_length=limit,
                                   **pc.best_metric(ctx, has_val, "rewards/accuracies", rec))
    trainer = tokcache.dpo_trainer(
        hf.make_trainer_class(DPOTrainer), loading.base_dir(ctx), rec,
        model=model, ref_model=ref_model, args=args, processing_class=tok, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None, callbacks=pc.callbacks(ctx, rec, has_val))
    run = pc.fit(ctx, trainer, rec, model, "dpo")
    trained = pc.without_ref(trainer.model)
    model_dir, kind = artifacts.save_artifacts(ctx, trained, tok)
    pc.end(rec, run, model_dir)
    return Fitted(TrainResult(model_dir, kind, history=rec.history, **run), trained, tok, rec.history)


def train_dpo(ctx: TrainContext) -> TrainResult:
    """DPO as the spec says; LoRA is also exported merged when `merge true`."""
    return pc.with_merged(ctx, fit_dpo(ctx))


def usable(ctx: TrainContext, rows: list[dict[str, Any]]) -> list[int]:
    """Indices of the rows with a text prompt, chosen and rejected reply."""
    sig = ctx.spec.signal
    return [i for i, r in enumerate(rows) if isinstance(r.get(sig.prompt), str)
            and isinstance(r.get(sig.chosen), str) and isinstance(r.get(sig.rejected), str)]


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], name: str) -> EvalResult:
    """Metrics of a DPO model (`model_dir` None: the base) on `rows` (named `name`), overall and per slice.

    accuracy: DPO's implicit-reward accuracy (TRL's `rewards/accuracies`, RewardBench's way of
    scoring a DPO model): the share of pairs whose reward margin, beta * ((log p(chosen) - log
    p_base(chosen)) - (log p(rejected) - log p_base(rejected))), is positive, a tie counting half.
    The base is its own reference, so every margin is 0 and it scores 0.5: no preference;
    likelihood_accuracy: reference-free, the model gives the chosen reply a higher log-likelihood
    than the rejected one (biased towards whichever reply is shorter);
    loss/perplexity: per-token NLL of the chosen replies (comparable with the base: the regression
    guard); dpo_loss and reward_margin: DPO's objective against the base as the reference;
    exact_match, f1 (token F1), format_validity, when the spec declares them: a greedy reply to
    the prompt against the chosen one."""
    sig = ctx.spec.signal
    kept = usable(ctx, rows)
    model, tok = artifacts.load_trained(ctx, model_dir)
    limit, _ = pc.limit_of(ctx, tok, model)
    prompts = [pc.with_sep(rows[i][sig.prompt]) for i in kept]
    batch = hf.train_block(ctx).batch_size
    chosen_text, rejected_text = [rows[i][sig.chosen] for i in kept], [rows[i][sig.rejected] for i in kept]
    chosen = pc.completion_logps(model, tok, prompts, chosen_text, limit, batch)
    rejected = pc.completion_logps(model, tok, prompts, rejected_text, limit, batch)
    decoded: dict[str, list[float]] = {}
    if pc.wants_decoding(ctx) and kept:
        replies = pc.greedy(model, tok, prompts, chosen_text, limit, batch)
        decoded = pc.decoded_scores(ctx, replies, chosen_text)
    ref_c, ref_r = chosen, rejected
    if model_dir is not None:
        del model
        base, _ = artifacts.load_trained(ctx, None)
        ref_c = pc.completion_logps(base, tok, prompts, chosen_text, limit, batch)
        ref_r = pc.completion_logps(base, tok, prompts, rejected_text, limit, batch)

    def compute(idx: list[int]) -> dict[str, float]:
        tokens = sum(chosen[i][1] for i in idx)
        loss = -sum(chosen[i][0] for i in idx) / tokens if tokens else math.nan
        margins = [sig.beta * ((chosen[i][0] - ref_c[i][0]) - (rejected[i][0] - ref_r[i][0])) for i in idx]
        wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
        return {"accuracy": wins / len(idx), "likelihood_accuracy": sum(chosen[i][0] > rejected[i][0] for i in idx)
                / len(idx), "loss": loss,
                "perplexity": pc.perplexity(loss),
                "dpo_loss": sum(math.log1p(math.exp(-m)) for m in margins) / len(idx),
                "reward_margin": sum(margins) / len(idx), **pc.mean_over(decoded, idx)}

    return EvalResult(split=name, metrics=compute(list(range(len(kept)))) if kept else {},
                      slices=pc.slice_metrics(ctx, rows, kept, compute), n=len(kept),
                      extra={"skipped": len(rows) - len(kept)})


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """evaluate_rows on the spec's `split`."""
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), split)
