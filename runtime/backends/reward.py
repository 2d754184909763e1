"""RLHF stage 1: a reward model (the base with a 1-output sequence-classification head) trained on
preference pairs with TRL's RewardTrainer, with any text method; and scoring with it.

The artifact, run_dir/artifacts/reward, with ftc_artifact.json (kind "reward", how to load it):
    full, lora       a full AutoModelForSequenceClassification folder (LoRA merged into it)
    qlora            the peft adapter (and head) over the 4-bit base: merging into a quantised
                     base would round the update away; `quantization` in ftc_artifact.json holds
                     the BitsAndBytesConfig to load the base with
    prompt_tuning,   the peft adapter (and head) over the base
    prefix_tuning
    adapters         ftc bottleneck adapters (and head): bottleneck.load_adapters(base, folder)
A reward is logits[:, 0] of `prompt + PROMPT_SEP + completion`, truncated to `max_length`.

Prompt tuning feeds the model embeddings, not ids, so a decoder's classification head cannot find
the last real token and reads the last position (transformers warns about it). ftc therefore pads
every text of a prompt-tuned reward model to exactly `max_length` tokens, in training and scoring
(`pad_to_max_length` in ftc_artifact.json): the score is read at the same place whatever else is
in the batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.runtime.api import TrainContext, TrainResult
from ftc.runtime.backends import bottleneck, hf, loading, text
from ftc.runtime.backends import preference_common as pc
from ftc.runtime.backends.artifacts import Fitted, publish, staging


def reward_dir(ctx: TrainContext) -> Path:
    return ctx.run_dir / "artifacts" / "reward"


def is_reward_folder(folder: Path) -> bool:
    return (folder / "ftc_artifact.json").is_file()


def reward_parts(ctx: TrainContext) -> dict[str, Any]:
    if ctx.stage_parts:
        return ctx.stage_parts
    stages = getattr(ctx.checked.data, "stages", None) or {}
    return stages.get("reward") or ctx.parts


# ---------------------------------------------------------------------------------------------
# Scoring


def score(model: Any, tok: Any, texts: list[str], batch: int = 16, *, max_length: int | None = None,
          pad_to_max_length: bool = False) -> list[float]:
    """Reward-model scores of whole texts (prompt + PROMPT_SEP + completion)."""
    import torch

    out: list[float] = []
    limit = max_length or pc.position_limit(model)
    padding: bool | str = "max_length" if pad_to_max_length and limit else True
    dev = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=padding, padding_side="right",
                      truncation=limit is not None, max_length=limit, add_special_tokens=False)
            out.extend(model(**{k: v.to(dev) for k, v in enc.items()}).logits[:, 0].float().tolist())
    return out


@dataclass
class RewardModel:
    """A loaded reward model; called by TRL's online trainers as a reward function."""

    model: Any
    tok: Any
    max_length: int | None = None
    pad_to_max_length: bool = False
    __name__ = "reward_model"  # TRL logs a reward function's scores under its name

    def score(self, texts: list[str], batch: int = 16) -> list[float]:
        return score(self.model, self.tok, texts, batch, max_length=self.max_length,
                     pad_to_max_length=self.pad_to_max_length)

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [p + c if isinstance(p, str) else self.tok.apply_chat_template(p + c, tokenize=False)
                 for p, c in zip(prompts, completions, strict=True)]
        return self.score(texts)


def _base_classifier(path: Path, trust: bool, quantization: Any, device: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"num_labels": 1, "trust_remote_code": trust}
    if quantization is not None:
        kwargs.update(quantization_config=quantization,
                      device_map={"": 0} if device.startswith("cuda") else {"": "cpu"})
    return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)


