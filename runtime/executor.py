"""execute(plan, executor): walk the reviewed plan's nodes in order and run each one.

A dry run is the same walk with DryRunExecutor, which does no work (dbt's compile runner); the
LocalExecutor runs nodes on this machine through the backends, where torch and friends are imported.
Results of nodes whose hash did not change since an earlier run (the base model's evaluation) are
reused from the content-addressed cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ftc import __version__
from ftc.compiler import capabilities as cap
from ftc.compiler.plan import NODE_KINDS, Plan, PlanNode
from ftc.runtime import gates as gate_eval
from ftc.runtime.api import EvalResult, TimeLimit, TrainContext, TrainResult

Log = Callable[[dict[str, Any]], None]


class PlanError(Exception):
    """A plan the executor cannot run as written: a node kind it has no step for, or a step the
    spec's backend does not have. (A plan file that is not well formed never gets here:
    compiler/planfile.py refuses it with a located diagnostic.)"""


class DriftError(Exception):
    """What a step reads differs from what the plan was made from (the data or the base model's
    files changed after `ftc plan`)."""


@dataclass
class RunState:
    plan: Plan
    checked: Any  # CheckedSpec; its rows are read by the plan's read_data step
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
    stage_parts: dict[str, Any] = field(default_factory=dict)  # RLHF reward stage's own splits
    base_dir: Path | None = None  # the base model's folder, located and verified by load_base
    # the register step's work (runtime/run.py: store the artifact, write the registry record)
    registrar: Callable[[RunState], None] | None = None
    time_limit: TimeLimit | None = None  # `budget { max_time }`, counted from the run's start

    def context(self, stage_parts: dict[str, Any] | None = None) -> TrainContext:
        return TrainContext(self.checked, self.parts, self.run_dir, self.log, resume=self.resume,
                            device=self.device, stage_parts=stage_parts or {}, max_steps=self.max_steps,
                            base_dir=self.base_dir, time_limit=self.time_limit)


class Executor(Protocol):
    name: str

    def run(self, node: PlanNode, state: RunState) -> None: ...


def _require_kind(node: PlanNode) -> None:
    if node.kind not in NODE_KINDS:
        raise PlanError(f"plan node `{node.id}` has kind `{node.kind}`, which ftc {__version__} has no step for "
                        f"(kinds: {', '.join(NODE_KINDS)}): make the plan again with `ftc plan`")


class DryRunExecutor:
    """Walks the plan and reports each step with its estimate; trains and evaluates nothing."""

    name = "dry-run"

    def run(self, node: PlanNode, state: RunState) -> None:
        _require_kind(node)
        state.log({"event": "node", "id": node.id, "kind": node.kind, "dry": True, "estimate": node.estimate})


def backend_module(spec: Any) -> tuple[cap.Backend, Any]:
    """The spec's runtime backend (compiler/capabilities.py, by modality and signal) and its module."""
    modality = spec.model.modality if spec.model is not None else "text"
    backend = cap.backend_for(modality, spec.signal.kind)
    if backend is None:
        raise PlanError(f"no runtime backend trains a {modality} model with `signal {spec.signal.kind}`")
    return backend, importlib.import_module(backend.module)


def backend_step(spec: Any, kind: str) -> Callable[..., Any]:
    """The function of the spec's backend that does a step of this kind (capabilities' table)."""
    backend, _ = backend_module(spec)
    name = backend.step(kind)
    if name is None:
        raise PlanError(f"the `{backend.name}` backend has no `{kind}` step")
    fn: Callable[..., Any] = getattr(importlib.import_module(backend.module_of(kind)), name)
    return fn


