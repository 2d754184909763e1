"""execute(plan, executor): walk the reviewed plan's nodes in order and run each one.

A dry run is the same walk with DryRunExecutor, which does no work (dbt's compile runner); the
LocalExecutor runs nodes on this machine through the backends, where torch and friends are imported.
Results of nodes whose hash did not change since an earlier run (the base model's evaluation) are
reused from the content-addressed cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ftc.compiler.plan import Plan, PlanNode
from ftc.runtime import gates as gate_eval
from ftc.runtime.api import EvalResult, TrainContext, TrainResult

Log = Callable[[dict[str, Any]], None]


@dataclass
class RunState:
    plan: Plan
    checked: Any  # CheckedSpec, with its data read
    run_dir: Path
    log: Log
    resume: bool = False
    max_steps: int | None = None
    device: str = "cpu"
    # "tuned:test" / "base:test" / "tuned:data/general.jsonl" -> EvalResult; "latency" (the final
    # model) and "base:latency" -> measure_latency's dict
    results: dict[str, Any] = field(default_factory=dict)
    train: dict[str, TrainResult] = field(default_factory=dict)  # node id -> result
    gates: list[gate_eval.GateResult] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)

    def context(self, stage_parts: dict[str, Any] | None = None) -> TrainContext:
        return TrainContext(self.checked, self.parts, self.run_dir, self.log, resume=self.resume,
                            device=self.device, stage_parts=stage_parts or {}, max_steps=self.max_steps)


class Executor(Protocol):
    name: str

    def run(self, node: PlanNode, state: RunState) -> None: ...


class DryRunExecutor:
    """Walks the plan and reports each step with its estimate; trains and evaluates nothing."""

    name = "dry-run"

    def run(self, node: PlanNode, state: RunState) -> None:
        state.log({"event": "node", "id": node.id, "kind": node.kind, "dry": True, "estimate": node.estimate})


def _modality_backend(spec: Any) -> Any:
    """The backend of a vision (timm) or multimodal (open_clip) model; None for text, whose
    backend depends on the signal. Each has train(ctx), evaluate(ctx, dir, split),
    evaluate_file(ctx, dir, dataset) and measure_latency(ctx, dir, split, warmup)."""
    modality = spec.model.modality if spec.model is not None else "text"
    if modality == "vision":
        from ftc.runtime.backends import vision
        return vision
    if modality == "multimodal":
        from ftc.runtime.backends import multimodal
        return multimodal
    return None


def _backend_train(kind: str, ctx: TrainContext, state: RunState) -> TrainResult:
    signal = ctx.spec.signal.kind
    other = _modality_backend(ctx.spec)
    if other is not None:
        trained: TrainResult = other.train(ctx)
        return trained
    if kind == "train_reward":
        from ftc.runtime.backends import preference
        return preference.train_reward(ctx)
    if kind == "train_policy":
        from ftc.runtime.backends import preference
        return preference.train_policy(ctx, state.train["train.reward"].model_dir)
    if signal == "sft":
        from ftc.runtime.backends import text
        return text.train_sft(ctx)
    if signal == "dpo":
        from ftc.runtime.backends import preference
        return preference.train_dpo(ctx)
    if signal == "contrastive":
        from ftc.runtime.backends import embedding
        return embedding.train_contrastive(ctx)
    raise NotImplementedError(f"signal {signal} has no runtime backend yet")


class LocalExecutor:
    """Runs every node on this machine."""

    name = "local"

    def run(self, node: PlanNode, state: RunState) -> None:
        handler = getattr(self, f"_{node.kind}", None)
        state.log({"event": "node", "id": node.id, "kind": node.kind})
        if handler is not None:
            handler(node, state)

    def _split(self, node: PlanNode, state: RunState) -> None:
        state.parts = dict(state.checked.data.parts)

    def _dedup(self, node: PlanNode, state: RunState) -> None:
        from ftc.runtime.dedup import dedup_part

        train = state.parts.get("train")
        if train is not None:
            kept, removed = dedup_part(state.checked, train, node.params["kind"], node.params.get("threshold"))
            state.parts["train"] = kept
            state.log({"event": "note", "message": f"dedup {node.params['kind']}: removed {removed} training row(s)"})

    def _train(self, node: PlanNode, state: RunState) -> None:
        stage = getattr(state.checked.data, "stages", {}).get("reward", {}) if node.kind == "train_reward" else {}
        state.train[node.id] = _backend_train(node.kind, state.context(stage), state)

    _train_reward = _train
    _train_policy = _train

    def _evaluate(self, node: PlanNode, state: RunState) -> None:
        who = node.params["model"]
        target = node.params.get("dataset") or node.params["split"]
        keyed = _cache_keyed(node, state) if who == "base" else node
        # a base evaluation that reads this run's reward model (RLHF's `reward`) is never reused:
        # `reward vs base` must compare two scores of one reward model, and a retrained one (another
        # GPU, another library) need not give the same scores as the one cached
        cacheable = who == "base" and "train.reward" not in node.inputs
        if cacheable:
            cached = _load_cached(keyed)
            if cached is not None:
                state.results[f"base:{target}"] = cached
                state.log({"event": "note", "message": f"{node.id}: reused from the cache ({keyed.hash[:10]})"})
                return
        model_dir = None if who == "base" else _final_model(state)
        result = _backend_evaluate(state, model_dir, node.params)
        state.results[f"{who}:{target}"] = result
        state.log({"event": "eval", "id": node.id, "split": target, "model": who, **result.metrics})
        if cacheable:
            _store_cached(keyed, result)

    def _latency(self, node: PlanNode, state: RunState) -> None:
        """Latency before (the base, "base:latency") and after (the final model, "latency"),
        each after the spec's warm-up, on the same requests."""
        ctx = state.context()
        split, warmup = node.params.get("split", "test"), node.params["warmup"]
        for who, key, model_dir in (("base", "base:latency", None), ("tuned", "latency", _final_model(state))):
            state.results[key] = _backend_latency(ctx, model_dir, split, warmup)
            state.log({"event": "latency", "id": f"{node.id}.{who}", "model": who, **state.results[key]})

    def _gates(self, node: PlanNode, state: RunState) -> None:
        state.gates = gate_eval.evaluate(node.params["gates"], state.results)


