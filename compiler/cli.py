"""The `ftc` command line (click). Thin: each command parses options, calls a stage, renders.

Exit codes (documented in README.md): 0 no errors (warnings allowed), 1 errors found, 2 usage
error, 3 internal error (a bug in ftc). Heavy libraries are imported only inside the commands
that run models, never on the `check` path.
"""

from __future__ import annotations

import glob
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from ftc import __version__
from ftc.compiler.targets import TARGETS

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
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
def check(paths: tuple[str, ...], fmt: str, select: tuple[str, ...], ignore: tuple[str, ...],
          warnings_as_errors: bool, no_data: bool, target: str | None, tokenize: bool, color: str) -> None:
    """Parse, analyse and lint .ftspec files (files, folders or globs)."""
    from ftc.compiler.check import CheckOptions, check_file
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
    options = CheckOptions(no_data=no_data, target=target, tokenize=tokenize)
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


def _checked_or_exit(spec_path: str, fmt: str = "text"):  # type: ignore[no-untyped-def]
    """Check a spec with its data; on errors print them and exit 1 (a plan needs a clean spec)."""
    from ftc.compiler.check import CheckOptions, check_file
    from ftc.compiler.render import render
    from ftc.compiler.rules import RULES

    result = check_file(Path(spec_path), CheckOptions())
    if not result.ok or result.checked is None:
        shown = [d for d in result.diagnostics]
        click.echo(render(shown, result.sources, "text", color=sys.stderr.isatty(), files_checked=1, rules=RULES),
                   err=True, nl=False)
        click.echo(f"ftc: {spec_path} is refused: fix the errors above first", err=True)
        sys.exit(EXIT_ERRORS)
    return result


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
def run(target: str, resume: bool, dry_run: bool, max_steps: int | None, device: str) -> None:
    """Run a spec (or a reviewed plan.json): train, evaluate, judge the gates, register."""
    from ftc.runtime.run import run as run_target

    if not target.endswith(".json"):
        _checked_or_exit(target)  # print the diagnostics of a refused spec
    outcome = run_target(target, resume=resume, dry_run=dry_run, max_steps=max_steps, device=device)
    click.echo(f"ftc: {outcome.message}", err=outcome.exit_code not in (0,))
    sys.exit(outcome.exit_code)


@cli.group()
def runs() -> None:
    """Inspect the runs recorded in the registry (.ftc/registry.db)."""


@runs.command("list")
@click.option("--spec", "spec_name", help="Only runs of this spec name.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def runs_list(spec_name: str | None, fmt: str) -> None:
    """Every run, oldest first: id, spec, status, plan hash."""
    import json as _json

    from ftc.runtime.registry import Registry

    rows = Registry().runs(spec_name)
    if fmt == "json":
        out = [{"id": r["id"], "spec": r["spec_name"], "status": r["status"], "plan_hash": r["plan_hash"],
                "started": r["started"], "finished": r["finished"]} for r in rows]
        click.echo(_json.dumps({"format_version": 1, "runs": out}, indent=2, sort_keys=True))
        return
    for r in rows:
        click.echo(f"{r['id']:<44} {r['spec_name']:<24} {r['status']:<12} {r['plan_hash'][:12]}")


@runs.command("show")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def runs_show(run_id: str, fmt: str) -> None:
    """One run's record: lineage, metrics, gates, artifact (and whether the artifact still exists)."""
    import json as _json

    from ftc.runtime.registry import Registry

    row = Registry().get(run_id)
    if row is None:
        raise click.UsageError(f"no run `{run_id}`: `ftc runs list` shows the recorded runs")
    record = row["record"]
    artifact = record.get("artifact") or {}
    missing = bool(artifact) and not Path(artifact.get("path", "")).exists()
    if fmt == "json":
        click.echo(_json.dumps({**row, "artifact_missing": missing}, indent=2, sort_keys=True, default=str))
        return
    click.echo(f"run {row['id']}  {row['spec_name']}  {row['status']}  plan {row['plan_hash'][:12]}")
    spec = record.get("spec", {})
    click.echo(f"spec: {spec.get('path')} (sha256 {str(spec.get('sha256'))[:12]})")
    base = record.get("base", {})
    click.echo(f"base: {base.get('ref')} revision {base.get('revision')} sha256 {str(base.get('sha256'))[:12]}")
    for name, size in sorted(record.get("data", {}).get("sizes", {}).items()):
        click.echo(f"data: {name} {size} rows sha256 {record['data']['hashes'].get(name, '')[:12]}")
    click.echo(f"seed: {record.get('seed')}  git: {record.get('git_commit')}  versions: "
               + ", ".join(f"{k} {v}" for k, v in sorted((record.get("versions") or {}).items()) if v))
    for g in record.get("gates", []):
        click.echo(f"gate: {g['gate']}  before {g['before']}  after {g['value']}  "
                   f"{'pass' if g['passed'] else 'FAIL'}")
    if artifact:
        click.echo(f"artifact: {artifact['path']} sha256 {artifact['sha256'][:12]}"
                   + ("  (MISSING on disk)" if missing else ""))


@cli.command()
@click.argument("spec_name")
def active(spec_name: str) -> None:
    """Which run's model serves a spec name (the last one promoted)."""
    from ftc.runtime.registry import Registry

    run_id = Registry().active(spec_name)
    if run_id is None:
        click.echo(f"no active model for `{spec_name}`", err=True)
        sys.exit(EXIT_ERRORS)
    click.echo(run_id)


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
        click.echo(f"ftc: internal error: {type(err).__name__}: {err}\n"
                   "This is a bug in ftc; please report it with the spec that caused it.", err=True)
        if os.environ.get("FTC_DEBUG"):
            traceback.print_exc()
        sys.exit(EXIT_INTERNAL)