class LocalExecutor:
    """Runs every node on this machine: one method per node kind (NODE_KINDS), no other."""

    name = "local"

    def run(self, node: PlanNode, state: RunState) -> None:
        _require_kind(node)
        state.log({"event": "node", "id": node.id, "kind": node.kind})
        getattr(self, f"_{node.kind}")(node, state)

    def _read_data(self, node: PlanNode, state: RunState) -> None:
        """Read the spec's data files (a check restored from the cache kept only sizes and hashes)."""
        from ftc.compiler.check import with_rows

        state.checked = with_rows(state.checked)

    def _validate(self, node: PlanNode, state: RunState) -> None:
        """The rows read are the rows the plan was made from (content hash per split)."""
        expected: dict[str, str] = node.params.get("hashes") or {}
        actual = dict(getattr(state.checked.data, "hashes", {}) or {})
        changed = sorted(name for name, digest in expected.items() if actual.get(name) != digest)
        if changed:
            raise DriftError(f"the {', '.join(changed)} data changed since the plan was made: run `ftc plan` "
                             "(or `ftc run SPEC`) again")

    def _split(self, node: PlanNode, state: RunState) -> None:
        data = state.checked.data
        state.parts = dict(data.parts)
        state.stage_parts = dict((getattr(data, "stages", {}) or {}).get("reward", {}))

    def _dedup(self, node: PlanNode, state: RunState) -> None:
        from ftc.compiler.data.dedup import dedup_part

        for key, parts, stage, what in (("train", state.parts, None, "training"),
                                        ("reward.train", state.stage_parts, "reward", "reward-stage training")):
            how = node.params.get(key)
            train = parts.get("train")
            if not how or train is None:
                continue
            kept, removed = dedup_part(state.checked, train, how["kind"], how.get("threshold"), stage)
            parts["train"] = kept
            state.log({"event": "note", "message": f"dedup {how['kind']}: removed {removed} {what} row(s)"})

    def _load_base(self, node: PlanNode, state: RunState) -> None:
        """Locate the base model's folder and check that its files are the ones the plan hashed."""
        state.base_dir = locate_base(state.checked, node.params)

    def _train(self, node: PlanNode, state: RunState) -> None:
        if node.params.get("distributed"):  # several processes, through torchrun (runtime/launch.py)
            from ftc.runtime.launch import run_node

            state.train[node.id] = run_node(node, state)
            return
        ctx = state.context(state.stage_parts if node.kind == "train_reward" else None)
        step = backend_step(ctx.spec, node.kind)
        if node.kind == "train_policy":
            state.train[node.id] = step(ctx, state.train["train.reward"].model_dir)
        else:
            state.train[node.id] = step(ctx)

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

    def _register(self, node: PlanNode, state: RunState) -> None:
        """Store the final model and record the run with its verdict (runtime/run.py's Registrar)."""
        if state.registrar is None:
            raise PlanError("the register step has no registry to record the run in")
        state.registrar(state)


def locate_base(checked: Any, params: dict[str, Any]) -> Path:
    """The base model's folder (a local folder, or an `hf:` base's snapshot in the Hugging Face
    cache: compiler/hub.py, as `ftc check` found it), whose files must hash to what the plan says:
    the whole folder for a local base, and the code that `trust_remote_code` runs (the plan's
    `remote_code`, compiler/basemodel.py) for any base. Pickled weights are refused (FT162's case)."""
    from ftc.compiler import basemodel, hub
    from ftc.compiler.data.cache import file_digest

    folder = hub.resolve_base(checked)
    base = params.get("ref", checked.spec.model.base)
    if folder is None:
        raise DriftError(f"the base model `{base}` is not on this machine (any more): run `ftc check` on the "
                         "spec, which says how to get it")
    if pickles := basemodel.pickled_weights(folder, checked.spec.model.modality):
        raise DriftError(f"the base model `{base}` holds its weights as pickles ({', '.join(pickles)}), which run "
                         "code when loaded: ftc loads safetensors only (`ftc check` says how to convert them)")
    expected = params.get("sha256")
    if expected and file_digest(folder) != expected:
        raise DriftError(f"the files of the base model `{base}` changed since the plan was made: run `ftc plan` "
                         "(or `ftc run SPEC`) again")
    if "remote_code" in params and (changed := _code_changes(params["remote_code"], basemodel.remote_code(folder))):
        raise DriftError(f"the code of the base model `{base}` that `trust_remote_code` runs changed since the plan "
                         f"was made ({', '.join(changed)}): review it, then run `ftc plan` again")
    return folder.resolve()


def _code_changes(planned: dict[str, Any], now: dict[str, str | None]) -> list[str]:
    """The code files whose hash differs from the plan's (added, removed or edited)."""
    return sorted(n for n in set(planned) | set(now) if planned.get(n) != now.get(n))


def _final_model(state: RunState) -> Path:
    final = state.train.get("train.policy") or state.train.get("train")
    if final is None:
        raise RuntimeError("no trained model to evaluate")
    return final.model_dir


def _backend_evaluate(state: RunState, model_dir: Path | None, params: dict[str, Any]) -> EvalResult:
    """A split of the spec's data, or a data file named by a gate (`on "data/general.jsonl"`:
    regression against a general set), evaluated by the backend of the spec's signal."""
    ctx = state.context()
    if params.get("dataset"):  # beside the gate's file
        result: EvalResult = backend_step(ctx.spec, "evaluate_file")(ctx, model_dir, params["dataset"])
    else:
        result = backend_step(ctx.spec, "evaluate")(ctx, model_dir, params["split"])
    return result


def _backend_latency(ctx: TrainContext, model_dir: Path | None, split: str, warmup: int) -> dict[str, Any]:
    measured: dict[str, Any] = backend_step(ctx.spec, "latency")(ctx, model_dir, split, warmup=warmup)
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
