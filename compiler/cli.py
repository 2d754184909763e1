"""The `ftc` command line (click). Thin: each command parses options, calls a stage, renders.

Exit codes (documented in README.md): 0 no errors (warnings allowed), 1 errors found, 2 usage
error, 3 internal error (a bug in ftc). Heavy libraries are imported only inside the commands
that run models, never on the `check` path.

Registry commands (`runs list|show|diff`, `promote`, `rollback`, `active`, `gc`, `report`):
0 done; 1 refused (a gate failed and no --force, a failed/interrupted run, a missing artifact,
nothing to roll back to, no active model); 2 usage (unknown or ambiguous run id, --force without
--reason); 6 the registry cannot be used (not a database, damaged, locked longer than
FTC_REGISTRY_TIMEOUT seconds, not writable): nothing was written. `ftc run` adds 4 (a gate
failed) and 5 (failed or interrupted, resumable).
"""

from __future__ import annotations

import functools
import glob
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from ftc import __version__
from ftc.compiler.targets import TARGETS

if TYPE_CHECKING:
    from ftc.runtime.runrecord import RunRow

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL, EXIT_REGISTRY = 0, 1, 2, 3, 6
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".ftc", ".tox"}


def discover(paths: Sequence[str]) -> list[Path]:
    """Files named, .ftspec files under folders (sorted), and glob matches; order kept, no repeats."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                found.extend(Path(root) / f for f in sorted(files) if f.endswith(".ftspec"))
        elif any(ch in raw for ch in "*?[") and not p.exists():
            found.extend(Path(m) for m in sorted(glob.glob(raw, recursive=True)))
        else:
            found.append(p)
    return list(dict.fromkeys(found))


def _prefix_match(code: str, prefixes: Sequence[str]) -> int:
    return max((len(p) for p in prefixes if code.startswith(p)), default=-1)


class Selection:
    """flake8-style longest-prefix select/ignore, applied to warnings (errors always show)."""

    def __init__(self, select: Sequence[str], ignore: Sequence[str]) -> None:
        self.select = list(select) or ["FT"]
        self.ignore = list(ignore)

    def keeps(self, code: str) -> bool:
        return _prefix_match(code, self.select) > _prefix_match(code, self.ignore)


def _split_codes(values: Sequence[str]) -> list[str]:
    return [c.strip().upper() for v in values for c in v.split(",") if c.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftc")
def cli() -> None:
    """ftc: a declarative experiment-spec compiler for fine-tuning."""


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "concise", "json", "sarif", "github"]),
              default="text", show_default=True, help="Output format.")
@click.option("--select", multiple=True, help="Only report warnings whose code starts with these (comma-separated).")
@click.option("--ignore", multiple=True, help="Do not report warnings whose code starts with these.")
@click.option("--warnings-as-errors", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("--no-data", is_flag=True, help="Skip rules that read the files a spec names (data, local models).")
@click.option("--target", type=click.Choice(sorted(TARGETS)),
              help="Also check against a hardware profile (precision, memory, CUDA-only settings).")
@click.option("--tokenize", is_flag=True,
              help="Count token lengths exactly with a local base model's tokenizer (else estimated).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("--root", "root", type=click.Path(file_okay=False),
              help="The project root the spec's paths must stay in (default: FTC_ROOT, else the git repository "
                   "holding the spec, else the working folder or the spec's folder).")
def check(paths: tuple[str, ...], fmt: str, select: tuple[str, ...], ignore: tuple[str, ...],
          warnings_as_errors: bool, no_data: bool, target: str | None, tokenize: bool, color: str,
          root: str | None) -> None:
    """Parse, analyse and lint .ftspec files (files, folders or globs)."""
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.diagnostics import Severity
    from ftc.compiler.render import render
    from ftc.compiler.rules import RULES, rule_for_or_none

    codes_select, codes_ignore = _split_codes(select), _split_codes(ignore)
    for code in codes_ignore:
        rule = rule_for_or_none(code)
        if rule is not None and rule.severity is Severity.ERROR:
            raise click.UsageError(f"{code} is an error and cannot be ignored; fix the spec, or waive an "
                                   f"evaluation guard in the spec with `# ftc: ignore[{code}] reason`")
    selection = Selection(codes_select, codes_ignore)
    files = discover(paths)
    if not files:
        raise click.UsageError(f"no .ftspec files found in {', '.join(paths)}")
    options = CheckOptions(no_data=no_data, target=target, tokenize=tokenize, root=root)
    diags = []
    sources: dict[str, Any] = {}
    for path in files:
        result = check_file(path, options)
        sources.update(result.sources)
        for d in result.diagnostics:
            if d.severity is Severity.ERROR or selection.keeps(d.code):
                diags.append(d.with_severity(Severity.ERROR) if warnings_as_errors and
                             d.severity is Severity.WARNING else d)
    use_color = color == "always" or (color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    out = render(diags, sources, fmt, color=use_color, files_checked=len(files), rules=RULES)
    click.echo(out, nl=False, color=use_color)
    failed = any(d.severity is Severity.ERROR and d.suppressed_reason is None for d in diags)
    sys.exit(EXIT_ERRORS if failed else EXIT_OK)


@cli.command()
@click.argument("code")
def explain(code: str) -> None:
    """Print a rule's documentation: what it checks, why, an example and the fix."""
    from ftc.compiler.docs import explain_text
    from ftc.compiler.rules import rule_for_or_none
    from ftc.compiler.types import suggest

    rule = rule_for_or_none(code.upper())
    if rule is None:
        from ftc.compiler.rules import RULES

        by_name = {r.name: r for r in RULES}
        rule = by_name.get(code.lower())
        if rule is None:
            hint = suggest(code.lower(), list(by_name)) or suggest(code.upper(), [r.code for r in RULES])
            raise click.UsageError(f"unknown rule `{code}`. {hint}`ftc rules` lists them")
    click.echo(explain_text(rule))