def load_reward_model(model_dir: Path, device: str = "cpu") -> RewardModel:
    """Any reward artifact of `train_reward` (see the module docstring), in eval mode on `device`."""
    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    info_path = model_dir / "ftc_artifact.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    trust = bool(info.get("trust_remote_code", False))
    tok = loading.load_tokenizer(model_dir, trust)
    saved = info.get("quantization")
    q = BitsAndBytesConfig.from_dict(saved) if saved else None  # type: ignore[no-untyped-call]
    model: Any
    if (model_dir / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(_base_classifier(Path(info["base_model"]), trust, q, device), str(model_dir))
    elif bottleneck.is_adapter_folder(model_dir):
        model = bottleneck.load_adapters(_base_classifier(Path(info["base_model"]), trust, q, device), model_dir)
    else:
        model = _base_classifier(model_dir, trust, None, device)
    model.config.pad_token_id = tok.pad_token_id
    if q is None:
        model.to(device)
    return RewardModel(model.eval(), tok, info.get("max_length"), bool(info.get("pad_to_max_length", False)))


def reward_accuracy(ctx: TrainContext, model_dir: Path, split: str) -> float:
    """Share of the reward stage's `split` pairs where the chosen answer scores higher (NaN when
    the split has no text pairs)."""
    return reward_accuracy_rows(ctx, model_dir, pc.rows_of(reward_parts(ctx).get(split)))


def reward_accuracy_rows(ctx: TrainContext, model_dir: Path, rows: list[dict[str, Any]]) -> float:
    """Share of the rows' pairs (the reward stage's prompt/chosen/rejected fields) where the
    chosen answer scores higher; NaN when they hold no text pair."""
    stage = ctx.spec.signal.reward
    rows = pc.preference_rows(rows, stage.prompt, stage.chosen, stage.rejected)
    rows = [r for r in rows if isinstance(r["prompt"], str)]
    if not rows:
        return math.nan
    reward = load_reward_model(model_dir, hf.device_of(ctx))
    chosen = reward.score([r["prompt"] + r["chosen"] for r in rows])
    rejected = reward.score([r["prompt"] + r["rejected"] for r in rows])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)


# ---------------------------------------------------------------------------------------------
# Training


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


def _pairs_dataset(ctx: TrainContext, rows: list[dict[str, Any]], tok: Any, limit: int, policy: str,
                   rec: hf.Recorder, split: str) -> Any:
    """Text pairs as TRL's processed columns (`chosen_ids`, `rejected_ids`: RewardTrainer then
    skips its own tokenising), pairs over the limit left out first when the policy says so; or
    the same dataset from the tokenised-data cache (tokcache.py) when nothing it depends on changed."""
    from datasets import Dataset
    from ftc.runtime.backends import tokcache

    built = False

    def make_key() -> str:
        return tokcache.key("reward", tokcache.tokenizer_fingerprint(tok, loading.base_dir(ctx)),
                            tokcache.content_digest(rows), {"max_length": limit, "policy": policy})

    def build() -> tuple[Any, dict[str, Any]]:
        nonlocal built
        built = True
        kept = pc.fits(rows, tok, limit, policy, rec, f"reward {split}")  # says what it dropped
        return Dataset.from_list(_tokenized_pairs(kept, tok, limit)), {"dropped": len(rows) - len(kept)}

    ds, meta = tokcache.reuse(make_key, build, f"reward {split}", rec)
    if not built and meta.get("dropped"):
        rec.note(f"dropped {meta['dropped']} reward {split} pair(s) over {limit} tokens")
    return ds


def _load_reward_base(ctx: TrainContext) -> tuple[Any, Any, Any]:
    """(model, tokenizer, BitsAndBytesConfig or None): the base with a 1-output head."""
    path = loading.base_dir(ctx)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = loading.load_tokenizer(path, trust)
    q = loading.quantization_config(ctx, None, "classification")
    model = _base_classifier(path, trust, q, hf.device_of(ctx))
    model.config.pad_token_id = tok.pad_token_id
    return model, tok, q


