"""Optional MLflow tracking: mirror a finished run's registry record into MLflow.

The embedded registry (`.ftc/`) is the source of truth; MLflow is a view of it for teams that
already use one. `log_run(row, settings)` takes a row of `Registry().get(run_id)` and logs:

  params    method settings (`method.rank`), seed, base (ref, revision, sha256), data sizes and
            hashes, plan and spec hashes, training settings, ftc and library versions
  metrics   the step series of the history (`train/loss`, `train/grad_norm`, `train/lr` and the
            in-training evaluations such as `val/loss`, at their steps); the final metrics per split
            after (`test/f1.macro`) and before (`base/test/f1.macro`), per slice
            (`test.email/f1.macro`), and latency percentiles (`latency/p95`, seconds)
  tags      `ftc.run_id`, `ftc.status`, `ftc.spec`, `ftc.plan_hash`, gates passed, and MLflow's own
            `mlflow.user` and `mlflow.source.git.commit`
  artifacts the model folder as it is (`model/`: safetensors and configs, no pickle), the merged
            model when there is one (`merged/`), and `ftc/record.json` and `ftc/<spec>.ftspec`
  registry  for a promoted run: a version of the registered model (the spec's name unless the
            spec says otherwise) whose source is `model/`, and the alias (`champion`) moved to it

No MLflow model flavour is used: `mlflow.transformers` wants a pipeline and imports the ML stack
at logging time, while the artifact folder already loads with plain transformers/peft. MLflow is
imported only here, inside the functions (`ftc check` never imports it). Any failure (mlflow not
installed, a store that cannot be opened, a server that does not answer) becomes one warning and
`log_run` returns None: the ftc run and its record are unaffected.

Local stores: a relative `sqlite:///` or `file:` path is relative to the spec's folder (to the
working directory for `ftc run --mlflow URI`); a new experiment in a SQLite store keeps its
artifacts in `mlartifacts/` beside the database unless `artifacts` says where.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ftc.compiler.schema import tracking_uri_problem
from ftc.runtime.runrecord import ArtifactRecord, RunRecord, RunRow

Warn = Callable[[str], None]

_STATUS = {"promoted": "FINISHED", "rejected": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
_STEP_KEYS = ("loss", "grad_norm", "lr", "epoch", "samples_per_s", "tokens_per_s")
_BAD_CHARS = re.compile(r"[^\w.\- /]")


class TrackingError(ValueError):
    """A tracking URI given on the command line that MLflow cannot open (a usage error)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class MlflowSettings:
    """Where and how a run is mirrored. `experiment` None: the spec's name; `register` True: a
    registered model named after the spec, a string: that name, False: no registration."""

    uri: str  # tracking (and registry) URI; local paths already absolute
    experiment: str | None = None
    register: str | bool = True
    alias: str = "champion"
    artifacts: str | None = None  # artifact location for a new experiment (absolute path or URI)


# --- settings ------------------------------------------------------------------------------------

