"""Training behaviour: early stopping, checkpoint retention and atomicity, resume equivalence,
merged export, precision fallback, monitoring events, divergence warning, argument mapping."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ftc.runtime import checkpoints
from ftc.runtime.backends import artifacts
from ftc.runtime.backends import hf
from ftc.runtime.backends import loading
from ftc.runtime.backends import text_eval
from ftc.runtime.backends import text
from ftc.runtime.backends.monitor import MonitorCallback

from tests.runtime.conftest import MakeCtx

FAST = "learning_rate 1e-3; batch_size 8; precision fp32; seed 5"


def _steps(folder: Path) -> list[int]:
    return [checkpoints.step_of(p) or 0 for p in checkpoints.complete_checkpoints(folder)]


def _adapter_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_early_stopping_stops_and_keeps_the_best(make_ctx: MakeCtx) -> None:
    # min_delta 10: no evaluation can improve enough, so patience 1 stops at the second evaluation.
    ctx = make_ctx(train=f"steps 12; {FAST}; checkpoints keep 1 every 2 steps; "
                         "early_stopping patience 1 on val.loss min_delta 10")
    result = text.train_sft(ctx)
    assert result.stopped_early and result.steps == 4
    assert [e["step"] for e in ctx.events.of("eval")] == [2, 4]
    assert result.best_checkpoint is not None and result.best_checkpoint.name == "checkpoint-2"
    assert _steps(ctx.run_dir / "checkpoints") == [2]  # keep 1: only the best survives at the end
    assert any("early stopping at step 4" in e["message"] for e in ctx.events.of("note"))


def test_early_stopping_on_a_declared_metric(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train=f"steps 4; {FAST}; checkpoints keep 2 every 2 steps; early_stopping patience 3 on val.f1",
                   eval_="metric f1 weighted; gate f1 >= 0.1 on test")
    args = hf.training_arguments(ctx, 120)
    assert args.metric_for_best_model == "f1.weighted" and args.greater_is_better and args.load_best_model_at_end
    result = text.train_sft(ctx)
    assert not result.stopped_early and result.steps == 4
    assert all("f1.weighted" in e for e in ctx.events.of("eval"))


def test_checkpoint_retention_keeps_n(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train=f"steps 6; {FAST}; checkpoints keep 2 every 1 steps")
    text.fit_sft(ctx)
    folder = ctx.run_dir / "checkpoints"
    assert _steps(folder) == [5, 6]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["checkpoint-5", "checkpoint-6"]
    state = json.loads((folder / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    files = {p.name for p in (folder / "checkpoint-6").iterdir()}
    assert {"optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_state.safetensors", "rng_state.json",
            "training_args.json", "adapter_model.safetensors", checkpoints.COMPLETE} <= files
    assert not [p for p in ctx.run_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # no pickles


def test_checkpoint_that_fails_midway_never_appears(make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = checkpoints.rng_files

    def flaky() -> Any:  # the RNG state is written after the weights and the optimizer
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real()

    monkeypatch.setattr(checkpoints, "rng_files", flaky)
    ctx = make_ctx(train=f"steps 4; {FAST}; checkpoints keep 5 every 1 steps")
    with pytest.raises(OSError, match="disk full"):
        text.fit_sft(ctx)
    folder = ctx.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1"]
    assert (folder / checkpoints.STAGING / "checkpoint-2").is_dir()  # the half-written one, out of sight
    monkeypatch.setattr(checkpoints, "rng_files", real)
    resumed = make_ctx(train=f"steps 4; {FAST}; checkpoints keep 5 every 1 steps", run_dir=ctx.run_dir, resume=True)
    result = text.fit_sft(resumed).result
    assert result.steps == 4 and not (folder / checkpoints.STAGING).exists()
    assert any(e.get("message") == "resuming from checkpoint-1" for e in resumed.events.of("note"))


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_resume_ends_with_the_same_weights(make_ctx: MakeCtx, tmp_path: Path, task: str) -> None:
    """An uninterrupted run and a run interrupted after step 5 (checkpoint 4) then resumed end
    bit-identical: the RNG, optimizer, scheduler and data order all come back."""
    method = "lora { rank 4; alpha 8; dropout 0.1 }"
    train = f"steps 6; {FAST}; schedule cosine; warmup 0.2; checkpoints keep 3 every 2 steps"
    straight = make_ctx(task, method, train=train, folder=tmp_path / "a")
    a = text.fit_sft(straight).result

    broken = make_ctx(task, method, train=train, folder=tmp_path / "b")

    def stop_at_5(event: dict[str, Any]) -> None:
        broken.events.append(event)
        if event.get("event") == "step" and event["step"] == 5:
            raise Interrupt

    broken.log = stop_at_5
    with pytest.raises(Interrupt):
        text.fit_sft(broken)
    assert _steps(broken.run_dir / "checkpoints") == [2, 4]
    assert not (broken.run_dir / "artifacts").exists()

    resumed = make_ctx(task, method, train=train, folder=tmp_path / "b", run_dir=broken.run_dir, resume=True)
    b = text.fit_sft(resumed).result
    assert [e["step"] for e in resumed.events.of("step")] == [5, 6]
    ta, tb = _adapter_tensors(a.model_dir), _adapter_tensors(b.model_dir)
    assert ta.keys() == tb.keys() and ta
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    assert [e["loss"] for e in straight.events.of("step")][-1] == resumed.events.of("step")[-1]["loss"]
    assert not [p for p in broken.run_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_fresh_run_clears_old_checkpoints(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train=f"steps 2; {FAST}; checkpoints keep 5 every 1 steps")
    stale = ctx.run_dir / "checkpoints" / "checkpoint-40"
    stale.mkdir(parents=True)
    (stale / checkpoints.COMPLETE).write_text("{}")
    text.fit_sft(ctx)
    assert _steps(ctx.run_dir / "checkpoints") == [1, 2]


def test_merged_model_loads_with_plain_transformers(make_ctx: MakeCtx) -> None:
    from transformers import AutoModelForSequenceClassification

    ctx = make_ctx(method='lora { rank 4; alpha 8; targets ["query", "value"]; merge true }',
                   train=f"steps 2; {FAST}")
    result = text.train_sft(ctx)
    assert result.merged_dir == ctx.run_dir / "artifacts" / "merged"
    assert not [p for p in result.merged_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
    merged = AutoModelForSequenceClassification.from_pretrained(str(result.merged_dir)).eval()
    assert merged.config.id2label == {0: "billing", 1: "bug", 2: "account"}
    adapter, tok = artifacts.load_trained(ctx, result.model_dir)
    batch = dict(tok([r["text"] for r in ctx.parts["test"].rows[:4]], padding=True, return_tensors="pt"))
    with torch.inference_mode():
        assert torch.allclose(merged(**batch).logits, adapter(**batch).logits, atol=1e-5)
    assert not any(n for n, _ in merged.named_parameters() if "lora" in n)


def test_merge_is_skipped_for_qlora(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(method="qlora { rank 4; merge true; compute_dtype fp32 }", train=f"steps 1; {FAST}")
    result = text.train_sft(ctx)
    assert result.merged_dir is None
    assert any("merge true" in e["message"] for e in ctx.events.of("note"))


def test_precision_falls_back_to_fp32_on_cpu_and_says_so(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train="steps 1; learning_rate 1e-3; batch_size 8; precision bf16")
    result = text.fit_sft(ctx).result
    start = ctx.events.of("start")[0]
    assert start["precision"] == "fp32" and start["requested_precision"] == "bf16"
    notes = [e for e in ctx.events.of("note") if e.get("precision") == "fp32"]
    assert notes and notes[0]["requested_precision"] == "bf16"
    assert result.history[-1]["precision"] == "fp32"


def test_step_and_eval_events(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train=f"steps 2; {FAST}; checkpoints keep 1 every 2 steps")
    text.fit_sft(ctx)
    steps = ctx.events.of("step")
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        assert e["loss"] > 0 and e["lr"] > 0 and e["grad_norm"] >= 0
        assert e["samples_per_s"] > 0 and e["tokens_per_s"] > 0 and e["rss_mb"] > 10
        assert "gpu_mb" not in e
    (ev,) = ctx.events.of("eval")
    assert ev["split"] == "val" and ev["step"] == 2 and "loss" in ev and "f1.macro" in ev and "runtime" not in ev


def test_max_steps_caps_an_epoch_run(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train=f"epochs 3; {FAST}", max_steps=2)
    assert text.fit_sft(ctx).result.steps == 2


def test_chat_messages_train_and_evaluate(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("generation", "lora { rank 4 }", signal='messages "messages"', train=f"steps 2; {FAST}")
    result = text.train_sft(ctx)
    assert any("chat template" in e["message"] for e in ctx.events.of("note"))
    ev = text_eval.evaluate(ctx, result.model_dir, "test")
    assert ev.n == 30 and ev.metrics["loss"] > 0 and 0 <= ev.metrics["exact_match"] <= 1


def test_training_arguments_follow_the_spec(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(train="epochs 2; learning_rate 3e-4; schedule cosine; warmup 0.1; batch_size 4; grad_accum 2; "
                         "weight_decay 0.01; max_grad_norm 0.5; optimizer paged_adamw_8bit; seed 9; precision fp32; "
                         "checkpoints keep 3")
    args = hf.training_arguments(ctx, 100)
    assert (args.num_train_epochs, args.max_steps, args.learning_rate) == (2, -1, 3e-4)
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.1
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert (args.weight_decay, args.max_grad_norm, args.seed, args.save_total_limit) == (0.01, 0.5, 9, 3)
    assert args.optim.value == "adamw_torch"  # paged 8-bit AdamW needs CUDA
    assert args.save_strategy.value == "epoch" and args.eval_strategy.value == "epoch"
    assert not args.load_best_model_at_end
    capped = make_ctx(train="steps 50; warmup 0.1; precision fp32", max_steps=10)
    args = hf.training_arguments(capped, 100)
    assert args.max_steps == 10 and args.warmup_steps == 1


def test_hub_ids_are_refused(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    hub = SimpleNamespace(checked=ctx.checked, spec=SimpleNamespace(model=SimpleNamespace(base="hf:org/model")))
    with pytest.raises(ValueError, match="does not download at run time"):
        loading.base_dir(hub)  # type: ignore[arg-type]


def _fake_state(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, epoch=step / 10, num_input_tokens_seen=0)


def test_divergence_warning_after_two_rising_evaluations() -> None:
    events: list[dict[str, Any]] = []
    cb = MonitorCallback(events.append)
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1, world_size=1)
    train = iter([2.0, 1.5, 1.0, 0.5, 0.3])
    for step, val in ((1, 1.0), (2, 0.9), (3, 1.1), (4, 1.3), (5, 1.2)):
        cb.on_log(args, _fake_state(step), None, logs={"loss": next(train), "learning_rate": 1e-3, "grad_norm": 1.0})
        cb.on_log(args, _fake_state(step), None, logs={"eval_loss": val, "eval_runtime": 0.1})
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["kind"] == "divergence" and warnings[0]["step"] == 4
    assert [e["event"] for e in events].count("eval") == 5


@pytest.mark.parametrize(("task", "method"), [("classification", "prompt_tuning { virtual_tokens 4 }"),
                                              ("generation", "adapters { bottleneck 4 }")])
def test_gradient_checkpointing_still_trains(make_ctx: MakeCtx, task: str, method: str) -> None:
    ctx = make_ctx(task, method, train=f"steps 2; {FAST}; gradient_checkpointing true")
    run = text.fit_sft(ctx)
    assert run.trainer.args.activation_checkpointing  # transformers 5's name for it
    assert all(e["grad_norm"] > 0 for e in ctx.events.of("step"))


def test_generation_early_stopping_watches_the_loss(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("generation", "lora { rank 4 }",
                   train=f"steps 2; {FAST}; checkpoints keep 1 every 1 steps; early_stopping patience 1 on val.perplexity",
                   eval_="metric perplexity; metric exact_match; gate exact_match >= 0.0 on test")
    assert text.fit_sft(ctx).trainer.args.metric_for_best_model == "loss"
    bad = make_ctx("generation", "lora { rank 4 }",
                   train=f"steps 2; {FAST}; early_stopping patience 1 on val.exact_match",
                   eval_="metric exact_match; gate exact_match >= 0.0 on test")
    with pytest.raises(ValueError, match="use `early_stopping ... on val.loss`"):
        text.fit_sft(bad)


@pytest.mark.parametrize(("method", "room"), [("prompt_tuning { virtual_tokens 6 }", 6),
                                              ("prefix_tuning { prefix_length 5 }", 5), ("lora { rank 4 }", 0)])
def test_length_limit_leaves_room_for_virtual_tokens(make_ctx: MakeCtx, method: str, room: int) -> None:
    """Prompt and prefix tuning put positions before the text; the derived limit leaves them room,
    or a full-length text would index past the position embeddings."""
    ctx = make_ctx("generation", method, rows=(100, 20, 20))
    model, tok = loading.load_base(ctx)
    limit = model.config.n_positions
    assert text.max_length(ctx, tok, model) == (min(limit, 1024) - room, "truncate")
