"""Optional MLflow tracking (runtime/tracking.py): a registry row mirrored into a local SQLite
MLflow store: params, tags, step series and final metrics, the model folder as artifacts, and for
a promoted run a registered model version with its alias. Rejected runs are not registered; a
store that cannot be used gives one warning, never an exception; `ftc check` never imports MLflow.

Tests that talk to MLflow skip when the `mlflow` extra is not installed (`pip install -e '.[mlflow]'`);
the others (settings, names, the missing-mlflow warning, imports) always run. One store serves the
module (creating an MLflow database runs its migrations: seconds); each test uses its own experiment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.docs import compose_example
from ftc.runtime.runrecord import ArtifactRecord, RunRecord
from ftc.runtime.tracking import (
    MlflowSettings,
    TrackingError,
    log_run,
    metric_name,
    redact_uri,
    settings_for_run,
    settings_from_spec,
    settings_from_uri,
    step_series,
)
from tests.unit.test_imports import imported_modules

STEPS = 6
EVAL_STEPS = (3, 6)


# --- a synthetic registry row ----------------------------------------------------------------------

def _artifact(folder: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file({"lora_A": np.arange(8, dtype=np.float32).reshape(2, 4)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}\n', encoding="utf-8")
    return folder


def make_row(tmp: Path, run_id: str, status: str = "promoted", spec: str = "triage") -> dict[str, Any]:
    history: list[dict[str, Any]] = [{"event": "eval", "id": "eval.base.test", "split": "test", "model": "base",
                                      "f1.macro": 0.2}]
    for step in range(1, STEPS + 1):
        history.append({"event": "step", "step": step, "epoch": step / STEPS, "loss": 2.0 - 0.1 * step,
                        "grad_norm": 0.5 + step, "lr": 1e-3 * step, "rss_mb": 900.0})
        if step in EVAL_STEPS:
            history.append({"event": "eval", "step": step, "split": "val", "loss": 1.9 - 0.1 * step,
                            "accuracy": 0.1 * step})
    artifact = _artifact(tmp / run_id / "adapter")
    record = {
        "run_id": run_id, "status": status, "ftc_version": "0.1.0", "plan_hash": "ab" * 32, "seed": 42,
        "spec": {"name": spec, "path": "specs/triage.ftspec", "sha256": "cd" * 32},
        "spec_text": f'spec "{spec}" {{ }}\n',
        "base": {"ref": "hf:org/encoder", "revision": "3f2a9c1", "sha256": None, "local": False},
        "data": {"sizes": {"train": 168, "val": 40, "test": 40}, "hashes": {"train": "11" * 32, "test": "22" * 32}},
        "method": {"kind": "lora", "rank": 8, "alpha": 16.0, "targets": ["query", "value"]},
        "training": {"train": {"train": {"learning_rate": 0.003, "epochs": 3}}},
        "versions": {"torch": "2.14.1", "timm": None}, "python": "3.11.7",
        "git_commit": "0123456789abcdef", "user": "ana",
        "artifact": {"path": str(artifact), "kind": "adapter", "sha256": "ef" * 32, "merged": None},
        "gates": [{"gate": "f1.macro >= 0.85 on test", "passed": status == "promoted", "value": 0.9, "before": 0.2}],
        "metrics": {"tuned:test": {"f1.macro": 0.9, "loss": 0.4}, "base:test": {"f1.macro": 0.2, "loss": 1.4},
                    "latency": {"p50": 0.003, "p95": 0.011, "p99": 0.014, "n": 50, "device": "cpu",
                                "samples": [0.1, 0.2]}},
        "slices": {"tuned:test": {"email": {"f1.macro": 0.8, "n": 16.0}}},
        "history": history,
    }
    return {"id": run_id, "spec_name": spec, "status": status, "plan_hash": "ab" * 32,
            "started": 1_700_000_000.0, "finished": 1_700_000_060.0, "record": RunRecord.from_json(record)}


# --- settings (no MLflow needed) -----------------------------------------------------------------

def _checked(folder: Path, tracking: str) -> Any:
    path = folder / "spec.ftspec"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(compose_example(tracking), encoding="utf-8")
    result = check_file(path, CheckOptions(no_data=True))
    assert result.ok and result.checked is not None, [d.message for d in result.diagnostics]
    return result.checked


def test_spec_settings_resolve_local_paths_against_the_spec(tmp_path: Path) -> None:
    checked = _checked(tmp_path / "proj", 'tracking { mlflow "sqlite:///ml/runs.db"; register "triage-clf" '
                                          'alias "prod" }')
    s = settings_from_spec(checked)
    db = (tmp_path / "proj" / "ml" / "runs.db").resolve()
    assert s == MlflowSettings(f"sqlite:///{db.as_posix()}", None, "triage-clf", "prod",
                               (db.parent / "mlartifacts").as_posix())
    checked = _checked(tmp_path / "p2", 'tracking { mlflow "http://mlflow.internal:5000"; experiment "t"\n'
                                        'artifacts "arts"; register false }')
    s = settings_from_spec(checked)
    assert s is not None and (s.uri, s.experiment, s.register, s.alias) == ("http://mlflow.internal:5000", "t",
                                                                             False, "champion")
    assert s.artifacts == (tmp_path / "p2" / "arts").resolve().as_posix()
    assert settings_from_spec(_checked(tmp_path / "p3", "")) is None


def test_inherited_tracking_is_relative_to_the_file_that_wrote_it(tmp_path: Path) -> None:
    (tmp_path / "team.ftspec").write_text('defaults {\n  tracking { mlflow "sqlite:///ml/team.db"; '
                                          'alias "prod" }\n}\n', encoding="utf-8")
    body = compose_example("").replace('spec "example" {', 'extends "../team.ftspec"\nspec "example" {', 1)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "spec.ftspec").write_text(body, encoding="utf-8")
    result = check_file(tmp_path / "exp" / "spec.ftspec", CheckOptions(no_data=True))
    assert result.ok and result.checked is not None, [d.message for d in result.diagnostics]
    s = settings_from_spec(result.checked)
    assert s is not None and s.uri == f"sqlite:///{(tmp_path / 'ml' / 'team.db').resolve().as_posix()}"
    assert s.alias == "prod"


def test_cli_uri_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = settings_from_uri("runs.db")  # a bare .db path is a SQLite store, relative to the working folder
    assert s.uri == f"sqlite:///{(tmp_path / 'runs.db').resolve().as_posix()}" and s.register is True
    assert settings_from_uri("https://host/mlflow").uri == "https://host/mlflow"
    assert settings_from_uri("file:old/mlruns").uri == (tmp_path / "old" / "mlruns").resolve().as_uri()
    assert settings_from_uri("sqlite:////abs/runs.db").uri == "sqlite:////abs/runs.db"
    with pytest.raises(TrackingError) as err:
        settings_from_uri("sqlit:///x.db")
    assert "did you mean `sqlite`" in err.value.hint and "--mlflow" in err.value.hint
    with pytest.raises(TrackingError):
        settings_from_uri("mlruns")
    # --mlflow replaces the spec's store and keeps its experiment, registered name and alias
    checked = _checked(tmp_path / "proj", 'tracking { mlflow "sqlite:///a.db"; register "m" alias "prod" }')
    s2 = settings_for_run(checked, "b.db")
    assert s2 is not None and s2.uri.endswith(f"{tmp_path.resolve().as_posix()}/b.db")
    assert (s2.register, s2.alias) == ("m", "prod")
    assert settings_for_run(_checked(tmp_path / "p2", ""), None) is None


def test_metric_names_are_ones_mlflow_accepts() -> None:
    assert metric_name("", "data/general.jsonl", "f1.macro") == "data/general.jsonl/f1.macro"
    assert metric_name("base", "../x:y", "acc@1") == "base/x_y/acc_1"
    assert metric_name("a//b", ".", "c") == "a/b/c"
    assert redact_uri("https://ana:s3cret@host:5000/x") == "https://ana:***@host:5000/x"
    assert redact_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_step_series_splits_stages_that_restart() -> None:
    hist = [{"event": "step", "step": s, "loss": 1.0} for s in (1, 2)] + \
           [{"event": "step", "step": s, "loss": 2.0, "lr": float("nan")} for s in (1, 2, 3)] + \
           [{"event": "eval", "id": "eval.tuned.test", "split": "test", "f1": 0.5}]  # final, no step
    names = [n for n, _, _ in step_series(hist)]
    assert names == ["train/loss"] * 2 + ["stage2/train/loss"] * 3


def test_missing_mlflow_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    warnings: list[str] = []
    assert log_run(make_row(tmp_path, "r-1"), MlflowSettings("sqlite:///x.db"), warn=warnings.append) is None
    assert len(warnings) == 1 and "pip install 'ftc[mlflow]'" in warnings[0] and "r-1" in warnings[0]


def test_check_never_imports_mlflow(tmp_path: Path) -> None:
    spec = tmp_path / "tracked.ftspec"
    spec.write_text(compose_example('tracking { mlflow "sqlite:///mlruns.db" }'), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FTC_DEBUG")}
    code = "import ftc.compiler.cli, ftc.runtime.tracking, sys; print('mlflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftc", "check", "--no-data", spec.name],
                          check=False, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "All checks passed: 1 file\n", proc.stdout + proc.stderr
    modules = imported_modules(proc.stderr)
    assert "ftc.compiler.check" in modules
    assert not [m for m in modules if m.split(".")[0] in ("mlflow", "sqlalchemy", "alembic")]


# --- logging into a real local store ---------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlflow")
    return tmp_path_factory.mktemp("mlflow") / "store" / "mlflow.db"


def _client(settings: MlflowSettings) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=settings.uri, registry_uri=settings.uri)


def _settings(store: Path, experiment: str, **kw: Any) -> MlflowSettings:
    return MlflowSettings(f"sqlite:///{store.as_posix()}", experiment,
                          artifacts=(store.parent / "mlartifacts").as_posix(), **kw)


def test_promoted_run_is_logged_and_registered_with_its_alias(store: Path, tmp_path: Path) -> None:
    settings = _settings(store, "promoted")
    row = make_row(tmp_path, "triage-1")
    warnings: list[str] = []
    run_id = log_run(row, settings, warn=warnings.append)
    assert run_id is not None and warnings == []
    client = _client(settings)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "triage-1"
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_060_000)
    p = run.data.params
    assert (p["method.rank"], p["method.kind"], p["method.targets"]) == ("8", "lora", '["query", "value"]')
    assert (p["seed"], p["base.ref"], p["base.revision"], p["data.size.train"]) == ("42", "hf:org/encoder",
                                                                                  "3f2a9c1", "168")
    assert (p["data.sha256.train"], p["plan_hash"], p["ftc_version"]) == ("11" * 32, "ab" * 32, "0.1.0")
    assert p["train.learning_rate"] == "0.003" and "base.sha256" not in p and "versions.timm" not in p
    t = run.data.tags
    assert (t["ftc.run_id"], t["ftc.status"], t["ftc.spec"], t["ftc.gates"]) == ("triage-1", "promoted",
                                                                                 "triage", "1/1 passed")
    assert (t["mlflow.source.git.commit"], t["mlflow.user"]) == ("0123456789abcdef", "ana")
    # step series: one point per training step, evaluations at their steps
    loss = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in loss] == list(range(1, STEPS + 1))
    assert [round(m.value, 6) for m in loss] == [round(2.0 - 0.1 * s, 6) for s in range(1, STEPS + 1)]
    assert len(client.get_metric_history(run_id, "train/grad_norm")) == STEPS
    assert len(client.get_metric_history(run_id, "train/lr")) == STEPS
    assert [m.step for m in client.get_metric_history(run_id, "val/accuracy")] == list(EVAL_STEPS)
    assert "train/rss_mb" not in run.data.metrics
    # final metrics: after (unprefixed), before (base/), slices, latency
    m = run.data.metrics
    assert (m["test/f1.macro"], m["base/test/f1.macro"], m["test.email/f1.macro"]) == (0.9, 0.2, 0.8)
    assert (m["latency/p95"], m["latency/p99"]) == (0.011, 0.014) and "latency/n" not in m
    # artifacts: the model folder as it is, and ftc's record and spec
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    adapter = Path(row["record"].artifact.path)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (local / "model" / name).read_bytes() == (adapter / name).read_bytes()
    assert (local / "ftc" / "record.json").is_file() and (local / "ftc" / "triage.ftspec").is_file()
    assert not list(local.rglob("*.pkl"))
    # the registered model (named after the spec) has a version from this run, with the alias
    version = client.get_model_version_by_alias("triage", "champion")
    assert version.run_id == run_id and version.source.endswith("/model")
    assert version.tags["ftc.run_id"] == "triage-1"
    # logging the same row again adds nothing
    assert log_run(row, settings, warn=warnings.append) == run_id and warnings == []
    assert len(client.search_model_versions("name='triage'")) == 1
    # the next promoted run gets version 2 and the alias moves to it
    second = log_run(make_row(tmp_path, "triage-2"), settings)
    assert client.get_model_version_by_alias("triage", "champion").run_id == second != run_id


def test_rejected_run_is_logged_but_not_registered(store: Path, tmp_path: Path) -> None:
    settings = _settings(store, "rejected")
    run_id = log_run(make_row(tmp_path, "ret-1", status="rejected", spec="ret"), settings)
    assert run_id is not None
    client = _client(settings)
    run = client.get_run(run_id)
    assert run.data.tags["ftc.status"] == "rejected" and run.data.tags["ftc.gates"] == "0/1 passed"
    assert [a.path for a in client.list_artifacts(run_id, "model")]  # the model is still kept as an artifact
    assert client.search_model_versions(f"run_id='{run_id}'") == []
    assert client.search_registered_models(filter_string="name='ret'") == []


def test_registered_name_and_alias_from_settings(store: Path, tmp_path: Path) -> None:
    settings = _settings(store, "named", register="triage-clf", alias="prod")
    run_id = log_run(make_row(tmp_path, "named-1", spec="named"), settings)
    client = _client(settings)
    assert client.get_model_version_by_alias("triage-clf", "prod").run_id == run_id
    off = _settings(store, "unregistered", register=False)
    run_id = log_run(make_row(tmp_path, "off-1", spec="off"), off)
    assert run_id is not None and client.search_model_versions(f"run_id='{run_id}'") == []


def test_missing_artifact_folder_logs_the_run_without_a_model(store: Path, tmp_path: Path) -> None:
    row = make_row(tmp_path, "gone-1", spec="gone")
    row["record"] = row["record"].but(artifact=ArtifactRecord(kind="adapter", path=str(tmp_path / "nowhere")))
    warnings: list[str] = []
    run_id = log_run(row, _settings(store, "gone"), warn=warnings.append)
    assert run_id is not None and len(warnings) == 2 and "missing" in warnings[0]
    assert _client(_settings(store, "gone")).search_model_versions(f"run_id='{run_id}'") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unusable_stores_give_a_warning_not_an_error(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_text("this is not a database\n", encoding="utf-8")
    row = make_row(tmp_path, "bad-1")
    for uri in (f"http://127.0.0.1:{_closed_port()}", f"sqlite:///{not_a_db.as_posix()}"):
        warnings: list[str] = []
        assert log_run(row, MlflowSettings(uri), warn=warnings.append) is None
        assert len(warnings) == 1 and "recorded in the ftc registry as usual" in warnings[0], warnings
        assert uri in warnings[0] and ("does not answer" in warnings[0]) == uri.startswith("http")


def test_ftc_run_mirrors_a_promoted_run_into_mlflow(store: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`ftc run --mlflow URI` end to end: the registry record names the MLflow run, which holds the
    lineage params, the loss curve, the adapter files and a registered version under the alias."""
    import shutil

    from ftc.compiler.cli import main
    from ftc.runtime.registry import Registry
    from tests.conftest import ROOT

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    db = tmp_path / "mlruns.db"
    with pytest.raises(SystemExit) as done:
        main(["run", "specs/ticket-triage/ticket-triage.ftspec", "--mlflow", f"sqlite:///{db}"])
    assert done.value.code == 0
    [row] = Registry().runs("ticket-triage")
    mirrored = row["record"].mlflow
    settings = settings_from_uri(f"sqlite:///{db}")
    client = _client(settings)
    assert mirrored is not None
    found = client.get_run(mirrored.run_id)
    assert found.data.tags["ftc.run_id"] == row["id"] and found.data.tags["ftc.status"] == "promoted"
    assert found.data.params["seed"] == str(row["record"].seed)
    steps = [e for e in row["record"].history if e.get("event") == "step" and "loss" in e]
    assert len(client.get_metric_history(found.info.run_id, "train/loss")) == len(steps)
    files = {f.path for f in client.list_artifacts(found.info.run_id, "model")}
    assert "model/adapter_model.safetensors" in files
    version = client.get_model_version_by_alias("ticket-triage", "champion")
    assert version.run_id == found.info.run_id
