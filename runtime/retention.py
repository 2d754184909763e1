"""`ftc gc`: remove what no record needs, never what a promoted or active model needs.

Removed:
- checkpoints of finished runs (promoted or rejected): nothing resumes them;
- leftover staging folders (`.staging`, half-written `checkpoint-N` without COMPLETE, `.NAME.tmp`
  artifact folders) of runs whose process is gone, and the store's `tmp/`;
- run folders under `.ftc/runs/` that the registry does not know;
- store objects that no record references;
- with `prune_rejected`: the artifacts of rejected runs that were never promoted (an object that
  another kept run shares stays); their records then say that gc removed the artifact;
- per spec name whose newest run records `train { artifacts keep N }` (record["retention"]): the
  artifacts of its rejected and failed runs that were never promoted, past the newest N of them
  (newest by finish time; only runs whose artifact is still on record count), recorded the same
  way. The newest run's declaration applies, so removing the setting from the spec stops it; a spec
  whose newest run declares nothing keeps every artifact, as before.
Kept: everything of a running run whose process is alive (or on another host); the checkpoints of
interrupted and failed runs (they are resumable); every artifact a record references otherwise,
above all those of promoted runs (rollback may need any of them) and of the active ones.

Safety: nothing outside the registry folder is touched, links are removed, never followed; a
registry that records no run while run folders or store objects exist is refused (a replaced
registry.db would otherwise cost every model). Removal is two-phase: under the store's exclusive
lock the records are updated first (one transaction per reason: `--prune-rejected`, each `artifacts
keep N`), then the doomed paths are renamed into `.ftc/trash/` (fast, atomic); the trash is deleted
after the lock is released. A gc stopped in between leaves records that say removed over bytes still
on disk, never the reverse; the next gc collects those bytes as unreferenced.
"""

from __future__ import annotations

import os
import platform
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.runtime.registry import FINISHED, Refused, Registry
from ftc.runtime.runrecord import RunRecord, RunRow
from ftc.runtime.store import Store, remove_tree, tree_size

PRUNE_BY = "ftc gc --prune-rejected"
PRUNABLE = ("rejected", "failed")  # statuses whose artifacts a spec's retention may remove


@dataclass(frozen=True)
class Item:
    path: Path
    bytes: int
    why: str
    run_id: str | None = None


@dataclass
class Collected:
    items: list[Item] = field(default_factory=list)
    pruned_runs: list[str] = field(default_factory=list)
    pruned_by: dict[str, str] = field(default_factory=dict)  # run -> what removed its artifact (records say)
    retention: dict[str, int] = field(default_factory=dict)  # spec name -> the `artifacts keep N` applied
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "bytes_freed": 0 if self.dry_run else self.bytes,
                "bytes": self.bytes, "pruned_runs": sorted(self.pruned_runs),
                "pruned_by": dict(sorted(self.pruned_by.items())), "retention": dict(sorted(self.retention.items())),
                "removed": [{"path": str(i.path), "bytes": i.bytes, "why": i.why, "run": i.run_id}
                            for i in self.items]}


def alive(record: RunRecord) -> bool:
    """Whether a `running` run's process may still be running (unknown counts as alive)."""
    pid, host = record.pid, record.hardware.host
    if pid is None or not host or host != platform.node():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _inside(path: Path, root: Path) -> bool:
    try:
        path.absolute().relative_to(root.absolute())
        return True
    except ValueError:
        return False


def _artifact_paths(record: RunRecord) -> list[tuple[Path, str | None]]:
    return [(Path(p), digest) for p, digest in record.artifact.paths()] if record.artifact else []


def _staging(run_dir: Path) -> list[Path]:
    from ftc.runtime.checkpoints import COMPLETE, STAGING, step_of

    found: list[Path] = []
    for root, dirs, _ in os.walk(run_dir):
        here = Path(root)
        for d in sorted(dirs):
            p = here / d
            if (d == STAGING or (d.startswith(".") and d.endswith(".tmp"))
                    or (here.name == "checkpoints" and step_of(p) is not None and not (p / COMPLETE).is_file())):
                found.append(p)
        dirs[:] = [d for d in dirs if here / d not in found and not os.path.islink(here / d)]
    return found


