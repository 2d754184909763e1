"""One process of a distributed training node: `python -m ftc.runtime.rank RUN_DIR NODE_ID ...`.

torchrun starts this module in each of the node's processes (runtime/launch.py builds the command;
the plan shows it). Each process walks the reviewed plan (RUN_DIR/plan.json) as the run does: the
spec is checked again and must give the same plan, the data is read, validated, split and
deduplicated, the base located and verified, and then the training node runs, every rank in one
process group (the Trainer sets it up from torchrun's environment).

What comes back to `ftc run` (runtime/launch.py reads it), in RUN_DIR/ranks/NODE_ID/:
    events.jsonl          rank 0's training events (steps, evaluations, notes), one JSON per line
    result.json           rank 0's TrainResult, when training completes
    error-rank<R>.json    a rank's error (type, message, traceback), when it fails
Each rank's own output goes to per-rank log files under logs/ (torchrun's --log-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ftc.runtime import dist

PREPARE = ("read_data", "validate", "split", "dedup", "load_base")  # the steps before training


class Channel:
    """Rank 0's events, appended one JSON line at a time (ftc run tails the file); other ranks' are dropped."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8") if dist.is_main() else None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(event, sort_keys=True, default=str) + "\n")
            self.file.flush()


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ftc.runtime.rank")
    p.add_argument("run_dir", type=Path)
    p.add_argument("node_id")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--started", type=float, default=None, help="when the run began (time.monotonic)")
    return p.parse_args(argv)


def _state(a: argparse.Namespace, log: Any) -> Any:
    """The run's state as the parent has it before the training node (the plan's steps up to it)."""
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.plan import build_plan
    from ftc.compiler.planfile import load_plan
    from ftc.runtime.api import TimeLimit
    from ftc.runtime.executor import DriftError, LocalExecutor, RunState

    plan, diags, _ = load_plan(a.run_dir / "plan.json", "plan.json")
    if plan is None:
        raise DriftError(f"the run's plan.json is not readable: {diags[0].message if diags else '?'}")
    result = check_file(Path(plan.spec["path"]), CheckOptions())
    if not result.ok or result.checked is None:
        raise DriftError("the spec is refused by `ftc check` now: it changed since the run began")
    if build_plan(result.checked, plan.waivers).hash != plan.hash:
        raise DriftError("the spec or its data changed since the run began: the plan it gives is another one")
    limit = TimeLimit.of(result.checked.spec)
    if limit is not None and a.started is not None:
        limit = TimeLimit(limit.seconds, a.started)  # the run's one budget, counted from its start
    state = RunState(plan, result.checked, a.run_dir, lambda _e: None, resume=a.resume, max_steps=a.max_steps,
                     device=a.device, time_limit=limit)
    executor = LocalExecutor()
    for node in plan.topological():
        if node.kind in PREPARE:
            getattr(executor, f"_{node.kind}")(node, state)  # quietly: the parent logged these steps
    state.log = log
    return state, plan.node(a.node_id)


def main(argv: list[str] | None = None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    folder = dist.node_folder(a.run_dir, a.node_id)
    try:
        from ftc.runtime.executor import backend_step

        state, node = _state(a, Channel(folder / "events.jsonl"))
        ctx = state.context()
        result = backend_step(ctx.spec, node.kind)(ctx)
        if dist.is_main():
            out = {"model_dir": str(result.model_dir), "kind": result.kind, "steps": result.steps,
                   "merged_dir": str(result.merged_dir) if result.merged_dir else None,
                   "stopped_early": result.stopped_early,
                   "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None}
            tmp = folder / ".result.json.tmp"
            tmp.write_text(json.dumps(out, sort_keys=True), encoding="utf-8")
            os.replace(tmp, folder / "result.json")
        return 0
    except BaseException as err:  # noqa: BLE001 (each rank reports its own failure to ftc run, then exits)
        report = {"rank": dist.rank(), "type": type(err).__name__, "message": str(err),
                  "traceback": traceback.format_exc(), "at": time.monotonic()}  # one clock for all ranks
        try:
            (folder / f"error-rank{dist.rank()}.json").write_text(json.dumps(report), encoding="utf-8")
        except OSError:
            pass
        print(report["traceback"], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