def _publish_reward(ctx: TrainContext, model: Any, tok: Any, info: dict[str, Any]) -> Path:
    from peft import PeftModel

    final = reward_dir(ctx)
    tmp = staging(final)
    base = str(loading.base_dir(ctx))
    if isinstance(model, PeftModel):
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base
        model.save_pretrained(str(tmp), safe_serialization=True)
        load = "PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1"
        load += ", quantization_config=BitsAndBytesConfig.from_dict(quantization)" if info.get("quantization") else ""
        load += "), this_folder)"
    elif getattr(model, "ftc_adapters", None) is not None:
        bottleneck.save_adapters(model, tmp, base)
        load = "ftc.runtime.backends.bottleneck.load_adapters(AutoModelForSequenceClassification.from_pretrained(" \
               "base_model, num_labels=1), this_folder)"
    else:
        model.config.pad_token_id = tok.pad_token_id
        model.save_pretrained(str(tmp), safe_serialization=True)
        load = "AutoModelForSequenceClassification.from_pretrained(this_folder)"
    tok.save_pretrained(str(tmp))
    info = {"format": "ftc-artifact", "version": 1, "kind": "reward", "method": ctx.spec.method.kind,
            "task": "reward", "base_model": base, "prompt_separator": pc.PROMPT_SEP, **info,
            "trust_remote_code": bool(ctx.spec.model.trust_remote_code), "load": load + "  # logits[:, 0] = reward"}
    (tmp / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return publish(tmp, final)


@pc.quiet_datasets()
def fit_reward(ctx: TrainContext) -> Fitted:
    """Stage 1 with the spec's method; keeps the trained reward model in memory."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    stage = ctx.spec.signal.reward
    sctx = pc.stage_context(ctx, "reward")
    rec = hf.Recorder(ctx)
    loading.set_seed(hf.train_block(sctx).seed)
    model, tok, quantization = _load_reward_base(sctx)
    model = text.attach_method(model, sctx, for_task="classification")
    parts = reward_parts(ctx)
    limit, policy = pc.limit_of(sctx, tok, model, stage.data)
    fixed = ctx.spec.method.kind == "prompt_tuning"  # see the module docstring

    def data(split: str) -> Any:
        rows = pc.preference_rows(pc.rows_of(parts.get(split)), stage.prompt, stage.chosen, stage.rejected)
        if not rows or any(not isinstance(r["prompt"], str) for r in rows):  # chat pairs: TRL tokenises them
            return Dataset.from_list(pc.fits(rows, tok, limit, policy, rec, f"reward {split}"))
        return _pairs_dataset(sctx, rows, tok, limit, policy, rec, split)

    train_rows, val_rows = data("train"), data("val")
    if not len(train_rows):
        raise ValueError("no preference pairs to train the reward model on")
    has_val = len(val_rows) > 0
    args = hf.training_arguments(sctx, len(train_rows), config_cls=RewardConfig, emit=rec, has_val=has_val,
                                   max_length=None, include_num_input_tokens_seen="no",  # pairs: no input_ids
                                   pad_to_multiple_of=limit if fixed else None,
                                   **pc.best_metric(sctx, has_val, "accuracy", rec))
    trainer = hf.make_trainer_class(RewardTrainer)(
        model=model, args=args, processing_class=tok, train_dataset=train_rows,
        eval_dataset=val_rows if has_val else None, callbacks=pc.callbacks(sctx, rec, has_val, split="reward.val"))
    if quantization is not None:
        # TRL casts every trainable parameter of a quantised model to bf16 (QLoRA's adapters); the
        # head is a plain Linear fed fp32 hidden states, so it stays fp32
        for name, p in trainer.model.named_parameters():
            if p.requires_grad and "modules_to_save" in name:
                p.data = p.data.float()
    run = pc.fit(sctx, trainer, rec, model, "reward")
    trained = trainer.model.eval()
    if ctx.spec.method.kind == "lora" and quantization is None:
        trained = trained.merge_and_unload()  # a plain classifier folder, what TRL and users load directly
    info = {"max_length": limit, "pad_to_max_length": fixed,
            "quantization": quantization.to_dict() if quantization is not None else None}
    out = _publish_reward(ctx, trained, tok, info)
    pc.end(rec, run, out)
    scorer = RewardModel(trained, tok, limit, fixed)
    return Fitted(TrainResult(out, "reward", history=rec.history, **run), scorer, tok, rec.history)


def train_reward(ctx: TrainContext) -> TrainResult:
    """Stage 1: a reward model (the base with a 1-output head) on the reward stage's pairs."""
    return fit_reward(ctx).result