@cli.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def rules_cmd(fmt: str) -> None:
    """List every rule: code, name, severity, summary."""
    from ftc.compiler.docs import rules_json, rules_markdown, rules_text

    click.echo({"text": rules_text, "json": rules_json, "markdown": rules_markdown}[fmt](), nl=False)


def _registry_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Registry problems become a message with a hint, never a traceback: RegistryError exit 6
    (nothing written), BadUsage exit 2, Refused exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from ftc.runtime.registry import BadUsage, Refused, RegistryError

        try:
            fn(*args, **kwargs)
        except RegistryError as err:
            click.echo(f"ftc: {err}", err=True)
            sys.exit(EXIT_REGISTRY)
        except BadUsage as err:
            click.echo(f"ftc: {err}", err=True)
            sys.exit(EXIT_USAGE)
        except Refused as err:
            click.echo(f"ftc: {err}", err=True)
            sys.exit(EXIT_ERRORS)

    return wrapper


def _registry(create: bool = False):  # type: ignore[no-untyped-def]
    """The project's registry; None when reading and no run was ever recorded here."""
    from ftc.runtime.registry import Registry, default_root

    if not create and not (default_root() / "registry.db").exists():
        return None
    return Registry()


def _resolve(registry: Any, ref: str) -> RunRow:
    from ftc.runtime.registry import UnknownRun, default_root

    if registry is None:
        raise UnknownRun(f"no run `{ref}`: no registry at {default_root() / 'registry.db'} (nothing recorded yet)",
                         "`ftc run SPEC` records runs; FTC_HOME points ftc at another .ftc folder")
    row = registry.get(registry.resolve(ref))
    assert row is not None
    found: RunRow = row
    return found


def _checked_or_exit(spec_path: str, fmt: str = "text", root: str | None = None):  # type: ignore[no-untyped-def]
    """Check a spec with its data; on errors print them and exit 1 (a plan needs a clean spec)."""
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.render import render
    from ftc.compiler.rules import RULES

    result = check_file(Path(spec_path), CheckOptions(root=root))
    if not result.ok or result.checked is None:
        shown = [d for d in result.diagnostics]
        click.echo(render(shown, result.sources, "text", color=sys.stderr.isatty(), files_checked=1, rules=RULES),
                   err=True, nl=False)
        click.echo(f"ftc: {spec_path} is refused: fix the errors above first", err=True)
        sys.exit(EXIT_ERRORS)
    return result


