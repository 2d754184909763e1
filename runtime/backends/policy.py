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
from ftc.runtime.backends import artifacts, hf, loading, reward, text
from ftc.runtime.backends import preference_common as pc
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
    tr = hf.train_block(sctx)
    rec = hf.Recorder(ctx)
    loading.set_seed(tr.seed)
    model, tok = loading.load_base(sctx)
    model = text.attach_method(model, sctx)
    scorer = reward.load_reward_model(reward_dir, hf.device_of(ctx))
    limit, _ = pc.limit_of(sctx, tok, model)
    new = new_tokens(limit, max_new_tokens)
    rows = _prompt_rows(pc.rows_of(ctx.parts.get("train")), stage.prompt, tok, max(1, limit - new))
    if not rows:
        raise ValueError(f"no prompts (`{stage.prompt}`) in the train split for the policy")
    if tr.early_stopping is not None:
        rec.note("early stopping is not applied to policy optimisation (it would need generation on val); "
                 "the KL penalty and the step budget bound the run")
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if stage.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = hf.training_arguments(
        sctx, len(rows) * stage.generations, config_cls=config_cls, emit=rec, has_val=False,
        num_generations=stage.generations, generation_batch_size=_generation_batch(tr, stage.generations),
        max_completion_length=new, beta=stage.kl_coef, include_num_input_tokens_seen="no",
        # the loss weighs each sampled sequence by exp(log p_now - log p_sampled); with dropout on in
        # the training forward pass and off while sampling, that ratio is noise (seen: losses of 1e9
        # on the example), so the policy and its reference run without dropout, as TRL advises
        disable_dropout=True)
    trainer = hf.make_trainer_class(trainer_cls)(
        model=model, reward_funcs=scorer, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
        callbacks=pc.callbacks(sctx, rec, False))
    run = pc.fit(sctx, trainer, rec, model, f"policy ({stage.algorithm})")
    trained = pc.without_ref(trainer.model)
    model_dir, kind = artifacts.save_artifacts(ctx, trained, tok)
    pc.end(rec, run, model_dir)
    return Fitted(TrainResult(model_dir, kind, history=rec.history, **run), trained, tok, rec.history)


def train_policy(ctx: TrainContext, reward_dir: Path, *, max_new_tokens: int | None = None) -> TrainResult:
    """Stage 2: RLOO or GRPO on the prompts of the spec's train split, scored by the reward model."""
    return pc.with_merged(ctx, fit_policy(ctx, reward_dir, max_new_tokens=max_new_tokens))


# ---------------------------------------------------------------------------------------------
# Evaluation


def reference_field(rows: list[dict[str, Any]], ctx: TrainContext) -> str | None:
    """The held-out answer field of an RLHF eval split: `reference`, else the reward stage's
    chosen field, `target` or `completion`, whichever the rows have."""
    for name in ("reference", ctx.spec.signal.reward.chosen, "target", "completion"):
        if rows and all(isinstance(r.get(name), str) for r in rows):
            return str(name)
    return None


generate = pc.generate  # greedy completions; kept here, where RLHF evaluation used to define it


