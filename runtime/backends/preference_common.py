"""What the DPO, reward and policy trainers share: stage settings, preference rows, length limits,
callbacks, the training call, and log-likelihoods of completions (evaluation).

Text: a completion follows its prompt after PROMPT_SEP ("\\n"), in training and evaluation alike,
so that the reward model scores at policy time what it saw in training (TRL's online trainers
score `prompt + completion`). Chat-format rows (message lists) pass through unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s
from ftc.runtime import metrics
from ftc.runtime.api import TrainContext, TrainResult
from ftc.runtime.backends import artifacts, hf, text
from ftc.runtime.backends.loading import virtual_positions

if TYPE_CHECKING:
    from ftc.compiler.data.splits import Part
    from ftc.runtime.backends.artifacts import Fitted

PROMPT_SEP = "\n"
MAX_NEW_TOKENS = 64  # policy completions (training and evaluation) when nothing smaller is asked
RL_LOG_KEYS = ("reward", "reward_std", "kl", "entropy", "rewards/accuracies", "rewards/margins", "accuracy")


# ---------------------------------------------------------------------------------------------
# Settings and contexts


merged_train = s.merged_train  # a stage's `train` block over the spec's (compiler/schema.py)


def train_settings(ctx: TrainContext, stage: str | None = None) -> s.Train:
    node = getattr(ctx.spec.signal, stage) if stage else None
    return merged_train(ctx.spec.train, node.train if node is not None else None)


def stage_context(ctx: TrainContext, stage: str) -> TrainContext:
    """ctx for one RLHF stage: its merged `train` block, and run_dir/<stage> for checkpoints."""
    spec = dataclasses.replace(ctx.spec, train=train_settings(ctx, stage))
    checked = dataclasses.replace(ctx.checked, spec=spec)
    return dataclasses.replace(ctx, checked=checked, run_dir=ctx.run_dir / stage)


def rows_of(part: Part | None) -> list[dict[str, Any]]:
    return list(part.rows) if part is not None else []


def with_sep(prompt: Any) -> Any:
    if isinstance(prompt, str) and prompt and not prompt.endswith(PROMPT_SEP):
        return prompt + PROMPT_SEP
    return prompt


def preference_rows(rows: list[dict[str, Any]], prompt: str, chosen: str, rejected: str) -> list[dict[str, Any]]:
    """Rows in TRL's explicit-prompt preference format (rows missing a field are left out)."""
    return [{"prompt": with_sep(r[prompt]), "chosen": r[chosen], "rejected": r[rejected]} for r in rows
            if r.get(prompt) is not None and r.get(chosen) is not None and r.get(rejected) is not None]


def position_limit(model: Any) -> int | None:
    cfg = model.config
    n = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    return int(n) if n else None


def limit_of(ctx: TrainContext, tok: Any, model: Any, data: s.Data | None = None) -> tuple[int, str]:
    """(max tokens, truncate|drop): `data`'s max_length (else the spec's), never past the model's
    positions (less those that prompt or prefix tuning take)."""
    limit, policy = text.max_length(ctx, tok, model)
    if data is not None and data.max_length is not None:
        limit, policy = data.max_length.tokens, data.max_length.policy
    positions = position_limit(model)
    if positions is not None:
        limit = min(limit, positions - virtual_positions(ctx))
    return max(1, limit), policy