def _plan_or_exit(path: str):  # type: ignore[no-untyped-def]
    """A reviewed plan file, or its located errors printed and exit 1 (compiler/planfile.py)."""
    from ftc.compiler.checked import display_path
    from ftc.compiler.planfile import load_plan
    from ftc.compiler.render import render
    from ftc.compiler.rules import RULES

    plan, diags, src = load_plan(Path(path), display_path(Path(path)))
    if plan is None:
        sources = {src.path: src} if src is not None else {}
        click.echo(render(diags, sources, "text", color=sys.stderr.isatty(), files_checked=1, rules=RULES),
                   err=True, nl=False)
        click.echo(f"ftc: {path} is refused: make the plan again with `ftc plan SPEC --out {path}`", err=True)
        sys.exit(EXIT_ERRORS)
    return plan


@cli.command()
@click.argument("spec")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot", "mermaid"]), default="text",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the plan as JSON to this file.")
def plan(spec: str, fmt: str, out: str | None) -> None:
    """Show what `ftc run` will do: steps, inputs, hashes, estimated steps and memory."""
    from ftc.compiler.plan import build_plan, render_dot, render_mermaid, render_text

    result = _checked_or_exit(spec)
    waivers = tuple({"code": w.code, "reason": w.reason} for w in result.waivers)
    the_plan = build_plan(result.checked, waivers)
    renderers = {"text": render_text, "json": lambda p: p.to_json(), "dot": render_dot, "mermaid": render_mermaid}
    click.echo(renderers[fmt](the_plan), nl=False)
    if out:
        Path(out).write_text(the_plan.to_json(), encoding="utf-8")


@cli.command()
@click.argument("target")
@click.option("--resume", is_flag=True, help="Continue the last interrupted run of this spec from its last checkpoint.")
@click.option("--dry-run", is_flag=True, help="Walk the plan without doing any work.")
@click.option("--max-steps", type=int, help="Cap training steps (smoke tests).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--mlflow", "mlflow_uri", metavar="URI",
              help="Also log the run to MLflow at URI (sqlite:///mlruns.db, http://host:5000; a bare *.db path is a "
                   "SQLite file); replaces the spec's tracking store. Needs `pip install 'ftc[mlflow]'`.")
@click.option("--root", "root", type=click.Path(file_okay=False),
              help="The project root the spec's paths must stay in (default: FTC_ROOT, else the git repository "
                   "holding the spec, else the working folder or the spec's folder).")
@_registry_errors
def run(target: str, resume: bool, dry_run: bool, max_steps: int | None, device: str,
        mlflow_uri: str | None, root: str | None) -> None:
    """Run a spec (or a reviewed plan.json): train, evaluate, judge the gates, register."""
    from ftc.runtime.run import run as run_target

    if mlflow_uri is not None:
        from ftc.runtime.tracking import (  # light: mlflow is imported later
            TrackingError,
            settings_from_uri,
        )

        try:
            settings_from_uri(mlflow_uri)
        except TrackingError as err:
            raise click.BadParameter(f"{err.message}; {err.hint}", param_hint="--mlflow") from None
    reviewed = _plan_or_exit(target) if target.endswith(".json") else None
    spec_path = str(reviewed.spec["path"]) if reviewed is not None else target
    checked = _checked_or_exit(spec_path, root=root)  # prints a refused spec's diagnostics
    outcome = run_target(target, resume=resume, dry_run=dry_run, max_steps=max_steps, device=device,
                         mlflow=mlflow_uri, checked=checked, reviewed=reviewed)
    click.echo(f"ftc: {outcome.message}", err=outcome.exit_code not in (0,))
    sys.exit(outcome.exit_code)


@cli.group()
def runs() -> None:
    """Inspect the runs recorded in the registry (.ftc/registry.db; FTC_HOME moves it)."""