def _pairs(ctx: TrainContext, rows: list[dict[str, Any]], kept: list[int]) -> list[int]:
    """Positions in `kept` whose rows also hold a preference pair in the reward stage's fields."""
    stage = ctx.spec.signal.reward
    return [j for j, i in enumerate(kept) if isinstance(rows[i].get(stage.chosen), str)
            and isinstance(rows[i].get(stage.rejected), str)]


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], name: str,
                  *, reward_split: str | None = None) -> EvalResult:
    """Metrics of an RLHF policy (`model_dir` None: the base) on `rows` (named `name`):

    loss/perplexity   per-token NLL of the rows' reference answers (the field `reference`, else
                      the reward stage's chosen field, `target` or `completion`);
    accuracy          where rows also hold the reward stage's chosen/rejected pair: the implicit-
                      reward accuracy, as for DPO (an RLHF policy kept near the base by the KL
                      penalty has reward beta * log(p/p_base)): the share of pairs where the
                      policy raised the chosen reply's log-likelihood relative to the base more
                      than the rejected one's, a tie counting half (the base scores 0.5);
    likelihood_accuracy  the reference-free comparison: the chosen reply has the higher
                      log-likelihood (biased towards the shorter reply);
    exact_match, f1, format_validity (when declared): a greedy reply against the reference;
    reward            mean score of greedy completions by the run's reward model (when trained);
    reward_accuracy   the reward model on its own stage's split `reward_split` (when it has one),
                      else on the rows' pairs."""
    stage, rstage = ctx.spec.signal.policy, ctx.spec.signal.reward
    kept = [i for i, r in enumerate(rows) if isinstance(r.get(stage.prompt), str)]
    model, tok = artifacts.load_trained(ctx, model_dir)
    limit, _ = pc.limit_of(ctx, tok, model)
    batch = hf.train_block(ctx).batch_size
    prompts = [pc.with_sep(rows[i][stage.prompt]) for i in kept]
    ref = reference_field([rows[i] for i in kept], ctx)
    references = [rows[i][ref] for i in kept] if ref else []
    nll = pc.completion_logps(model, tok, prompts, references, limit, batch) if ref else []
    pairs = _pairs(ctx, rows, kept)
    wins: dict[int, float] = {}
    likely: dict[int, bool] = {}
    if pairs:
        pair_prompts = [prompts[j] for j in pairs]

        def pair_logps(m: Any) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
            def of(field: str) -> list[tuple[float, int]]:
                return pc.completion_logps(m, tok, pair_prompts, [rows[kept[j]][field] for j in pairs], limit, batch)
            return of(rstage.chosen), of(rstage.rejected)

        good, bad = pair_logps(model)
        likely = {j: g[0] > b[0] for j, g, b in zip(pairs, good, bad, strict=True)}
        ref_good, ref_bad = good, bad
        if model_dir is not None:  # the base is the reference the policy was kept near
            ref_good, ref_bad = pair_logps(artifacts.load_trained(ctx, None)[0])
        for j, g, b, rg, rb in zip(pairs, good, bad, ref_good, ref_bad, strict=True):
            margin = (g[0] - rg[0]) - (b[0] - rb[0])
            wins[j] = 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
    decoded: dict[str, list[float]] = {}
    if ref and pc.wants_decoding(ctx) and prompts:
        decoded = pc.decoded_scores(ctx, pc.greedy(model, tok, prompts, references, limit, batch), references)
    rewards: list[float] = []
    rdir = reward.reward_dir(ctx)
    trained_reward = reward.is_reward_folder(rdir)
    if trained_reward and prompts:
        new = new_tokens(limit, None)
        completions = generate(model, tok, [pc.fit_prompt(tok, p, max(1, limit - new)) for p in prompts], new,
                               batch)
        scorer = reward.load_reward_model(rdir, hf.device_of(ctx))
        rewards = scorer.score([p + c for p, c in zip(prompts, completions, strict=True)])

    def compute(idx: list[int]) -> dict[str, float]:
        out: dict[str, float] = {}
        if nll:
            tokens = sum(nll[i][1] for i in idx)
            loss = -sum(nll[i][0] for i in idx) / tokens if tokens else math.nan
            out.update(loss=loss, perplexity=pc.perplexity(loss))
        judged = [i for i in idx if i in wins]
        if judged:
            out["accuracy"] = sum(wins[i] for i in judged) / len(judged)
            out["likelihood_accuracy"] = sum(likely[i] for i in judged) / len(judged)
        if rewards:
            out["reward"] = sum(rewards[i] for i in idx) / len(idx)
        return {**out, **pc.mean_over(decoded, idx)}

    result = compute(list(range(len(kept)))) if kept else {}
    if trained_reward:
        if reward_split is not None and reward_split in reward.reward_parts(ctx):
            accuracy = reward.reward_accuracy(ctx, rdir, reward_split)
        else:
            accuracy = reward.reward_accuracy_rows(ctx, rdir, [rows[kept[j]] for j in pairs])
        if not math.isnan(accuracy):
            result["reward_accuracy"] = accuracy
    return EvalResult(split=name, metrics=result, slices=pc.slice_metrics(ctx, rows, kept, compute), n=len(kept),
                      extra={"reference_field": ref, "skipped": len(rows) - len(kept)})


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """evaluate_rows on the spec's `split` (reward_accuracy on the reward stage's split of that name)."""
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), split, reward_split=split)