def _checkpoint_folders(run_dir: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, _ in os.walk(run_dir):
        if "checkpoints" in dirs and not os.path.islink(os.path.join(root, "checkpoints")):
            found.append(Path(root) / "checkpoints")
        dirs[:] = [d for d in dirs if d not in ("checkpoints", "artifacts") and not d.startswith(".")]
    return sorted(found)


def declared_retention(rows: list[RunRow]) -> dict[str, int]:
    """spec name -> N of `artifacts keep N` in the record of the spec's newest run (rows come oldest
    first); a spec whose newest run declares nothing (or an unreadable value) is absent."""
    newest: dict[str, RunRow] = {}
    for r in rows:
        newest[r["spec_name"]] = r
    out: dict[str, int] = {}
    for name, r in sorted(newest.items()):
        keep = r["record"].artifacts_keep
        if keep is not None and keep >= 0:
            out[name] = keep
    return out


def beyond_retention(rows: list[RunRow], ever: set[str], keep: dict[str, int]) -> list[str]:
    """Runs whose artifact a spec's `artifacts keep N` lets go: rejected or failed, never promoted nor
    active, holding an artifact on record, and older (by finish time) than the spec's newest N such."""
    out: list[str] = []
    for name, n in keep.items():
        held = [r for r in rows if r["spec_name"] == name and r["status"] in PRUNABLE and r["id"] not in ever
                and _artifact_paths(r["record"])]
        held.sort(key=lambda r: (r["finished"] or r["started"], r["started"], r["id"]), reverse=True)
        out += [r["id"] for r in held[n:]]
    return sorted(out)


def plan_gc(registry: Registry, store: Store, *, prune_rejected: bool = False,
            allow_empty: bool = False) -> Collected:
    """What gc would remove, without removing anything (call under the store's exclusive lock)."""
    root = registry.root
    rows = registry.runs()
    runs_dir = root / "runs"
    run_folders = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    if not rows and not allow_empty and (run_folders or store.all_objects()):
        raise Refused(f"the registry {registry.path} records no run, yet {runs_dir} or {store.objects} holds "
                      "folders: was registry.db replaced? gc would remove every model",
                      "restore the registry; or, if these folders really are garbage, run `ftc gc --dry-run "
                      "--allow-empty-registry` to see what would go, then without --dry-run")
    ever = registry.promoted_ever() | set(registry.active_all().values())
    keep = declared_retention(rows)
    status = {r["id"]: (r["spec_name"], r["status"]) for r in rows}
    prunable: dict[str, tuple[str, str]] = {}  # run -> (why, by): --prune-rejected wins over a spec's retention
    for run_id in beyond_retention(rows, ever, keep):
        name, state = status[run_id]
        prunable[run_id] = (f"artifact of a {state} run beyond `artifacts keep {keep[name]}` of `{name}`",
                            f"ftc gc (artifacts keep {keep[name]})")
    if prune_rejected:
        prunable.update({r["id"]: ("artifact of a rejected run (--prune-rejected)", PRUNE_BY) for r in rows
                         if r["status"] == "rejected" and r["id"] not in ever})
    needed_paths: set[Path] = set()
    needed_digests: set[str] = set()
    for r in rows:
        if r["id"] in prunable:
            continue
        for path, digest in _artifact_paths(r["record"]):
            needed_paths.add(path.absolute())
            if digest:
                needed_digests.add(digest)
                needed_paths.add(store.path_for(digest).absolute())
    out = Collected(retention=keep)
    seen: set[Path] = set()

    def add(path: Path, why: str, run_id: str | None = None) -> None:
        p = path.absolute()
        if p in seen or not _inside(p, root) or p == root.absolute() or not (p.exists() or p.is_symlink()):
            return
        if any(n == p or _inside(n, p) for n in needed_paths):  # never a folder that holds a needed artifact
            return
        if any(_inside(p, s) for s in seen):  # already going with a folder that holds it
            return
        inner = {i.path for i in out.items if _inside(i.path, p)}
        out.items[:] = [i for i in out.items if i.path not in inner]
        seen.add(p)
        out.items.append(Item(p, tree_size(p), why, run_id))

    known = {r["id"]: r for r in rows}
    for r in rows:
        run_dir = runs_dir / r["id"]
        if not run_dir.is_dir() or (r["status"] == "running" and alive(r["record"])):
            continue
        for p in _staging(run_dir):
            add(p, "leftover staging folder", r["id"])
        if r["status"] in FINISHED:
            for p in _checkpoint_folders(run_dir):
                add(p, f"checkpoints of a {r['status']} run", r["id"])
    for folder in run_folders:
        if folder.name not in known:
            add(folder, "run folder the registry does not know")
    for run_id in sorted(prunable):  # before the unreferenced objects, so that they are named for what they are
        gone = False
        for path, digest in _artifact_paths(known[run_id]["record"]):
            if digest and store.has(digest):
                path = store.path_for(digest)  # the record's path may be stale (a moved project)
            if path.absolute() in needed_paths:
                continue  # another kept run shares these bytes
            add(path, prunable[run_id][0], run_id)
            gone = gone or any(i.path == path.absolute() for i in out.items)
        if gone:
            out.pruned_runs.append(run_id)
            out.pruned_by[run_id] = prunable[run_id][1]
    for obj in store.all_objects():
        if obj.name not in needed_digests and obj.absolute() not in needed_paths:
            add(obj, "store object no record references")
    if store.tmp.is_dir():
        for p in sorted(store.tmp.iterdir()):
            add(p, "leftover store staging")
    trash = root / "trash"
    if trash.is_dir():
        for p in sorted(trash.iterdir()):
            add(p, "leftover trash of an earlier gc")
    return out


def collect(registry: Registry, *, dry_run: bool = False, prune_rejected: bool = False,
            allow_empty: bool = False) -> Collected:
    """Plan and (unless dry_run) remove; see the module docstring for the two phases."""
    store = Store(registry.root)
    trash = registry.root / "trash" / secrets.token_hex(6)
    with store.lock(exclusive=True):
        out = plan_gc(registry, store, prune_rejected=prune_rejected, allow_empty=allow_empty)
        out.dry_run = dry_run
        if dry_run or not out.items:
            return out
        for by in sorted(set(out.pruned_by.values())):  # every record first, then the moves
            registry.mark_artifact_removed([r for r in out.pruned_runs if out.pruned_by[r] == by], by)
        trash.mkdir(parents=True, exist_ok=True)
        for n, item in enumerate(out.items):
            if _inside(item.path, trash.parent):  # leftovers already in the trash
                continue
            try:
                os.replace(item.path, trash / f"{n}-{item.path.name}")
            except OSError:
                remove_tree(item.path)  # another filesystem (a linked folder): remove in place
    for item in out.items:
        if _inside(item.path, trash.parent):
            remove_tree(item.path)
    remove_tree(trash)
    try:
        trash.parent.rmdir()  # only when empty (another gc may be using it)
    except OSError:
        pass
    return out