def _final_model(state: RunState) -> Path:
    final = state.train.get("train.policy") or state.train.get("train")
    if final is None:
        raise RuntimeError("no trained model to evaluate")
    return final.model_dir


def _backend(spec: Any) -> Any:
    """The backend module that evaluates and times the model a spec trains: the vision or
    multimodal backend by modality; for text by signal, the encoder of `contrastive`, the causal
    LM of `dpo` and `rlhf`, the text model (classifier or generator) of `sft`. Each has
    evaluate(ctx, dir, split), evaluate_file(ctx, dir, dataset) and measure_latency(ctx, dir,
    split, warmup)."""
    other = _modality_backend(spec)
    if other is not None:
        return other
    signal = spec.signal.kind
    if signal == "contrastive":
        from ftc.runtime.backends import embedding
        return embedding
    if signal in ("dpo", "rlhf"):
        from ftc.runtime.backends import preference
        return preference
    if signal == "sft":
        from ftc.runtime.backends import text
        return text
    raise NotImplementedError(f"signal {signal} has no runtime backend yet")


def _backend_evaluate(state: RunState, model_dir: Path | None, params: dict[str, Any]) -> EvalResult:
    """A split of the spec's data, or a data file named by a gate (`on "data/general.jsonl"`:
    regression against a general set), evaluated by the backend of the spec's signal."""
    backend = _backend(state.checked.spec)
    ctx = state.context()
    if params.get("dataset"):
        result: EvalResult = backend.evaluate_file(ctx, model_dir, params["dataset"])  # beside the gate's file
    else:
        result = backend.evaluate(ctx, model_dir, params["split"])
    return result


def _backend_latency(ctx: TrainContext, model_dir: Path | None, split: str, warmup: int) -> dict[str, Any]:
    measured: dict[str, Any] = _backend(ctx.spec).measure_latency(ctx, model_dir, split, warmup=warmup)
    return measured


def _cache_keyed(node: PlanNode, state: RunState) -> PlanNode:
    """The node with the hash its cached result is filed under: the plan node's own hash, plus
    what the evaluation also reads that the node does not cover. Every evaluation node carries the
    signal, `fields` and slice rules (a plan written by an earlier ftc may not: they are added to
    the key then); a regression set's node also carries the file's sha256 (its hash alone keys it,
    unless the file's bytes changed since the plan was made)."""
    from ftc.compiler import schema as s
    from ftc.compiler.plan import eval_reads

    extra: list[Any] = []
    if "signal" not in node.params:
        extra.append(eval_reads(s.complete(state.checked.spec)))
    dataset = node.params.get("dataset")
    if dataset:
        from ftc.compiler.plan import content_sha256

        # `path`: where a gate inherited through `extends` names it, from the spec's folder (as the plan hashed it)
        digest = content_sha256(Path(state.checked.resolve_path(node.params.get("path") or dataset)))
        if "sha256" not in node.params or digest != node.params["sha256"]:
            extra.append(digest)
    if not extra:
        return node
    digest = hashlib.sha256(json.dumps([node.hash, extra], sort_keys=True, default=str).encode()).hexdigest()
    return dataclasses.replace(node, hash=digest)


def _cache_path(node: PlanNode) -> Path | None:
    from ftc.compiler.data.cache import cache_dir

    root = cache_dir()
    return root / "nodes" / f"{node.hash}.json" if root else None


def _load_cached(node: PlanNode) -> EvalResult | None:
    path = _cache_path(node)
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return EvalResult(doc["split"], doc["metrics"], doc.get("slices", {}), doc.get("n", 0), doc.get("extra", {}))
    except (OSError, ValueError, KeyError):
        return None


def _store_cached(node: PlanNode, result: EvalResult) -> None:
    from ftc.compiler.data.cache import _atomic_write

    path = _cache_path(node)
    if path is not None:
        _atomic_write(path, json.dumps({"split": result.split, "metrics": result.metrics, "slices": result.slices,
                                        "n": result.n, "extra": result.extra}, sort_keys=True, default=str))


def sha256_tree(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def execute(plan: Plan, state: RunState, executor: Executor) -> RunState:
    started = time.monotonic()
    for node in plan.topological():
        executor.run(node, state)
    state.log({"event": "done", "seconds": round(time.monotonic() - started, 2)})
    return state
