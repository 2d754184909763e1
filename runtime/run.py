"""`ftc run`: check, plan (or load a reviewed plan), execute, judge the gates, record in the registry.

Exit codes: 0 the run completed and its gates passed (model promoted); 1 the spec is refused by
`ftc check`, or a reviewed plan no longer matches its spec/data; 2 usage; 3 internal error;
4 the run completed but a gate failed (model not promoted); 5 the run failed or was interrupted
(Ctrl-C or SIGTERM; resume with `ftc run --resume`); 6 the registry cannot be used (damaged,
locked longer than FTC_REGISTRY_TIMEOUT, not writable): nothing was recorded.

On finish the final model (and the merged one, if any) moves into the content-addressed store
(runtime/store.py) and the record points there; a copy of the record is kept in the run folder
(record.json).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ftc import __version__
from ftc.compiler.plan import Plan
from ftc.runtime.runrecord import ArtifactRecord, MlflowRef, RunRecord

EXIT_PROMOTED, EXIT_REFUSED, EXIT_GATES, EXIT_FAILED = 0, 1, 4, 5


class Status(str, Enum):
    """How a run ended (the registry's `status` column holds the value)."""

    PROMOTED = "promoted"  # every gate passed: the model is the spec's active one
    REJECTED = "rejected"  # it ran, and a gate failed
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: resumable
    REFUSED = "refused"  # nothing ran: the spec, the plan or the registry said no
    DRY_RUN = "dry-run"


@dataclass
class Outcome:
    status: Status
    run_id: str
    run_dir: Path
    exit_code: int
    message: str = ""


def _refused(message: str, run_id: str = "", run_dir: Path = Path(".")) -> Outcome:
    return Outcome(Status.REFUSED, run_id, run_dir, EXIT_REFUSED, message)


class Progress:
    """Prints events: a live line for training steps on a terminal, plain lines otherwise. Each
    training node counts its own steps: out of what its trainer says it will take (the step
    event's `of`), else out of the plan's estimate for that node (`planned`, by node id; `steps`
    for a node the plan does not know). The ETA is that node's."""

    def __init__(self, run_dir: Path, steps: int, stream: Any = None, planned: dict[str, int] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.planned = planned or {}
        self.total = max(1, steps)
        self.started = time.monotonic()
        self.first_step: int | None = None  # the first step this node logged here (a resume starts later)
        self.events = (run_dir / "events.jsonl").open("a", encoding="utf-8")
        self.history: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        self.events.flush()
        self.history.append(event)
        kind = event.get("event")
        if kind == "step":
            self._step(event)
        elif kind == "node":
            if event["id"] in self.planned:
                self.total = max(1, self.planned[event["id"]])
            self.started, self.first_step = time.monotonic(), None
            self._line(f"· {event['id']} ({event['kind']})" + (" [dry run]" if event.get("dry") else ""))
        elif kind in ("eval", "latency"):
            shown = {k: v for k, v in event.items() if isinstance(v, float)}
            self._line(f"  {event.get('id', kind)}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))
        elif kind in ("note", "warning"):
            self._line(f"  {kind}: {event.get('message', '')}")

    def _step(self, e: dict[str, Any]) -> None:
        step = int(e.get("step", 0))
        if isinstance(e.get("of"), int) and e["of"] > 0:
            self.total = e["of"]
        if self.first_step is None:  # time is counted from the first step logged in this process
            self.first_step, self.started = step, time.monotonic()
        done = step - self.first_step
        eta = (time.monotonic() - self.started) / done * max(0, self.total - step) if done > 0 else None
        shown = "--:--" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
        text = (f"  step {step}/{max(self.total, step)}  loss {e.get('loss', float('nan')):.4f}  "
                f"lr {e.get('lr', 0):.2e}  eta {shown}")
        if self.tty:
            self.stream.write("\r" + text.ljust(70))
            self.stream.flush()
        elif step == 1 or step % 10 == 0 or step == self.total:
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 70 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.events.close()


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _planned_steps(estimated: int, max_steps: int | None) -> int:
    """Steps a training node is expected to take: the plan's estimate, capped by `--max-steps`."""
    if estimated and max_steps:
        return min(estimated, max_steps)
    return estimated or max_steps or 0


def _new_run_dir(runs: Path, name: str) -> tuple[str, Path]:
    """A fresh run folder: two runs of one spec in the same second draw from 65,536 suffixes, and a
    drawn id whose folder exists (another process's run) is drawn again, never shared."""
    runs.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = new_run_id(name)
        try:
            (runs / run_id).mkdir()
        except FileExistsError:
            continue
        return run_id, runs / run_id


def lineage(plan: Plan, checked: Any) -> RunRecord:
    import importlib.metadata as md

    from ftc.runtime.registry import current_user

    versions: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes", "timm", "open-clip-torch", "datasets"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    train = checked.spec.train
    keep = train.artifacts.keep if train is not None and train.artifacts is not None else None  # not in the plan
    spec_path = Path(plan.spec["path"])
    spec_text = spec_path.read_text(encoding="utf-8", errors="replace")
    sources: dict[str, str] = {}
    for name in plan.spec.get("files") or [plan.spec["path"]]:
        try:
            sources[name] = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return RunRecord.from_json({  # through JSON: the plan's sections are JSON (a tuple becomes a list)
        "ftc_version": __version__, "plan_hash": plan.hash, "spec": plan.spec, "spec_text": spec_text,
        "spec_sources": sources, "base": plan.base, "data": plan.data, "method": _method_of(plan),
        "seed": train.seed if train else None,
        "training": {n.id: n.params for n in plan.nodes if n.kind.startswith("train")},
        "retention": {"artifacts_keep": keep},  # `ftc gc` applies the newest run's (None: not declared)
        "versions": versions, "python": platform.python_version(),
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or None,
                     "host": platform.node() or None},
        "git_commit": _git_commit(spec_path.parent), "user": current_user(), "waivers": list(plan.waivers)})


def _method_of(plan: Plan) -> dict[str, Any]:
    """The method the plan trains with (a format-1 plan kept it in its `model.attach` node)."""
    for node in plan.nodes:
        if node.kind in ("train", "train_policy") and "method" in node.params:
            return dict(node.params["method"])
    attach = [n for n in plan.nodes if n.id == "model.attach"]
    return dict(attach[0].params) if attach else {}


def _git_commit(folder: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def find_resumable(registry: Any, name: str) -> dict[str, Any] | None:
    """The last interrupted or failed run of a spec, or a `running` one whose process is gone
    (never one that another `ftc run` on this machine is still executing)."""
    from ftc.runtime.retention import alive

    def resumable(r: dict[str, Any]) -> bool:
        if r["status"] == "running":
            return r["record"].pid is None or not alive(r["record"])
        return r["status"] in ("interrupted", "failed")

    runs = [r for r in registry.runs(name) if resumable(r)]
    return runs[-1] if runs else None


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.4g} ms"


def _verdict_table(state: Any) -> str:
    rows = [("gate", "before", "after", "result")]
    for g in state.gates:
        fmt = _ms if g.gate.startswith("latency") else _num  # latencies are measured in seconds
        rows.append((g.gate, fmt(g.before), fmt(g.value), "pass" if g.passed else f"FAIL {g.note}".strip()))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def plan_mismatch(reviewed: Plan, current: Plan) -> list[str]:
    """What changed between a reviewed plan and the plan the current spec and data give (a data
    file named by a regression gate included: its sha256 is in its evaluation nodes)."""
    def regression_sets(plan: Plan) -> dict[str, Any]:
        return {n.params["dataset"]: n.params.get("sha256") for n in plan.nodes
                if n.kind == "evaluate" and n.params.get("dataset") and n.params.get("model") == "base"}

    out = []
    if reviewed.spec.get("sha256") != current.spec.get("sha256"):
        out.append("the spec text changed")
    for name in sorted(set(reviewed.data.get("hashes", {})) | set(current.data.get("hashes", {}))):
        if reviewed.data.get("hashes", {}).get(name) != current.data.get("hashes", {}).get(name):
            out.append(f"the {name} data changed")
    if reviewed.base.get("sha256") != current.base.get("sha256"):
        out.append("the base model's files changed")
    old_sets, new_sets = regression_sets(reviewed), regression_sets(current)
    for name in sorted(set(old_sets) & set(new_sets)):
        if old_sets[name] != new_sets[name]:
            out.append(f'the regression set "{name}" changed')
    if not out and reviewed.hash != current.hash:
        out.append("the plan's steps differ (another ftc version?)")
    return out


@dataclass
class _Run:
    """What the phases of one `ftc run` hand each other."""

    spec_path: str
    checked: Any
    plan: Plan
    waivers: tuple[Any, ...]
    tracking: Any
    record: RunRecord = field(default_factory=RunRecord)
    run_id: str = ""
    run_dir: Path = Path(".")


def run(target: str, *, resume: bool = False, dry_run: bool = False, max_steps: int | None = None,
        device: str = "cpu", out: Any = None, mlflow: str | None = None, checked: Any = None,
        reviewed: Plan | None = None) -> Outcome:
    """`ftc run TARGET` (a spec, or a reviewed plan.json), in phases: check → plan → (dry run) →
    open the run → execute the plan's nodes (the last of which judges the gates and registers).
    `checked`: the spec's check_file result when the caller has it already (the CLI checks first
    to print diagnostics); `reviewed`: the plan file, already loaded by the CLI."""
    out = out or sys.stdout
    prepared = _prepare(target, mlflow, checked, reviewed)
    if isinstance(prepared, Outcome):
        return prepared
    if dry_run:
        return _dry_run(prepared.plan, prepared.checked, out)
    from ftc.runtime.registry import Registry
    from ftc.runtime.store import Store

    registry = Registry()
    store = Store(registry.root)
    options = {"max_steps": max_steps, "device": device, "resume": resume}
    opened = _resume_run(registry, prepared, options) if resume else _new_run(registry, store, prepared, options)
    if opened is not None:
        return opened
    return _execute(prepared, registry, store, max_steps=max_steps, device=device, resume=resume, out=out)


def _prepare(target: str, mlflow: str | None, checked: Any, reviewed: Plan | None) -> _Run | Outcome:
    """Phase 1, check and plan: the spec checks clean, and the plan it gives now is the reviewed one."""
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.plan import build_plan
    from ftc.runtime.tracking import TrackingError, settings_for_run

    if target.endswith(".json") and reviewed is None:
        from ftc.compiler.checked import display_path
        from ftc.compiler.planfile import load_plan

        reviewed, diags, _ = load_plan(Path(target), display_path(Path(target)))
        if reviewed is None:
            d = diags[0]
            where = f"{d.span.path}:{d.span.line}:{d.span.column}: " if d.span else ""
            return _refused(f"{where}{d.message} ({d.help})")
    spec_path = str(reviewed.spec["path"]) if reviewed is not None else target
    result = checked if checked is not None else check_file(Path(spec_path), CheckOptions())
    if not result.ok or result.checked is None:
        return _refused("the spec is refused by `ftc check`")
    try:
        tracking = settings_for_run(result.checked, mlflow)
    except TrackingError as err:
        return _refused(f"{err.message}; {err.hint}")
    waivers = tuple({"code": w.code, "reason": w.reason} for w in result.waivers)
    plan = build_plan(result.checked, waivers)
    if reviewed is not None:
        changed = plan_mismatch(reviewed, plan)
        if changed:
            return _refused(f"the reviewed plan no longer matches: {'; '.join(changed)}. Run `ftc plan` again")
        plan = reviewed  # what runs is what was reviewed (node for node: its hash is the current plan's)
    return _Run(spec_path, result.checked, plan, waivers, tracking)


def _resume_run(registry: Any, r: _Run, options: dict[str, Any]) -> Outcome | None:
    """Phase 2 (resume): take over the spec's last interrupted run, if its plan is this plan."""
    prev = find_resumable(registry, r.checked.name)
    if prev is None:
        return _refused(f"no interrupted run of {r.checked.name} to resume")
    if prev["plan_hash"] != r.plan.hash:
        from ftc.compiler.planfile import load_plan

        old, _, _ = load_plan(Path(prev["record"].run_dir) / "plan.json", "plan.json")
        why = "; ".join(plan_mismatch(old, r.plan)) if old is not None else "its plan was made by another ftc"
        return _refused(f"cannot resume {prev['id']}: {why} since it started", prev["id"],
                        Path(prev["record"].run_dir))
    r.run_id, r.run_dir = prev["id"], Path(prev["record"].run_dir)
    r.record = lineage(r.plan, r.checked).but(run_id=r.run_id, run_dir=str(r.run_dir), options=options,
                                              pid=os.getpid(), resumed=prev["record"].resumed + 1)
    registry.mark(r.run_id, "running")
    registry.update_record(r.run_id, lambda _old: r.record)  # this process now owns the run (gc checks its pid)
    return None


def _new_run(registry: Any, store: Any, r: _Run, options: dict[str, Any]) -> Outcome | None:
    """Phase 2: a fresh run folder holding the plan, and a `running` record in the registry."""
    base_record = lineage(r.plan, r.checked)
    with store.lock(exclusive=False):  # `ftc gc` never sees this folder without its record
        r.run_id, r.run_dir = _new_run_dir(registry.root / "runs", r.checked.name)
        r.record = base_record.but(run_id=r.run_id, run_dir=str(r.run_dir), options=options, pid=os.getpid())
        try:
            (r.run_dir / "plan.json").write_text(r.plan.to_json(), encoding="utf-8")
            registry.start(r.run_id, r.checked.name, r.plan.hash, r.record)
        except BaseException:  # a locked or damaged registry: leave nothing behind
            import shutil

            shutil.rmtree(r.run_dir, ignore_errors=True)
            raise
    return None


def _execute(r: _Run, registry: Any, store: Any, *, max_steps: int | None, device: str, resume: bool,
             out: Any) -> Outcome:
    """Phase 3: execute the plan's nodes; a failure or an interruption is recorded, not lost."""
    from ftc.runtime.executor import LocalExecutor, RunState, execute
    from ftc.runtime.registry import RegistryError

    planned = {n.id: _planned_steps(int(n.estimate.get("steps") or 0), max_steps)
               for n in r.plan.nodes if n.kind.startswith("train")}
    progress = Progress(r.run_dir, max(planned.values(), default=0), planned=planned)
    registrar = Registrar(registry, store, r, progress)
    from ftc.runtime.api import TimeLimit

    state = RunState(r.plan, r.checked, r.run_dir, progress, resume=resume, max_steps=max_steps, device=device,
                     registrar=registrar, time_limit=TimeLimit.of(r.checked.spec))
    print(f"run {r.run_id}: {r.checked.name}, plan {r.plan.hash[:12]}", file=out)
    try:
        with _sigterm_as_interrupt():
            execute(r.plan, state, LocalExecutor())
    except KeyboardInterrupt as stop:
        how = str(stop) if str(stop) == "SIGTERM" else "SIGINT"
        with _sigterm_ignored():
            _finish(registry, store, r.run_dir, r.run_id, Status.INTERRUPTED,
                    r.record.but(interrupted_by=how, history=tuple(progress.history[-50:])))
            _mirror(registry, r.run_id, r.tracking)
        progress.close()
        return Outcome(Status.INTERRUPTED, r.run_id, r.run_dir, EXIT_FAILED,
                       f"interrupted ({how}): continue with `ftc run {r.spec_path} --resume`")
    except RegistryError:  # recording the outcome failed: the registry's message names what was kept
        progress.close()
        raise
    except Exception as err:  # noqa: BLE001 (a failed run is recorded, with its error, not lost)
        return _failed(r, registry, store, progress, err)
    progress.close()
    if registrar.outcome is None:
        raise RuntimeError("the plan has no register step")  # planfile refuses such a plan
    print(_verdict_table(state), file=out)
    return registrar.outcome


def _failed(r: _Run, registry: Any, store: Any, progress: Progress, err: Exception) -> Outcome:
    """A run that raised: its error report (error.txt, or stderr where that cannot be written: a
    full disk), a `failed` record, and what was kept and how to resume when the disk is full."""
    import traceback

    from ftc.runtime.registry import RegistryError

    where = _error_report(r.run_dir, traceback.format_exc())
    full = disk_full(err)
    message = (_disk_full_message(r, full) if full is not None else
               f"the run failed: {type(err).__name__}: {err} (details in {where})")
    try:
        _finish(registry, store, r.run_dir, r.run_id, Status.FAILED,
                r.record.but(error=f"{type(err).__name__}: {err}", failed_rank=getattr(err, "rank", None)))
        _mirror(registry, r.run_id, r.tracking)
    except RegistryError as also:
        progress.close()
        raise RegistryError(f"{message}; and the registry could not record it: {also.message}", also.hint) from err
    progress.close()
    return Outcome(Status.FAILED, r.run_id, r.run_dir, EXIT_FAILED, message)


def _error_report(run_dir: Path, text: str) -> str:
    """Write error.txt; where it cannot be written (a full disk, a removed folder) the report goes
    to stderr instead. Returns where it is, in words."""
    path = run_dir / "error.txt"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"ftc: cannot write {path} ({err.strerror or err}); the error report:\n{text}", file=sys.stderr,
              flush=True)
        return "the error report on stderr"
    return str(path)


def disk_full(err: BaseException) -> OSError | None:
    """The no-space (ENOSPC) or over-quota (EDQUOT) error behind `err`, following its causes (a
    library may wrap it), else None."""
    import errno

    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _disk_full_message(r: _Run, err: OSError) -> str:
    """What a full disk stopped, what the run folder keeps, and how to go on."""
    from ftc.runtime.checkpoints import COMPLETE, step_of

    what = f" writing {err.filename}" if err.filename else ""
    done = sorted((p.parent for p in r.run_dir.rglob(COMPLETE)), key=lambda p: (step_of(p) or -1, str(p)))
    kept = (f"{len(done)} complete checkpoint(s), the last {done[-1].relative_to(r.run_dir)}, which --resume "
            "continues from" if done else "no complete checkpoint (--resume trains again from the start)")
    return (f"the disk is full ({err.strerror or 'no space left on device'}{what}): the run stopped; {r.run_dir} "
            f"keeps the plan, the events and {kept}. Free space on that disk, then continue with "
            f"`ftc run {r.spec_path} --resume`")


class Registrar:
    """The plan's register step: judge the gates, move the final model into the store, record the
    run with its verdict, mirror it to MLflow. The executor calls it; run() reads `outcome`."""

    def __init__(self, registry: Any, store: Any, r: _Run, progress: Progress) -> None:
        self.registry, self.store, self.r, self.progress = registry, store, r, progress
        self.outcome: Outcome | None = None

    def __call__(self, state: Any) -> None:
        r = self.r
        passed = bool(state.gates) and all(g.passed for g in state.gates)
        final = state.train.get("train.policy") or state.train.get("train")
        status = Status.PROMOTED if passed else Status.REJECTED
        r.record = record = r.record.but(
            status=status.value, gates=tuple(state.gates),
            metrics={k: getattr(v, "metrics", v) for k, v in state.results.items()},
            slices={k: v.slices for k, v in state.results.items() if hasattr(v, "slices")},
            extra={k: v.extra for k, v in state.results.items() if getattr(v, "extra", None)},
            history=tuple(e for e in self.progress.history if e.get("event") in ("step", "eval")))
        with _sigterm_ignored():  # storing and recording the outcome takes seconds: let it complete
            artifact = _finish(self.registry, self.store, r.run_dir, r.run_id, status, record, final=final)
        _mirror(self.registry, r.run_id, r.tracking)
        verdict = (f"gates passed: model promoted as the active `{r.checked.name}` "
                   f"({artifact.path if artifact else ''})" if passed else "gates failed: model NOT promoted")
        self.outcome = Outcome(status, r.run_id, r.run_dir, EXIT_PROMOTED if passed else EXIT_GATES, verdict)


def _mirror(registry: Any, run_id: str, tracking: Any) -> None:
    """Mirror the finished record into MLflow when the spec or `--mlflow` asks (a view of the registry,
    which stays the source of truth: any MLflow failure is one warning on stderr)."""
    if tracking is None:
        return
    from ftc.runtime.tracking import log_run, redact_uri

    row = registry.get(run_id)
    mlflow_id = log_run(row, tracking) if row else None
    if mlflow_id:
        ref = MlflowRef(uri=redact_uri(tracking.uri), run_id=mlflow_id)
        registry.update_record(run_id, lambda r: r.but(mlflow=ref))


def _store_artifact(store: Any, final: Any) -> ArtifactRecord:
    """Move the final model (and the merged one) into the content-addressed store."""
    from ftc.runtime.store import tree_digest

    placed: dict[str, tuple[str | None, str | None, bool | None]] = {}  # folder, sha256, stored new
    error = None
    for key, folder in (("path", final.model_dir), ("merged", final.merged_dir)):
        if folder is None:
            placed[key] = (None, None, None)
            continue
        digest = None
        try:
            digest = tree_digest(Path(folder))
            where, digest, new = store.put(Path(folder), digest)
        except OSError as err:  # the model stays usable where training left it
            placed[key], error = (str(folder), digest, None), f"{type(err).__name__}: {err}"
            continue
        placed[key] = (str(where), digest, new)
    (path, sha, new), (merged, merged_sha, merged_new) = placed["path"], placed["merged"]
    return ArtifactRecord(kind=final.kind, source=str(final.model_dir), path=path, sha256=sha, stored_new=new,
                          merged=merged, merged_sha256=merged_sha, merged_stored_new=merged_new,
                          store=error is None, store_error=error)


def _finish(registry: Any, store: Any, run_dir: Path, run_id: str, status: Status, record: RunRecord,
            final: Any = None) -> ArtifactRecord | None:
    """Store the artifact and record the outcome under the store's shared lock (gc waits), and
    keep a copy of the record beside the run (record.json) in case the registry cannot take it."""
    from ftc.runtime.registry import RegistryError

    artifact = None
    record = record.but(status=status.value)
    try:
        with store.lock(exclusive=False, wait=max(300.0, registry.timeout)):
            if final is not None:
                artifact = _store_artifact(store, final)
                record = record.but(artifact=artifact)
            _write_record(run_dir, record)
            registry.finish(run_id, status.value, record)
    except RegistryError as err:
        _write_record(run_dir, record)
        raise RegistryError(f"{err.message} (the outcome of run {run_id}, {status.value}, is kept in "
                            f"{run_dir / 'record.json'})", err.hint) from err
    return artifact


def _write_record(run_dir: Path, record: RunRecord) -> None:
    tmp = run_dir / ".record.json.tmp"
    try:
        tmp.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, run_dir / "record.json")
    except OSError:
        pass


