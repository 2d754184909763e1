"""Preference backends on TRL 1.16: DPO, and RLHF (a reward model, then RLOO or GRPO driven by it).

    train_dpo(ctx)                    DPOTrainer on prompt/chosen/rejected -> adapter or full model   dpo.py
    train_reward(ctx)                 RewardTrainer, a 1-output sequence classifier -> "reward"      reward.py
    train_policy(ctx, reward_dir)     RLOOTrainer or GRPOTrainer scored by that reward model          policy.py
    reward_accuracy(ctx, dir, split)  share of the reward stage's pairs where chosen scores higher    reward.py
    evaluate(ctx, model_dir, split)   EvalResult for a DPO model or an RLHF policy (None = the base)
    evaluate_file(ctx, dir, dataset)  the same on a data file named by a gate (regression on a general set)
    measure_latency(ctx, dir, split)  p50/p95/p99 seconds of one prompt's greedy reply (fixed new tokens)
  fit_dpo / fit_reward / fit_policy do the same and keep the trained model in memory (Fitted).

Every text method trains every stage (full, lora, qlora, adapters, prompt and prefix tuning).
Loading, methods, training arguments, callbacks, atomic checkpoints and artifacts come from the
text backend (text.py); what the three trainers share is in preference_common.py.

RLHF stages: each trains with its `train` block merged over the spec's (keys written in the stage
win) and keeps its checkpoints under run_dir/<stage>/checkpoints. The reward artifact is
run_dir/artifacts/reward (reward.py says what it holds per method); TRL's online trainers call it
as a reward function. The policy is exported like any text model.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ftc.runtime.api import EvalResult, TrainContext
from ftc.runtime.backends import artifacts, dpo, policy, text
from ftc.runtime.backends import preference_common as pc
from ftc.runtime.backends.dpo import fit_dpo, train_dpo
from ftc.runtime.backends.latency import DEFAULT_REQUESTS, model_name, time_requests, warmup_of
from ftc.runtime.backends.policy import fit_policy, train_policy
from ftc.runtime.backends.preference_common import (
    PROMPT_SEP,
    completion_logps,
    merged_train,
    preference_rows,
    stage_context,
    train_settings,
)
from ftc.runtime.backends.reward import (
    RewardModel,
    fit_reward,
    load_reward_model,
    reward_accuracy,
    reward_dir,
    score,
    train_reward,
)

__all__ = [
    "PROMPT_SEP",
    "RewardModel",
    "completion_logps",
    "evaluate",
    "evaluate_file",
    "fit_dpo",
    "fit_policy",
    "fit_reward",
    "load_reward_model",
    "measure_latency",
    "merged_train",
    "preference_rows",
    "reward_accuracy",
    "reward_dir",
    "score",
    "stage_context",
    "train_dpo",
    "train_policy",
    "train_reward",
    "train_settings",
]


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """Metrics of a DPO model or an RLHF policy (`model_dir` None: the base) on `split`."""
    if ctx.spec.signal.kind == "dpo":
        return dpo.evaluate(ctx, model_dir, split)
    return policy.evaluate(ctx, model_dir, split)


def _columns(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{c}`" for c in sorted({k for r in rows[:50] for k in r})) or "none"


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    """The same metrics on a data file named by a gate (`gate regression <= 0.02 vs base on
    "data/general.jsonl"`): relative to the spec's folder, read like the spec's data (`fields`
    applied). DPO needs prompt/chosen/rejected rows; an RLHF policy prompts (with a reference
    answer for loss and perplexity)."""
    from ftc.runtime.backends.text_eval import read_rows

    sig = ctx.spec.signal
    rows = read_rows(ctx, dataset)
    if sig.kind == "dpo":
        if not dpo.usable(ctx, rows):
            raise ValueError(f"cannot evaluate the DPO model on {dataset}: no row has text `{sig.prompt}`, "
                             f"`{sig.chosen}` and `{sig.rejected}` fields (after the spec's `fields` mapping; "
                             f"columns: {_columns(rows)})")
        return dpo.evaluate_rows(ctx, model_dir, rows, dataset)
    if not any(isinstance(r.get(sig.policy.prompt), str) for r in rows):
        raise ValueError(f"cannot evaluate the policy on {dataset}: no row has a text `{sig.policy.prompt}` field "
                         f"(after the spec's `fields` mapping; columns: {_columns(rows)})")
    return policy.evaluate_rows(ctx, model_dir, rows, dataset)


def prompt_field(ctx: TrainContext) -> str:
    sig = ctx.spec.signal
    return str(sig.prompt if sig.kind == "dpo" else sig.policy.prompt)


def latency_tokens(ctx: TrainContext, tok: Any, rows: list[dict[str, Any]], limit: int) -> int:
    """New tokens per timed request: the median length of the replies the model is trained
    towards (DPO: the chosen ones; RLHF: the reference answers), within 1..MAX_NEW_TOKENS; without
    any, what the policy generates in training and evaluation."""
    sig = ctx.spec.signal
    if sig.kind == "dpo":
        replies = [r[sig.chosen] for r in rows if isinstance(r.get(sig.chosen), str)]
    else:
        with_prompt = [r for r in rows if isinstance(r.get(sig.policy.prompt), str)]
        ref = policy.reference_field(with_prompt, ctx)
        replies = [r[ref] for r in with_prompt] if ref else []
    if not replies:
        return policy.new_tokens(limit, None)
    median = int(statistics.median(pc.token_lengths(tok, replies)))
    return max(1, min(median, pc.MAX_NEW_TOKENS, limit - 1))


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = DEFAULT_REQUESTS) -> dict[str, Any]:
    """Seconds per request of a DPO model or RLHF policy: one prompt of `split` (the signal's
    prompt field, with the separator training uses), tokenised, then a greedy generation of a fixed
    number of new tokens (`new_tokens` in the result: EOS does not end it early)."""
    import torch

    field = prompt_field(ctx)
    rows = ctx.parts[split].rows if split in ctx.parts else next(iter(ctx.parts.values())).rows
    prompts = [pc.with_sep(r[field]) for r in rows if r.get(field) is not None]
    if not prompts:
        raise ValueError(f"no `{field}` prompts in `{split}` to time")
    model, tok = artifacts.load_trained(ctx, model_dir)
    limit, _ = pc.limit_of(ctx, tok, model)
    new = latency_tokens(ctx, tok, rows, limit)
    budget = max(1, limit - new)
    if any(not isinstance(p, str) for p in prompts):
        text.ensure_chat_template(tok)
    prompts = [pc.fit_prompt(tok, p, budget) if isinstance(p, str) else p for p in prompts]
    dev = next(model.parameters()).device

    def request(i: int) -> None:
        p = prompts[i % len(prompts)]
        if isinstance(p, str):
            ids = tok(p, return_tensors="pt")["input_ids"]
        else:
            ids = torch.tensor([tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                        return_dict=True)["input_ids"][-budget:]])
        ids = ids.to(dev)
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)

    return time_requests(request, dev, warmup=warmup_of(ctx, warmup), n=n, request="generate", new_tokens=new,
                         model=model_name(model), field=field, split=split)
