"""Run a training node in several processes through torchrun, from `ftc run`.

A plan node whose parameters say `distributed` (compiler/plan.py: `budget { gpus N; strategy ddp }`)
is not trained in the `ftc run` process: `run_node` starts

    python -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node N \\
        --log-dir RUN_DIR/ranks/NODE/logs --redirects 3 -m ftc.runtime.rank RUN_DIR NODE ...

(torchrun, the launcher that ships with torch: no other package, and the Trainer takes its
environment as it is), follows rank 0's events as they come (progress, the record's history),
and returns rank 0's TrainResult. Evaluation, gates, the registry record and the artifact store
stay in the `ftc run` process: only the training is distributed.

A failing rank ends the whole job: torchrun stops the other ranks, and the error raised here
(`RankFailed`) names the rank that failed first and its error (the others fail after it, on a
closed connection); its traceback is in the rank's error report and log.
Ctrl-C or SIGTERM stop the job's process group before the interruption is recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ftc.runtime.api import TrainResult
from ftc.runtime.dist import node_folder

POLL_S = 0.2  # how often the events file is read while the job runs (progress only: nothing waits on it)


class RankFailed(RuntimeError):
    """A process of a distributed training node failed; `rank` is the first that reported an error."""

    def __init__(self, message: str, rank: int | None) -> None:
        super().__init__(message)
        self.rank = rank


def command(node: Any, state: Any) -> list[str]:
    """The torchrun command for `node` of this run (the plan shows it with RUN_DIR for the folder)."""
    d = node.params["distributed"]
    folder = node_folder(state.run_dir, node.id)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", str(d["nodes"]),
           "--nproc-per-node", str(d["processes"] // d["nodes"]), "--log-dir", str(folder / "logs"),
           "--redirects", "3", "-m", "ftc.runtime.rank", str(state.run_dir), node.id, "--device", state.device]
    if state.max_steps is not None:
        cmd += ["--max-steps", str(state.max_steps)]
    if state.resume:
        cmd.append("--resume")
    if state.time_limit is not None:
        cmd += ["--started", repr(state.time_limit.started)]
    return cmd


def _env(state: Any) -> dict[str, str]:
    env = dict(os.environ)
    roots = getattr(state.checked, "roots", None)
    if roots is not None:  # the ranks check the spec under the run's project root
        env["FTC_ROOT"] = os.pathsep.join(str(f) for f in roots.folders)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, said once here instead of per rank
    return env


def run_node(node: Any, state: Any) -> TrainResult:
    folder = node_folder(state.run_dir, node.id)
    if folder.exists():  # a resumed run starts the node again: old reports are not this job's
        for stale in (*folder.glob("error-rank*.json"), folder / "result.json", folder / "events.jsonl"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(folder / "logs", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").touch()
    cmd = command(node, state)
    state.log({"event": "note", "message": f"{node.id}: {node.params['distributed']['processes']} processes "
                                           f"through torchrun (logs per rank in {folder / 'logs'})"})
    with (folder / "launcher.log").open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, env=_env(state), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _follow(proc, folder / "events.jsonl", state.log)
        except BaseException:
            _stop(proc)
            raise
    if proc.returncode != 0:
        raise _failure(folder, proc.returncode)
    return _result(folder)


def _follow(proc: subprocess.Popen[Any], events: Path, log: Any) -> None:
    """Pass rank 0's events on as they are written, until the job ends (then the rest)."""
    with events.open("r", encoding="utf-8") as f:
        pending = ""
        while True:
            done = proc.poll() is not None
            pending += f.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip():
                    log(json.loads(line))
            if done:
                return
            time.sleep(POLL_S)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop the job (torchrun passes the signal on to its ranks), and wait for it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _failure(folder: Path, code: int) -> RankFailed:
    reports = []
    for path in sorted(folder.glob("error-rank*.json")):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    if not reports:
        return RankFailed(f"the training processes exited with status {code} and no rank reported an error "
                          f"(see {folder / 'launcher.log'} and the logs in {folder / 'logs'})", None)
    # the first to fail is the cause: the others fail after it (a closed connection, a stopped group)
    first = min(reports, key=lambda r: (float(r.get("at", 0.0)), int(r.get("rank", 0))))
    others = sorted(int(r.get("rank", 0)) for r in reports if r is not first)
    also = f" (ranks {', '.join(map(str, others))} failed too)" if others else ""
    return RankFailed(f"rank {first.get('rank')} failed: {first.get('type')}: {first.get('message')}{also}; "
                      f"its traceback is in {folder / 'error-rank{}.json'.format(first.get('rank'))}",
                      int(first.get("rank", 0)))


def _result(folder: Path) -> TrainResult:
    path = folder / "result.json"
    if not path.is_file():
        raise RankFailed(f"the training processes ended without rank 0's result ({path})", 0)
    r = json.loads(path.read_text(encoding="utf-8"))
    return TrainResult(model_dir=Path(r["model_dir"]), kind=r["kind"], steps=int(r["steps"]),
                       merged_dir=Path(r["merged_dir"]) if r.get("merged_dir") else None,
                       stopped_early=bool(r.get("stopped_early")),
                       best_checkpoint=Path(r["best_checkpoint"]) if r.get("best_checkpoint") else None)
