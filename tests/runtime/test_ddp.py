"""`budget { gpus 2; strategy ddp }` runs the training node as two processes through torchrun, on
this CPU with gloo: the same global batch and seed give the loss sequence of one process, the run
lands one record and an adapter that loads in plain peft, each rank has its own log, and a rank
that fails ends the job with its error and rank in the record."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ftc.runtime.registry import Registry
from ftc.runtime.run import EXIT_FAILED, EXIT_GATES, EXIT_PROMOTED, run
from tests.conftest import ROOT

SPEC = "specs/ticket-triage/ticket-triage.ftspec"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled example without dropout (the ranks draw their own dropout masks, one process one
    stream: without it the two runs compute the same numbers) and without its latency gate."""
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    folder = tmp_path / "specs" / "ticket-triage"
    config = folder / "models" / "tiny-bert" / "config.json"
    cfg = json.loads(config.read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.write_text(json.dumps(cfg))
    spec = folder / "ticket-triage.ftspec"
    spec.write_text(spec.read_text().replace("dropout 0.1", "dropout 0.0")
                    .replace("    gate latency.p95 <= 50ms\n", ""))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    return tmp_path


def _set(project: Path, budget: str, batch: int) -> None:
    spec = project / SPEC
    text = spec.read_text()
    text = text.replace("    gpu_memory 8GB\n", f"    gpu_memory 8GB\n{budget}")
    spec.write_text(text.replace("    precision fp32\n", f"    precision fp32\n    override batch_size {batch}\n"))


def _losses(run_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e.get("event") == "step" and "loss" in e]


def test_two_processes_train_as_one_process_with_the_same_global_batch(project: Path) -> None:
    original = (project / SPEC).read_text()
    _set(project, "", 16)
    one = run(SPEC, max_steps=4)
    assert one.exit_code in (EXIT_PROMOTED, EXIT_GATES), one.message
    (project / SPEC).write_text(original)
    _set(project, "    gpus 2\n    strategy ddp\n", 8)
    two = run(SPEC, max_steps=4)
    assert two.exit_code in (EXIT_PROMOTED, EXIT_GATES), two.message
    a, b = _losses(one.run_dir), _losses(two.run_dir)
    assert len(a) == len(b) == 4 and b == pytest.approx(a, abs=1e-5)
    plan = json.loads((two.run_dir / "plan.json").read_text())
    dist = next(n for n in plan["nodes"] if n["id"] == "train")["params"]["distributed"]
    assert (dist["processes"], dist["per_device_batch"], dist["global_batch"]) == (2, 8, 16)
    records = [r for r in Registry().runs("ticket-triage") if r["id"] == two.run_id]
    assert len(records) == 1 and records[0]["record"].artifact is not None
    logs = two.run_dir / "ranks" / "train" / "logs"
    ranks = {p.parent.name for p in logs.rglob("stderr.log")}
    assert ranks == {"0", "1"}
    # the adapter loads in plain transformers + peft, without ftc
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = Path(str(records[0]["record"].artifact.path))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(cfg["base_model_name_or_path"]),
                              adapter)


def test_a_rank_that_fails_ends_the_job_and_the_record_names_it(project: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 raises as its training starts, while rank 0 waits for it in the process group: torchrun
    stops rank 0, and the run is recorded as failed with rank 1's error."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""\
        import os
        if os.environ.get("RANK") == "1":
            import ftc.runtime.executor as ex

            def failing(spec, kind):
                def step(ctx):
                    raise ValueError("boom on rank 1")
                return step

            ex.backend_step = failing
        """))
    monkeypatch.setenv("PYTHONPATH", str(hook))
    _set(project, "    gpus 2\n    strategy ddp\n", 8)
    outcome = run(SPEC, max_steps=4)
    assert outcome.exit_code == EXIT_FAILED and "rank 1 failed: ValueError: boom on rank 1" in outcome.message
    [row] = Registry().runs("ticket-triage")
    assert row["status"] == "failed" and row["record"].failed_rank == 1
    assert "boom on rank 1" in str(row["record"].error)
    report = json.loads((outcome.run_dir / "ranks" / "train" / "error-rank1.json").read_text())
    assert report["type"] == "ValueError" and "Traceback" in report["traceback"]