def fits(rows: list[dict[str, Any]], tok: Any, limit: int, policy: str, rec: hf.Recorder,
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


def callbacks(ctx: TrainContext, rec: hf.Recorder, evaluating: bool, split: str = "val") -> list[Any]:
    from ftc.runtime.backends.monitor import MonitorCallback, time_limit_callbacks
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

    out: list[Any] = [PreferenceMonitor(rec, split=split), *time_limit_callbacks(ctx.time_limit, rec)]
    es = hf.train_block(ctx).early_stopping
    if es is not None and evaluating:
        out.append(EarlyStoppingCallback(early_stopping_patience=es.patience, early_stopping_threshold=es.min_delta))
    return out


def best_metric(ctx: TrainContext, has_val: bool, accuracy: str, rec: hf.Recorder) -> dict[str, Any]:
    """Early stopping's metric as this trainer reports it: `loss`, or `accuracy` under the name
    the trainer logs it (DPO: rewards/accuracies); another metric falls back to the loss."""
    found = hf.early_stopping_metric(ctx) if has_val else None
    if found is None:
        return {}
    name = found[0]
    if name not in ("loss", "accuracy"):
        rec.note(f"early stopping on `{name}` is not measured while training this model; it watches the "
                 f"validation loss instead")
        name = "loss"
    metric = accuracy if name == "accuracy" else "loss"
    return {"metric_for_best_model": metric, "greater_is_better": name == "accuracy"}


def fit(ctx: TrainContext, trainer: Any, rec: hf.Recorder, model: Any, what: str) -> dict[str, Any]:
    """Train (resuming when asked); returns steps, stopped_early and the best checkpoint."""
    tr = hf.train_block(ctx)
    hf.quiet(trainer)
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    rec({"event": "start", "stage": what, "method": ctx.spec.method.kind, "precision": precision,
         "requested_precision": tr.precision, "max_steps": trainer.args.max_steps, "device": ctx.device,
         "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    trainer.train(resume_from_checkpoint=hf.resume_checkpoint(ctx, rec))
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
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while TRL maps the data: the executor reports progress."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def without_ref(model: Any) -> Any:
    """Delete the "ref" adapter TRL adds beside "default", so only the trained one is exported."""
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")
    return model


def end(rec: hf.Recorder, run: dict[str, Any], model_dir: Path) -> None:
    best = run["best_checkpoint"]
    rec({"event": "end", "step": run["steps"], "stopped_early": run["stopped_early"], "artifact": str(model_dir),
         "best_checkpoint": str(best) if best else None})


# ---------------------------------------------------------------------------------------------
# Evaluation helpers


def completion_logps(model: Any, tok: Any, prompts: list[str], completions: list[str], limit: int,
                     batch: int = 8) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each completion (+ EOS) after its prompt,
    tokenised as TRL does: the completion starts where prompt and prompt+completion diverge.
    Logits are read from the end, so the virtual tokens prompt tuning prepends do not shift them."""
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


def slice_metrics(ctx: TrainContext, rows: list[dict[str, Any]], kept: list[int],
                  compute: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    position = {row: i for i, row in enumerate(kept)}
    for slc in ctx.spec.data.slices if ctx.spec.data is not None else ():
        chosen = [position[r] for r in metrics.slice_indices(rows, slc.conditions) if r in position]
        out[slc.name] = {**compute(chosen), "n": float(len(chosen))} if chosen else {"n": 0.0}
    return out


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


def fit_prompt(tok: Any, prompt: str, budget: int) -> str:
    """A text prompt over `budget` tokens keeps its end (the question, and the separator)."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return str(tok.decode(ids[-budget:])) if len(ids) > budget else prompt


def token_lengths(tok: Any, texts: list[str]) -> list[int]:
    return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]


def greedy(model: Any, tok: Any, prompts: list[str], references: list[str], limit: int, batch: int) -> list[str]:
    """Greedy replies to `prompts`, long enough to reproduce the longest reference (+8 tokens),
    within `limit` positions (a prompt that does not fit keeps its end)."""
    new = max(1, min(max(token_lengths(tok, references), default=1) + 8, limit - 1))
    return generate(model, tok, [fit_prompt(tok, p, max(1, limit - new)) for p in prompts], new, batch)


DECODED = ("exact_match", "f1", "format_validity")  # metrics of a greedy reply against a reference


def declared(ctx: TrainContext) -> set[str]:
    return {m.name for m in ctx.spec.eval.metrics} if ctx.spec.eval is not None else set()


def wants_decoding(ctx: TrainContext) -> bool:
    return bool(declared(ctx) & set(DECODED))


def decoded_scores(ctx: TrainContext, predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example scores of the declared decoding metrics: exact_match (metrics.exact_match),
    f1 (metrics.token_f1) and format_validity (JSON, against `output_schema` when the model declares one)."""
    from ftc.runtime.backends.text_eval import output_schema

    wanted = declared(ctx)
    pairs = list(zip(predictions, references, strict=True))
    out: dict[str, list[float]] = {}
    if "exact_match" in wanted:
        out["exact_match"] = [float(metrics.exact_match(p, r)) for p, r in pairs]
    if "f1" in wanted:
        out["f1"] = [metrics.token_f1(p, r) for p, r in pairs]
    if "format_validity" in wanted:
        schema = output_schema(ctx)
        out["format_validity"] = [float(metrics.format_valid(p.strip(), schema)) for p, _ in pairs]
    return out


def mean_over(scores: dict[str, list[float]], idx: list[int]) -> dict[str, float]:
    return {name: sum(values[i] for i in idx) / len(idx) for name, values in scores.items()} if idx else {}


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def with_merged(ctx: TrainContext, fitted: Fitted) -> TrainResult:
    """The run's result, with LoRA also exported merged when `merge true` (the training model is
    freed first: the merge loads the base again)."""
    result = fitted.result
    del fitted
    rec = hf.Recorder(ctx)
    rec.history = result.history
    if result.kind == "adapter":
        result.merged_dir = artifacts.export_merged(ctx, result.model_dir, rec)
    return result