def absolute_uri(uri: str, base_dir: Path) -> str:
    """`uri` with a relative SQLite or file path made absolute against `base_dir`."""
    scheme = uri.partition(":")[0].lower()
    if scheme == "sqlite" and uri[len("sqlite:///"):] not in ("", ":memory:"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            return "sqlite:///" + (base_dir / path).resolve().as_posix()
    elif scheme == "file":
        parsed = urlparse(uri)
        path = unquote(parsed.path)
        if not parsed.netloc and not path.startswith("/"):
            return (base_dir / path).resolve().as_uri()
    return uri


def _sqlite_file(uri: str) -> Path | None:
    """The database file of an absolute SQLite URI."""
    path = uri[len("sqlite:///"):]
    return Path(path) if uri.lower().startswith("sqlite:///") and path.startswith("/") else None


def _default_artifacts(uri: str) -> str | None:
    """A SQLite store keeps new experiments' artifacts beside the database (MLflow's own default
    is `./mlruns` in whatever folder the process runs in)."""
    db = _sqlite_file(uri)
    return (db.parent / "mlartifacts").as_posix() if db is not None else None


def settings_from_spec(checked: Any) -> MlflowSettings | None:
    """The spec's `tracking` block as settings (None when the spec has none)."""
    tr = getattr(checked.spec, "tracking", None)
    if tr is None or not tr.mlflow:
        return None
    uri = absolute_uri(tr.mlflow, checked.dir_of(tr.at("mlflow")))
    artifacts = _default_artifacts(uri)
    if tr.artifacts:
        artifacts = absolute_uri(tr.artifacts, checked.dir_of(tr.at("artifacts"))) if ":" in tr.artifacts \
            else checked.resolve_path(tr.artifacts, tr.at("artifacts")).resolve().as_posix()
    return MlflowSettings(uri, tr.experiment, tr.register, tr.alias, artifacts)


def settings_from_uri(uri: str, base_dir: Path | None = None) -> MlflowSettings:
    """Settings for `ftc run --mlflow URI`: relative local paths against the working directory.
    A bare path to a `.db` file is taken as a SQLite store. Raises TrackingError for a URI MLflow
    cannot open."""
    base = base_dir or Path.cwd()
    if uri.endswith(".db") and "://" not in uri and not uri.lower().startswith("sqlite:"):
        uri = "sqlite:///" + uri
    problem = tracking_uri_problem(uri)
    if problem is not None:
        raise TrackingError(problem[0], problem[1].replace("`mlflow ", "`--mlflow "))
    full = absolute_uri(uri, base)
    return MlflowSettings(full, artifacts=_default_artifacts(full))


def settings_for_run(checked: Any, cli_uri: str | None = None) -> MlflowSettings | None:
    """What `ftc run` mirrors to: `--mlflow URI` wins over the spec's URI and keeps the spec's
    experiment, registered model and alias; None when neither asks for tracking."""
    spec = settings_from_spec(checked)
    if cli_uri is None:
        return spec
    cli = settings_from_uri(cli_uri)
    return cli if spec is None else replace(spec, uri=cli.uri, artifacts=cli.artifacts)


# --- what is logged --------------------------------------------------------------------------------

def metric_name(*parts: str) -> str:
    """A name MLflow accepts: allowed characters only, no empty, `.` or `..` path parts."""
    pieces = [p for part in parts for p in _BAD_CHARS.sub("_", part).split("/") if p.strip(" .")]
    return "/".join(pieces)[:250] or "_"


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flat(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif value is not None:
        out[prefix] = value


def params_of(rec: RunRecord) -> dict[str, str]:
    raw: dict[str, Any] = {}
    _flat("method", rec.method, raw)
    _flat("base", {k: v for k, v in rec.base.items() if k != "local"}, raw)
    _flat("data.size", rec.data.get("sizes") or {}, raw)
    _flat("data.sha256", rec.data.get("hashes") or {}, raw)
    for node, settings in sorted(rec.training.items()):  # `train`, or RLHF's stages
        _flat(node, settings.get("train") or {}, raw)
        _flat("signal" if node == "train" else f"{node}.signal", settings.get("signal") or {}, raw)
    _flat("versions", rec.versions, raw)
    raw.update({"seed": rec.seed, "plan_hash": rec.plan_hash, "spec_sha256": rec.spec.get("sha256"),
                "ftc_version": rec.ftc_version, "python": rec.python})
    out = {}
    for k, v in raw.items():
        if v is None:
            continue
        text = json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else str(v)
        out[metric_name(k)] = text[:6000]
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def step_series(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    """(name, value, step) for each step and in-training evaluation event. A stage whose steps
    start again (RLHF: reward model, then policy) gets its own names: `stage2/train/loss`."""
    out: list[tuple[str, float, int]] = []
    stage, last = 1, -1
    for e in history:
        step = e.get("step")
        if not isinstance(step, int) or e.get("event") not in ("step", "eval"):
            continue
        if e["event"] == "step":
            if step <= last:
                stage += 1
            last = step
        prefix = f"stage{stage}/" if stage > 1 else ""
        if e["event"] == "step":
            group, keys = "train", [k for k in _STEP_KEYS if k in e]
        else:
            group = str(e.get("split") or "eval")
            keys = [k for k in e if k not in ("event", "step", "split", "id", "model")]
        for k in keys:
            x = _number(e[k])
            if x is not None:
                out.append((metric_name(prefix + group, k), x, step))
    return out


def final_metrics(rec: RunRecord) -> dict[str, float]:
    """Metrics per evaluated split (tuned model unprefixed, others by their role), per slice, latency."""
    out: dict[str, float] = {}
    for key, metrics in rec.metrics.items():
        if key == "latency":
            out.update((metric_name("latency", k), x) for k, x in _numbers(metrics) if k != "n")
            continue
        who, _, split = str(key).partition(":")
        role = "" if who == "tuned" else who
        out.update((metric_name(role, split, k), x) for k, x in _numbers(metrics))
        for slc, sm in rec.slices.get(key, {}).items():
            if isinstance(sm, dict):
                out.update((metric_name(role, f"{split}.{slc}", k), x) for k, x in _numbers(sm))
    return out


def _numbers(values: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    for k, v in values.items():
        x = _number(v)
        if x is not None:
            yield k, x


def tags_of(row: RunRow) -> dict[str, str]:
    rec = row["record"]
    gates = rec.gates
    tags = {"ftc.run_id": row["id"], "ftc.status": row["status"], "ftc.spec": row["spec_name"],
            "ftc.plan_hash": row["plan_hash"], "ftc.spec_path": rec.spec_path,
            "ftc.artifact_sha256": rec.artifact.sha256 if rec.artifact else None,
            "ftc.gates": f"{sum(1 for g in gates if g.passed)}/{len(gates)} passed" if gates else None,
            "ftc.error": rec.error, "mlflow.user": rec.user,
            "mlflow.source.git.commit": rec.git_commit, "mlflow.source.type": "LOCAL",
            "mlflow.source.name": rec.spec_path}
    return {k: str(v)[:8000] for k, v in tags.items() if v is not None}


# --- logging -------------------------------------------------------------------------------------

def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def log_run(row: RunRow, settings: MlflowSettings, *, warn: Warn | None = None) -> str | None:
    """Mirror one registry row into MLflow; the MLflow run id, or None (after one warning) when
    MLflow cannot be used. Never raises for an MLflow problem."""
    warn = warn or _stderr
    try:
        import importlib

        mlflow: Any = importlib.import_module("mlflow")
    except ImportError:
        warn("MLflow tracking was asked for but mlflow is not installed: `pip install 'ftc[mlflow]'`; "
             f"run {row.get('id')} is recorded in the ftc registry as usual")
        return None
    try:
        with _quiet():
            return _log(mlflow, row, settings, warn)
    except Exception as err:  # noqa: BLE001 (MLflow raises many kinds; none may fail an ftc run)
        warn(f"MLflow tracking to {redact_uri(settings.uri)} failed: {_reason(err)}; "
             f"run {row.get('id')} is recorded in the ftc registry as usual")
        return None


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if any(s in text for s in ("Max retries exceeded", "Connection refused", "NewConnectionError")):
        return "the server does not answer"
    return f"{type(err).__name__}: {text[:200]}" + ("..." if len(text) > 200 else "")


def redact_uri(uri: str) -> str:
    """The URI without a password (`http://user:secret@host` -> `http://user:***@host`)."""
    return re.sub(r"(//[^/:@]+:)[^/@]+@", r"\1***@", uri)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and alembic's INFO logs off, and bounded HTTP retries (MLflow's default retries
    an unreachable server for minutes); the user's own MLFLOW_HTTP_* settings win."""
    import warnings

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    added = {k: v for k, v in _HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for k in added:
            os.environ.pop(k, None)


def _log(mlflow: Any, row: RunRow, settings: MlflowSettings, warn: Warn) -> str:
    db = _sqlite_file(settings.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes no folders
    client = mlflow.MlflowClient(tracking_uri=settings.uri, registry_uri=settings.uri)
    experiment_id = _experiment(client, settings.experiment or row["spec_name"], settings.artifacts)
    done = _existing(client, experiment_id, row)
    if done is not None:
        return done
    started = int(float(row.get("started") or 0) * 1000) or None
    run = client.create_run(experiment_id, start_time=started, run_name=row["id"])
    run_id: str = run.info.run_id
    try:
        source = _fill(client, run_id, row, warn)
    except BaseException:
        with contextlib.suppress(Exception):  # not left RUNNING forever
            client.set_terminated(run_id, status="FAILED")
        raise
    if row.get("status") == "promoted" and settings.register is not False:
        if source is None:
            warn(f"run {row['id']} was promoted but its artifact folder is missing: no MLflow model version")
        else:
            name = settings.register if isinstance(settings.register, str) else row["spec_name"]
            _register(client, name, settings.alias, source, run_id, row)
    return run_id


def _fill(client: Any, run_id: str, row: RunRow, warn: Warn) -> str | None:
    """Params, tags, metrics and artifacts; the run ends with its ftc status. The model's URI."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    rec = row["record"]
    now = int(float(row.get("finished") or row.get("started") or 0) * 1000)
    series = step_series(rec.history)
    last_step = max((s for _, _, s in series), default=0)
    metrics = [Metric(k, v, now, s) for k, v, s in series]
    metrics += [Metric(k, v, now, last_step) for k, v in sorted(final_metrics(rec).items())]
    params = [Param(k, v) for k, v in sorted(params_of(rec).items())]
    tags = [RunTag(k, v) for k, v in sorted(tags_of(row).items())]
    for i in range(0, max(len(params), len(tags)), 100):  # MLflow's batch limits: 100 params/tags,
        client.log_batch(run_id, params=params[i:i + 100], tags=tags[i:i + 100])
    for i in range(0, len(metrics), 1000):  # 1000 metrics
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    source = _log_artifacts(client, run_id, row, rec, warn)
    status = RunStatus.to_string(getattr(RunStatus, _STATUS.get(str(row.get("status")), "FINISHED")))
    client.set_terminated(run_id, status=status, end_time=now or None)
    return source


def _experiment(client: Any, name: str, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifacts))
    except Exception:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _existing(client: Any, experiment_id: str, row: RunRow) -> str | None:
    """The MLflow run already mirroring this ftc run in this status (logging twice adds nothing)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`ftc.run_id` = '{row['id']}'", max_results=5)
    for r in runs:
        if r.data.tags.get("ftc.status") == row.get("status") and r.info.status != "RUNNING":
            return str(r.info.run_id)
    return None


def _log_artifacts(client: Any, run_id: str, row: RunRow, rec: RunRecord, warn: Warn) -> str | None:
    """Record, spec and model folders as artifacts; the model's artifact URI (None: no model)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ftc-mlflow-") as tmp:
        folder = Path(tmp) / "ftc"
        folder.mkdir()
        shown = {**row, "record": rec.to_json()}
        (folder / "record.json").write_text(json.dumps(shown, sort_keys=True, indent=1, default=str) + "\n",
                                            encoding="utf-8")
        spec_name = metric_name(str(row.get("spec_name") or "spec")).replace("/", "_")
        if rec.spec_text:
            (folder / f"{spec_name}.ftspec").write_text(rec.spec_text, encoding="utf-8")
        client.log_artifacts(run_id, str(folder), "ftc")
    art = rec.artifact
    model = Path(art.path) if art is not None and art.path else None
    if model is None:
        return None
    if not model.is_dir():
        warn(f"the artifact folder {model} of run {row.get('id')} is missing: not logged to MLflow")
        return None
    client.log_artifacts(run_id, str(model), "model")
    if art is not None and art.merged and Path(art.merged).is_dir():
        client.log_artifacts(run_id, art.merged, "merged")
    base: str = client.get_run(run_id).info.artifact_uri
    return base.rstrip("/") + "/model"


def _register(client: Any, name: str, alias: str, source: str, run_id: str, row: RunRow) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:  # not there yet (RESOURCE_DOES_NOT_EXIST)
        try:
            client.create_registered_model(name, description=f"ftc spec `{row['spec_name']}`")
        except MlflowException:  # created by another process meanwhile
            client.get_registered_model(name)
    art = row["record"].artifact or ArtifactRecord()
    tags = {"ftc.run_id": str(row["id"]), "ftc.artifact_sha256": str(art.sha256 or ""),
            "ftc.artifact_kind": art.kind}
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, alias, str(version.version))