class _sigterm_as_interrupt:
    """SIGTERM (a scheduler, `kill`, a container stop) ends the run like Ctrl-C: recorded as
    interrupted, resumable. Only in the main thread (signal handlers cannot be set elsewhere)."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.old: Any = None
        if threading.current_thread() is threading.main_thread():
            def stop(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt("SIGTERM")

            self.old = signal.signal(signal.SIGTERM, stop)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


class _sigterm_ignored:
    """While the outcome is being recorded, a second SIGTERM does not cut the record short."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.old: Any = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


def _dry_run(plan: Plan, checked: Any, out: Any) -> Outcome:
    """The same walk with an executor that does no work: no run folder, no registry record."""
    import tempfile

    from ftc.runtime.executor import DryRunExecutor, RunState, execute

    with tempfile.TemporaryDirectory(prefix="ftc-dry-") as tmp:
        progress = Progress(Path(tmp), 1, stream=out)
        execute(plan, RunState(plan, checked, Path(tmp), progress), DryRunExecutor())
        progress.close()
    steps = sum(int(n.estimate.get("steps") or 0) for n in plan.nodes if n.kind.startswith("train"))
    return Outcome(Status.DRY_RUN, "", Path("."), EXIT_PROMOTED,
                   f"dry run of plan {plan.hash[:12]}: {len(plan.nodes)} steps, ~{steps} training steps; nothing ran")
