"""build_plan: CheckedSpec (with its data read) -> Plan, the reviewed artifact that `ftc run` executes.

The plan is a graph of steps with inputs, parameters, content hashes and estimates. Its JSON is
deterministic: format_version, nodes sorted by id, edges sorted, no timestamps or absolute paths;
the same spec and data give the same bytes. A node's hash covers its kind, its parameters and the
hashes of its inputs, so a step whose inputs did not change has the same hash and its result can be
reused from the content-addressed cache (the base model's evaluation, for instance).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ftc import __version__
from ftc.compiler import estimate as est
from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec

FORMAT_VERSION = 2  # 2: every node kind is an executor step (no tokenize/attach_method/export nodes)

# Every kind a plan may hold; each is one step of runtime/executor.py (an unknown kind is an error).
NODE_KINDS = ("read_data", "validate", "split", "dedup", "load_base", "train", "train_reward", "train_policy",
              "evaluate", "latency", "gates", "register")


@dataclass(frozen=True)
class PlanNode:
    id: str
    kind: str
    inputs: tuple[str, ...]
    params: dict[str, Any]
    hash: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "inputs": list(self.inputs), "params": self.params,
                "hash": self.hash, "estimate": self.estimate}


@dataclass(frozen=True)
class Plan:
    spec: dict[str, Any]
    data: dict[str, Any]
    base: dict[str, Any]
    nodes: tuple[PlanNode, ...]
    waivers: tuple[dict[str, str], ...] = ()

    @property
    def edges(self) -> list[tuple[str, str]]:
        return sorted((i, n.id) for n in self.nodes for i in n.inputs)

    @property
    def hash(self) -> str:
        return _digest([n.hash for n in self.nodes])

    def node(self, node_id: str) -> PlanNode:
        return next(n for n in self.nodes if n.id == node_id)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "ftc_version": __version__, "plan_hash": self.hash,
                "spec": self.spec, "data": self.data, "base": self.base, "waivers": list(self.waivers),
                "nodes": [n.to_dict() for n in self.nodes],
                "edges": [{"from": a, "to": b} for a, b in self.edges]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Plan:
        """A plan from its JSON document, which must be well formed (compiler/planfile.py checks a
        file and reports where it is not)."""
        nodes = tuple(PlanNode(n["id"], n["kind"], tuple(n["inputs"]), n["params"], n["hash"], n["estimate"])
                      for n in doc["nodes"])
        return cls(doc["spec"], doc["data"], doc["base"], nodes, tuple(doc.get("waivers", ())))

    def topological(self) -> list[PlanNode]:
        """Nodes in an order where every input comes first (ties by id: deterministic)."""
        done: set[str] = set()
        order: list[PlanNode] = []
        pending = sorted(self.nodes, key=lambda n: n.id)
        while pending:
            ready = [n for n in pending if all(i in done for i in n.inputs)]
            if not ready:
                raise ValueError("the plan has a cycle")
            for n in ready:
                done.add(n.id)
                order.append(n)
            pending = [n for n in pending if n.id not in done]
        return order


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def node_hash(kind: str, params: dict[str, Any], input_hashes: list[str]) -> str:
    """A node's hash: its kind, its parameters and its inputs' hashes (in the inputs' order)."""
    return _digest([kind, params, input_hashes])


def _spec_info(c: CheckedSpec) -> dict[str, Any]:
    texts = sorted((path, src.text) for path, src in c.sources.items())
    return {"name": c.name, "path": c.path, "files": sorted(c.sources), "sha256": _digest(texts)}


def _base_info(c: CheckedSpec) -> dict[str, Any]:
    from ftc.compiler.data.cache import file_digest
    from ftc.compiler.estimate import is_local

    m = s.complete(c.spec).model
    info: dict[str, Any] = {"ref": m.base, "revision": m.revision, "local": is_local(m.base)}
    if info["local"]:
        folder = c.resolve_path(m.base, m.at("base"))
        info["sha256"] = file_digest(folder) if folder.exists() else None
    else:
        info["sha256"] = None  # a hub model is identified by its pinned revision
    if m.trust_remote_code:  # the code transformers runs: pinned here, checked by the executor's locate_base
        from ftc.compiler import basemodel, hub

        code_dir = hub.resolve_base(c)
        info["remote_code"] = basemodel.remote_code(code_dir) if code_dir is not None else {}
    return info


# Train keys that are bookkeeping, not training: `artifacts keep N` is read by `ftc gc` from the run's
# lineage (record["retention"]), so that changing it changes no plan hash (an interrupted run resumes).
UNPLANNED = ("artifacts",)


def _plain(value: Any) -> Any:
    """Spec blocks as JSON-able parameters (spans and defaults' absence dropped)."""
    if isinstance(value, s.Node):
        skip = UNPLANNED if isinstance(value, s.Train) else ()
        out = {k: _plain(getattr(value, k)) for k in s.schema_fields(type(value)) if k not in skip}
        if value.kind:
            out["kind"] = value.kind
        return out
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__ if k not in ("span", "metric_span")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def train_steps(train_rows: int, tr: s.Train, devices: int) -> int:
    if tr.steps is not None:
        return tr.steps
    per_step = tr.batch_size * tr.grad_accum * max(1, devices)
    return max(1, math.ceil(train_rows / per_step)) * (tr.epochs or 1)


class _Builder:
    def __init__(self, c: CheckedSpec) -> None:
        self.c = c
        self.nodes: dict[str, PlanNode] = {}

    def add(self, node_id: str, kind: str, inputs: list[str], params: dict[str, Any],
            estimate: dict[str, Any] | None = None) -> str:
        ins = tuple(sorted(inputs))
        h = node_hash(kind, params, [self.nodes[i].hash for i in ins])
        self.nodes[node_id] = PlanNode(node_id, kind, ins, params, h, estimate or {})
        return node_id


def build_plan(c: CheckedSpec, waivers: tuple[dict[str, str], ...] = ()) -> Plan:
    spec = s.complete(c.spec)
    b = _Builder(c)
    sizes, hashes = dict(c.sizes), dict(getattr(c.data, "hashes", {}) or {})
    data = spec.data
    files = {name: getattr(data, name).path for name in ("train", "val", "test", "source") if getattr(data, name)}
    stage = spec.signal.reward.data if spec.signal.kind == "rlhf" and spec.signal.reward else None
    if stage is not None:
        files.update({f"reward.{name}": getattr(stage, name).path for name in ("train", "val", "test", "source")
                      if getattr(stage, name)})
    b.add("data.read", "read_data", [], {"files": files, "format": data.format, "fields": _plain(data.fields)})
    b.add("data.validate", "validate", ["data.read"], {"signal": spec.signal.kind, "task": spec.model.task,
                                                       "hashes": hashes})
    b.add("data.split", "split", ["data.validate"],
          {"split": _plain(data.split), "seed": data.seed, "stratify": data.stratify,
           "sizes": sizes, "hashes": hashes}, {"rows": sizes})
    last = "data.split"
    trained_rows = dict(sizes)
    dedups = {"train": _dedup_of(data), "reward.train": _dedup_of(stage)}
    if any(dedups.values()):
        trained_rows.update(_after_dedup(c))
        last = b.add("data.dedup", "dedup", [last], {k: _plain(v) for k, v in dedups.items()},
                     {"rows": trained_rows})
    base = _base_info(c)
    b.add("model.load_base", "load_base", [], {**base, "quantize": _quant(spec)})
    train_ids = _train_nodes(b, c, last, trained_rows)
    final = train_ids[-1]
    gate_inputs = _eval_nodes(b, c, last, final)
    b.add("gates", "gates", gate_inputs, {"gates": [_gate(g) for g in spec.eval.gates]})
    b.add("register", "register", ["gates", final], {"name": c.name, "merge": bool(getattr(spec.method, "merge", False))})
    nodes = tuple(sorted(b.nodes.values(), key=lambda n: n.id))
    summary: dict[str, Any] = {"sizes": sizes, "hashes": hashes}
    if trained_rows != sizes:
        summary["after_dedup"] = {k: v for k, v in trained_rows.items() if sizes.get(k) != v}
    return Plan(_spec_info(c), summary, base, nodes, waivers)


def _dedup_of(data: s.Data | None) -> s.Dedup | None:
    dedup = data.dedup if data is not None else None
    return dedup if dedup is not None and dedup.kind != "none" else None


def _after_dedup(c: CheckedSpec) -> dict[str, int]:
    """Training rows after `dedup` (the spec's, and an RLHF reward stage's own), counted by the
    function `ftc run` removes them with (compiler/data/dedup.py), so that the plan's sizes and
    step estimates are what runs."""
    from ftc.compiler.data.dedup import deduplicated_train

    if c.data is None or not c.data.parts:  # a check restored from the cache kept no rows
        from ftc.compiler.data.analyze import analyze

        c = replace(c, data=analyze(c))
    out: dict[str, int] = {}
    for key, stage in (("train", None), ("reward.train", "reward")):
        kept = deduplicated_train(c, stage)
        if kept is not None and key in c.sizes:
            out[key] = len(kept.rows)
    return out


def _quant(spec: s.Complete) -> dict[str, Any] | None:
    m = spec.method
    if m.kind == "qlora":
        return {"bits": m.bits, "quant_type": m.quant_type, "double_quant": m.double_quant,
                "compute_dtype": m.compute_dtype}
    return {"bits": 8} if spec.model.quantize == "8bit" else None


def _train_nodes(b: _Builder, c: CheckedSpec, rows: str, sizes: dict[str, int]) -> list[str]:
    """The training node(s): the rows come in through `rows` (the split, or the dedup after it),
    the base through model.load_base; the method, the length policy and packing are parameters
    (no separate nodes: the trainer attaches the method and tokenises as it trains)."""
    spec = s.complete(c.spec)
    tr, budget = spec.train, spec.budget
    devices = budget.gpus * budget.nodes
    shape = est.model_shape(spec.model, c.dir_of(spec.model.at("base")))
    memory = None
    if shape is not None:
        memory = round(est.estimate(c.spec, shape, est.default_seq_len(c.spec)).total)
    shared = {"method": _plain(spec.method), "max_length": _plain(spec.data.max_length)}
    train_est = {"steps": train_steps(sizes.get("train", 0), tr, devices), "examples": sizes.get("train", 0),
                 "memory_bytes": memory}
    if spec.signal.kind != "rlhf":
        dist = distributed(budget, tr, "train")
        return [b.add("train", "train", [rows, "model.load_base"],
                      {"signal": _plain(spec.signal), "train": _plain(tr), "packing": tr.packing, **shared,
                       **({"distributed": dist} if dist else {})}, train_est)]
    sig = spec.signal
    rtr = s.merged_train(tr, sig.reward.train)
    reward_rows = sizes.get("reward.train", sizes.get("train", 0))
    reward = b.add("train.reward", "train_reward", [rows, "model.load_base"],
                   {"stage": _plain(sig.reward), "train": _plain(rtr), **shared},
                   {"steps": train_steps(reward_rows, rtr, devices), "examples": reward_rows})
    ptr = s.merged_train(tr, sig.policy.train)
    # a policy step trains on `batch_size` sampled replies: `generations` of them per prompt
    completions = sizes.get("train", 0) * sig.policy.generations
    policy = b.add("train.policy", "train_policy", [rows, "model.load_base", reward],
                   {"stage": _plain(sig.policy), "train": _plain(ptr), **shared},
                   {"steps": train_steps(completions, ptr, devices), "examples": sizes.get("train", 0),
                    "memory_bytes": memory})
    return [reward, policy]


LAUNCHER = "torchrun"


def distributed(budget: s.Budget, tr: s.Train, node_id: str) -> dict[str, Any] | None:
    """How a training node runs in several processes (None: one process). Part of the node's
    parameters, so of the plan's hash: the world size, the batch each process takes and the
    global batch of one optimizer step, and the launch command (RUN_DIR is the run's folder)."""
    processes = budget.gpus * budget.nodes
    if processes <= 1 or budget.strategy == "none":
        return None
    return {"launcher": LAUNCHER, "strategy": budget.strategy, "processes": processes, "nodes": budget.nodes,
            "per_device_batch": tr.batch_size, "grad_accum": tr.grad_accum,
            "global_batch": tr.batch_size * tr.grad_accum * processes,
            "command": f"{LAUNCHER} --standalone --nnodes {budget.nodes} --nproc-per-node {budget.gpus} "
                       f"-m ftc.runtime.rank RUN_DIR {node_id}"}


def _gate(g: s.Gate) -> dict[str, Any]:
    return {"metric": g.metric, "qualifier": g.qualifier, "op": g.op, "threshold": g.threshold,
            "split": g.split or ("test" if g.dataset is None else None), "slice": g.slice,
            "dataset": g.dataset, "versus": g.versus, "text": g.threshold_text}


def _eval_nodes(b: _Builder, c: CheckedSpec, rows: str, final: str) -> list[str]:
    spec = s.complete(c.spec)
    ev = spec.eval
    metrics = [_plain(m) for m in ev.metrics]
    reads = eval_reads(spec)
    splits = sorted({g.split or "test" for g in ev.gates if g.dataset is None and g.metric != "latency"} | {"test"})
    out: list[str] = []
    # RLHF's reward metrics score the base's replies with the reward model of stage 1 as well
    rewarded = spec.signal.kind == "rlhf" and any(m.name in s.RLHF_METRICS for m in ev.metrics)
    scorer = ["train.reward"] if rewarded else []
    for split in splits:
        slices = sorted({g.slice for g in ev.gates if (g.split or "test") == split and g.slice})
        # the rows come in through `rows`; what else the evaluation reads is in `reads`
        params = {"split": split, "metrics": metrics, "slices": slices,
                  "max_length": _plain(spec.data.max_length), **reads}
        out.append(b.add(f"eval.base.{split}", "evaluate", [rows, "model.load_base", *scorer],
                         {**params, "model": "base"}))
        out.append(b.add(f"eval.tuned.{split}", "evaluate", [rows, final], {**params, "model": "tuned"}))
    regression = {g.dataset: g for g in ev.gates if g.dataset is not None}
    for dataset in sorted(regression):
        params = {"dataset": dataset, **_regression_file(c, dataset, regression[dataset]), "metrics": metrics,
                  "max_length": _plain(spec.data.max_length), **reads}
        suffix = regression_slug(dataset)
        out.append(b.add(f"eval.base.regression.{suffix}", "evaluate", ["model.load_base", *scorer],
                         {**params, "model": "base"}))
        out.append(b.add(f"eval.tuned.regression.{suffix}", "evaluate", [final], {**params, "model": "tuned"}))
    if any(g.metric == "latency" for g in ev.gates):
        out.append(b.add("eval.latency", "latency", [rows, "model.load_base", final],
                         {"warmup": ev.latency_warmup, "split": "test"}))
    return sorted(set(out))


def eval_reads(spec: s.Complete) -> dict[str, Any]:
    """What an evaluation reads from the spec besides its rows and its model, so that a change of
    any of them changes the evaluation node's hash (the base model's cached result is keyed by it):
    the signal (which columns are scored; DPO's beta), the `fields` mapping and the slices' rules."""
    return {"signal": _plain(spec.signal), "fields": _plain(spec.data.fields), "slice_rules": _plain(spec.data.slices)}


def regression_slug(dataset: str) -> str:
    """A node-id suffix for a regression set: its file name's stem (letters, digits, `_`) and a
    short hash of the path as written, so that `a/general.jsonl` and `b/general.jsonl` differ."""
    stem = PurePosixPath(dataset.replace("\\", "/")).name.split(".")[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "_", stem).strip("_")[:24] or "file"
    return f"{slug}_{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"


def content_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes (what `sha256sum` prints); of a folder's files, names and bytes
    (data/cache.py's file_digest); None when there is nothing there."""
    if path.is_dir():
        from ftc.compiler.data.cache import file_digest

        return file_digest(path)
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _regression_file(c: CheckedSpec, dataset: str, g: s.Gate) -> dict[str, Any]:
    """The regression set's content hash (None when it is missing) and, when the gate was written
    in another file (`extends`), its path relative to the spec's folder, which evaluation reads."""
    path = c.resolve_path(dataset, g.span)
    out: dict[str, Any] = {"sha256": content_sha256(path)}
    if not Path(dataset).expanduser().is_absolute() and c.dir_of(g.span) != c.dir_of(None):
        out["path"] = Path(os.path.relpath(path, c.dir_of(None))).as_posix()
    return out


# --- renderings ---------------------------------------------------------------------------------

def render_text(plan: Plan) -> str:
    lines = [f"plan for {plan.spec['name']} ({plan.spec['path']})  plan {plan.hash[:12]}",
             "data: " + ", ".join(_rows(k, v, plan.data.get("after_dedup", {}))
                                  for k, v in sorted(plan.data['sizes'].items())),
             f"base: {plan.base['ref']}" + (f" @ {plan.base['revision']}" if plan.base.get('revision') else "")
             + (f" (sha256 {plan.base['sha256'][:12]})" if plan.base.get('sha256') else ""), *_code_lines(plan), ""]
    width = max([24, *(len(n.id) for n in plan.nodes)])
    for n in plan.topological():
        est_text = ", ".join(f"{k} {_human(k, v)}" for k, v in sorted(n.estimate.items()) if v is not None and k != "rows")
        after = f"  <- {', '.join(n.inputs)}" if n.inputs else ""
        lines.append(f"  {n.id:<{width}} {n.kind:<14} {n.hash[:10]}{after}" + (f"   [{est_text}]" if est_text else ""))
    for n in plan.topological():
        dist = n.params.get("distributed")
        if dist:
            lines.append(f"{n.id}: {dist['processes']} processes ({dist['strategy']}), {dist['per_device_batch']} rows "
                         f"per process x {dist['grad_accum']} accumulation = global batch {dist['global_batch']}; "
                         f"launch: {dist['command']}")
    for w in plan.waivers:
        lines.append(f"waived {w['code']}: {w['reason']}")
    return "\n".join(lines) + "\n"


def _code_lines(plan: Plan) -> list[str]:
    """The base's own code that `trust_remote_code` runs, with the hashes the run checks."""
    code = plan.base.get("remote_code") or {}
    return [f"remote code: {name} " + (f"sha256 {sha[:12]}" if sha else "(not in the folder)")
            for name, sha in sorted(code.items())]


def _rows(name: str, rows: int, after_dedup: dict[str, int]) -> str:
    kept = after_dedup.get(name)
    return f"{name} {rows} rows" + (f" ({kept} after dedup)" if kept is not None else "")


def _human(key: str, value: Any) -> str:
    if key == "memory_bytes" and isinstance(value, (int, float)):
        return est.fmt_bytes(value)
    return str(value)


def render_dot(plan: Plan) -> str:
    out = ["digraph plan {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    for n in plan.nodes:
        out.append(f'  "{n.id}" [label="{n.id}\\n{n.kind}"];')
    for a, b_ in plan.edges:
        out.append(f'  "{a}" -> "{b_}";')
    return "\n".join(out) + "\n}\n"


def render_mermaid(plan: Plan) -> str:
    def ident(node_id: str) -> str:
        return node_id.replace(".", "_")

    out = ["flowchart LR"]
    for n in plan.nodes:
        out.append(f'  {ident(n.id)}["{n.id}<br/>{n.kind}"]')
    for a, b_ in plan.edges:
        out.append(f"  {ident(a)} --> {ident(b_)}")
    return "\n".join(out) + "\n"
