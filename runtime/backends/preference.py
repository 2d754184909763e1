"""Preference backends on TRL 1.16: DPO, and RLHF (a reward model, then RLOO or GRPO driven by it).

    train_dpo(ctx)                    DPOTrainer on prompt/chosen/rejected -> adapter or full model   dpo.py
    train_reward(ctx)                 RewardTrainer, a 1-output sequence classifier -> "reward"      reward.py
    train_policy(ctx, reward_dir)     RLOOTrainer or GRPOTrainer scored by that reward model          policy.py
    reward_accuracy(ctx, dir, split)  share of the reward stage's pairs where chosen scores higher    reward.py
    evaluate(ctx, model_dir, split)   EvalResult for a DPO model or an RLHF policy (None = the base)
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

from pathlib import Path

from ftc.runtime.api import EvalResult, TrainContext
from ftc.runtime.backends import dpo, policy
from ftc.runtime.backends.dpo import fit_dpo, train_dpo
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
    "fit_dpo",
    "fit_policy",
    "fit_reward",
    "load_reward_model",
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