@runs.command("list")
@click.option("--spec", "spec_name", help="Only runs of this spec name.")
@click.option("--status", type=click.Choice(["running", "promoted", "rejected", "failed", "interrupted"]),
              help="Only runs with this status.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_registry_errors
def runs_list(spec_name: str | None, status: str | None, fmt: str) -> None:
    """Every run, oldest first: id, spec, status (* = active), started, plan hash."""
    import json as _json

    from ftc.runtime.registry import when

    registry = _registry()
    rows = registry.runs(spec_name) if registry else []
    rows = [r for r in rows if status is None or r["status"] == status]
    active_ids = set(registry.active_all().values()) if registry else set()
    if fmt == "json":
        out = [{"id": r["id"], "spec": r["spec_name"], "status": r["status"], "plan_hash": r["plan_hash"],
                "started": r["started"], "finished": r["finished"], "active": r["id"] in active_ids}
               for r in rows]
        click.echo(_json.dumps({"format_version": 1, "runs": out}, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no runs recorded" + (f" for `{spec_name}`" if spec_name else ""), err=True)
        return
    for r in rows:
        mark = "*" if r["id"] in active_ids else " "
        click.echo(f"{mark} {r['id']:<44} {r['spec_name']:<24} {r['status']:<12} {when(r['started'])}  "
                   f"{r['plan_hash'][:12]}")


@runs.command("show")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_registry_errors
def runs_show(run_id: str, fmt: str) -> None:
    """One run's record: lineage, metrics, gates, artifact (and whether it is still on disk).
    RUN_ID may be a unique prefix of an id."""
    import json as _json

    from ftc.runtime.registry import artifact_problem, when
    from ftc.runtime.retention import alive

    registry = _registry()
    row = _resolve(registry, run_id)
    record = row["record"]
    artifact = record.artifact
    removed = artifact.removed if artifact else None
    missing = artifact is not None and removed is None and not Path(artifact.path or "").exists()
    problem = artifact_problem(record) if artifact else None
    is_active = registry.active(row["spec_name"]) == row["id"]
    events = registry.history(run_id=row["id"])
    dead = row["status"] == "running" and not alive(record)
    if fmt == "json":
        click.echo(_json.dumps({**row, "record": record.to_json(), "artifact_missing": missing,
                                "artifact_removed": removed is not None, "artifact_problem": problem,
                                "active": is_active, "events": events, "process_gone": dead},
                               indent=2, sort_keys=True, default=str))
        return
    status = row["status"] + (" (active)" if is_active else "")
    click.echo(f"run {row['id']}  {row['spec_name']}  {status}  plan {row['plan_hash'][:12]}")
    click.echo(f"started {when(row['started'])}  finished {when(row['finished'])}  by {record.user}  "
               f"on {record.hardware.host or '?'}")
    if dead:
        click.echo(f"note: its process ({record.pid}) is gone: continue it with `ftc run "
                   f"{record.spec_path} --resume`")
    click.echo(f"spec: {record.spec_path} (sha256 {str(record.spec.get('sha256'))[:12]})")
    base = record.base
    click.echo(f"base: {base.get('ref')} revision {base.get('revision')} sha256 {str(base.get('sha256'))[:12]}")
    if record.method:
        click.echo("method: " + ", ".join(f"{k} {v}" for k, v in sorted(record.method.items())))
    sizes, hashes = record.data.get("sizes"), record.data.get("hashes")
    for name, size in sorted(sizes.items()) if isinstance(sizes, dict) else ():
        digest = hashes.get(name) if isinstance(hashes, dict) else None
        click.echo(f"data: {name} {size} rows sha256 {str(digest or '')[:12]}")
    click.echo(f"seed: {record.seed}  git: {record.git_commit}  versions: "
               + ", ".join(f"{k} {v}" for k, v in sorted(record.versions.items()) if v))
    options = {k: v for k, v in record.options.items() if v not in (None, False)}
    if options:
        click.echo("options: " + ", ".join(f"{k} {v}" for k, v in sorted(options.items())))
    for g in record.gates:
        click.echo(f"gate: {g.gate}  before {g.before}  after {g.value}  {'pass' if g.passed else 'FAIL'}")
    forced = record.forced_promotion
    if forced:
        click.echo(f"forced promotion: by {forced.user} on {when(forced.at)} although its gates "
                   f"failed: {forced.reason}")
    if record.error:
        click.echo(f"error: {record.error}")
    if record.interrupted_by:
        click.echo(f"interrupted by {record.interrupted_by}: continue with `ftc run --resume`")
    if artifact:
        sha = str(artifact.sha256 or "")[:12]
        if removed:
            click.echo(f"artifact: removed by `{removed.by}` on {when(removed.at)} "
                       f"(was {artifact.path}, sha256 {sha})")
        else:
            click.echo(f"artifact: {artifact.path} sha256 {sha}" + ("  (MISSING on disk)" if missing else ""))
            if artifact.merged:
                gone = "" if Path(artifact.merged).exists() else "  (MISSING on disk)"
                click.echo(f"merged: {artifact.merged} sha256 {str(artifact.merged_sha256)[:12]}{gone}")
    for e in events:
        click.echo(f"event: {when(e['at'])}  {e['action']}  {e['run_id']}  by {e['user'] or '?'}"
                   + (f"  ({e['reason']})" if e["reason"] else ""))


@runs.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_registry_errors
def runs_diff(run_a: str, run_b: str, fmt: str) -> None:
    """What changed from RUN_A to RUN_B: spec text, base, method and training settings, seed,
    versions, data per split, metrics before/after per split and slice (with deltas), gates."""
    from ftc.runtime.rundiff import diff_runs, render_text, to_json

    registry = _registry()
    a, b = _resolve(registry, run_a), _resolve(registry, run_b)
    d = diff_runs(a, b)
    click.echo(to_json(d) if fmt == "json" else render_text(d), nl=False)


@cli.command()
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Promote even though a gate failed (needs --reason).")
@click.option("--reason", help="Why (recorded with your name and the time); required with --force.")
@_registry_errors
def promote(run_id: str, force: bool, reason: str | None) -> None:
    """Make a run the active model of its spec. Only a completed run whose gates all passed,
    unless --force --reason; never a failed or interrupted run, nor one whose artifact is gone."""
    registry = _registry()
    row = _resolve(registry, run_id)
    done = registry.promote(row["id"], force=force, reason=reason)
    if not done["changed"]:
        click.echo(f"{done['run_id']} is already the active `{done['spec']}`")
        return
    was = f" (was {done['previous']})" if done["previous"] else ""
    forced = " despite failed gates (forced; reason recorded)" if done["forced"] else ""
    click.echo(f"promoted {done['run_id']} as the active `{done['spec']}`{forced}{was}")


@cli.command()
@click.argument("spec_name")
@click.option("--reason", help="Why (recorded with your name and the time).")
@_registry_errors
def rollback(spec_name: str, reason: str | None) -> None:
    """Make the model promoted before the active one active again (each rollback goes one
    promotion further back; `ftc promote RUN` picks any run instead)."""
    registry = _registry()
    if registry is None:
        from ftc.runtime.registry import Refused

        raise Refused(f"no model of `{spec_name}` was ever promoted: no registry here yet",
                      "FTC_HOME points ftc at another .ftc folder")
    done = registry.rollback(spec_name, reason=reason)
    click.echo(f"rolled back `{spec_name}`: {done['run_id']} is active again (was {done['previous']})")


@cli.command()
@click.argument("spec_name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--history", is_flag=True, help="Also list the promote and rollback events, oldest first.")
@click.option("--path", "show_path", is_flag=True, help="Print the active model's artifact folder instead of its id.")
@_registry_errors
def active(spec_name: str, fmt: str, history: bool, show_path: bool) -> None:
    """Which run's model serves a spec name. Prints the run id (exit 1 when there is none)."""
    import json as _json

    from ftc.runtime.registry import artifact_problem, when

    registry = _registry()
    info = registry.active_info(spec_name) if registry else None
    events = [e for e in registry.history(spec_name) if e["action"] != "artifact-removed"] if registry else []
    row = registry.get(info["run_id"]) if registry and info else None
    artifact = row["record"].artifact if row else None
    if fmt == "json":
        doc: dict[str, Any] = {"format_version": 1, "spec": spec_name, "active": None}
        if info and row:
            doc["active"] = {"run_id": info["run_id"], "since": info["since"], "status": row["status"],
                             "event": info["event"], "artifact": row["record"].to_json()["artifact"],
                             "artifact_problem": artifact_problem(row["record"])}
        if history:
            doc["history"] = events
        click.echo(_json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        if info is None:
            click.echo(f"no active model for `{spec_name}`", err=True)
        elif show_path:
            click.echo(artifact.path or "" if artifact else "")
        else:
            click.echo(info["run_id"])
        if history:
            for e in events:
                click.echo(f"{when(e['at'])}  {e['action']:<14} {e['run_id']}  by {e['user'] or '?'}"
                           + (f"  (was {e['previous']})" if e["previous"] else "")
                           + (f"  reason: {e['reason']}" if e["reason"] else ""))
    if info is None:
        sys.exit(EXIT_ERRORS)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--prune-rejected", is_flag=True,
              help="Also remove the artifacts of rejected runs that were never promoted (recorded in each).")
@click.option("--allow-empty-registry", is_flag=True,
              help="Collect even when the registry records no run (else refused: a replaced registry.db).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_registry_errors
def gc(dry_run: bool, prune_rejected: bool, allow_empty_registry: bool, fmt: str) -> None:
    """Remove what no record needs: checkpoints of finished runs, leftover staging folders,
    unknown run folders, unreferenced store objects, and per spec the artifacts of never-promoted
    runs beyond its `train { artifacts keep N }`. Never what a promoted or active model needs, nor
    the checkpoints of interrupted or failed runs (they are resumable)."""
    import json as _json

    from ftc.runtime.retention import collect

    registry = _registry()
    if registry is None:
        click.echo("gc: no registry here: nothing to collect", err=True)
        return
    out = collect(registry, dry_run=dry_run, prune_rejected=prune_rejected, allow_empty=allow_empty_registry)
    if fmt == "json":
        click.echo(_json.dumps(out.to_json(), indent=2, sort_keys=True))
        return
    verb = "would remove" if dry_run else "removed"
    for item in out.items:
        click.echo(f"{verb}  {_size(item.bytes):>10}  {_shown(item.path)}  ({item.why})")
    for run_id in out.pruned_runs:
        click.echo(f"{'would mark' if dry_run else 'marked'} {run_id}: artifact removed by gc")
    if not out.items:
        click.echo("gc: nothing to remove")
        return
    total = f"{out.bytes:,} bytes ({_size(out.bytes)})"
    click.echo(f"gc: {verb} {len(out.items)} item(s), " + (f"would free {total}; nothing was removed" if dry_run
                                                            else f"freed {total}"))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cli.command()
@click.argument("run_id")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]),
              help="html (one self-contained file) or md; default: from --out's suffix, else html.")
@_registry_errors
def report(run_id: str, out_file: str, fmt: str | None) -> None:
    """Write a run's report with plots: losses, gate metric, gradient norm, slices, latency,
    confusion matrix, and the gate table before/after."""
    from ftc.runtime.registry import Refused
    from ftc.runtime.report import write_report

    out = Path(out_file)
    fmt = fmt or ("md" if out.suffix.lower() in (".md", ".markdown") else "html")
    row = _resolve(_registry(), run_id)
    try:
        write_report(row, out, fmt)
    except OSError as err:
        raise Refused(f"cannot write {out}: {err.strerror or err}", "choose another --out") from err
    click.echo(f"wrote {out} ({fmt}) for {row['id']}")


def _exit_if_disk_full(err: Exception) -> None:
    """A full disk (ENOSPC, a quota) that no command turned into its own message (a run folder that
    could not be created, say) is the machine's state, not a bug in ftc: exit 1, saying so."""
    import errno

    cur: BaseException | None = err
    for _ in range(8):  # the error itself, or what it wraps
        if cur is None:
            return
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {cur.filename}" if cur.filename else ""
            click.echo(f"ftc: the disk is full ({cur.strerror or 'no space left on device'}{where}): the command "
                       "stopped\n  hint: free space on that disk "
                       "and run the command again (a run that had started continues with `ftc run SPEC --resume`)",
                       err=True)
            sys.exit(EXIT_ERRORS)
        cur = cur.__cause__ or cur.__context__


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: turns an unexpected exception into exit code 3 with a short report."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="ftc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception as err:  # noqa: BLE001 (a bug in ftc, never a user mistake: exit 3)
        if type(err).__name__ == "RegistryError":  # raised outside a registry command: still not a bug
            click.echo(f"ftc: {err}", err=True)
            sys.exit(EXIT_REGISTRY)
        _exit_if_disk_full(err)
        click.echo(f"ftc: internal error: {type(err).__name__}: {err}\n"
                   "This is a bug in ftc; please report it with the spec that caused it.", err=True)
        if os.environ.get("FTC_DEBUG"):
            traceback.print_exc()
        sys.exit(EXIT_INTERNAL)
