"""The command line: exit codes, every output format, select/ignore, file discovery, explain, rules.

Most tests drive `ftc.compiler.cli.cli` through click's CliRunner; a few run the installed `ftc`
and `python -m ftc` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result
from ftc.compiler import check as check_module
from ftc.compiler.cli import cli, main
from ftc.compiler.docs import EXAMPLE_BASE
from ftc.compiler.rules import RULES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif-schema-2.1.0.json"

CLEAN = EXAMPLE_BASE
WARNINGS = EXAMPLE_BASE.replace('    revision "3f2a9c1"\n', "").replace(
    "    early_stopping patience 2 on val.loss\n", "")  # FT150 unpinned revision, FT142 no early stopping
ERRORS = EXAMPLE_BASE.replace("rank 8;", "rnak 8;")  # FT011
assert WARNINGS != CLEAN and ERRORS != CLEAN


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FTC_DEBUG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def codes_in_json(result: Result) -> list[str]:
    return [d["code"] for d in json.loads(result.output)["diagnostics"] if not d["suppressed"]]


# --- exit codes -------------------------------------------------------------------------------------

def test_clean_spec_exits_0(workdir: Path) -> None:
    write(workdir / "ok.ftspec", CLEAN)
    result = run("check", "--no-data", "ok.ftspec")
    assert result.exit_code == 0
    assert result.output == "All checks passed: 1 file\n"


def test_warnings_only_exit_0(workdir: Path) -> None:
    write(workdir / "warn.ftspec", WARNINGS)
    result = run("check", "--no-data", "warn.ftspec")
    assert result.exit_code == 0, result.output
    assert "warning[FT150]" in result.output and "warning[FT142]" in result.output
    assert result.output.endswith("2 warnings in 1 file\n")


def test_errors_exit_1(workdir: Path) -> None:
    write(workdir / "bad.ftspec", ERRORS)
    result = run("check", "--no-data", "bad.ftspec")
    assert result.exit_code == 1
    assert "error[FT011]: unknown key `rnak` in `method lora`" in result.output
    assert "did you mean `rank`?" in result.output


def test_warnings_as_errors_exit_1(workdir: Path) -> None:
    write(workdir / "warn.ftspec", WARNINGS)
    result = run("check", "--no-data", "--warnings-as-errors", "warn.ftspec")
    assert result.exit_code == 1
    assert "error[FT150]" in result.output and "warning[" not in result.output


@pytest.mark.parametrize("args,needle", [
    (["check", "--bogus", "x.ftspec"], "No such option"),
    (["check", "--format", "xml", "x.ftspec"], "xml"),
    (["check"], "Missing argument"),
    (["check", "--target", "tpu", "x.ftspec"], "tpu"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_exit_2(workdir: Path, args: list[str], needle: str) -> None:
    write(workdir / "x.ftspec", CLEAN)
    result = run(*args)
    assert result.exit_code == 2
    assert needle in result.output


def test_no_files_found_exits_2(workdir: Path) -> None:
    (workdir / "empty").mkdir()
    result = run("check", "empty", "nothing-*.ftspec")
    assert result.exit_code == 2
    assert "no .ftspec files found" in result.output


@pytest.mark.parametrize("code", ["FT011", "FT110", "ft001"])
def test_ignoring_an_error_code_is_a_usage_error(workdir: Path, code: str) -> None:
    write(workdir / "x.ftspec", CLEAN)
    result = run("check", "--no-data", "--ignore", code, "x.ftspec")
    assert result.exit_code == 2
    assert "is an error and cannot be ignored" in result.output


def test_missing_file_is_a_diagnostic_not_a_usage_error(workdir: Path) -> None:
    result = run("check", "--no-data", "missing.ftspec")
    assert result.exit_code == 1
    assert "error[FT006]: no such file: missing.ftspec" in result.output


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise KeyError("boom")


def test_internal_error_exits_3_without_traceback(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir / "ok.ftspec", CLEAN)
    monkeypatch.setattr(check_module, "check_file", _boom)
    with pytest.raises(SystemExit) as info:
        main(["check", "--no-data", "ok.ftspec"])
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "KeyError" in err and "bug in ftc" in err
    assert "Traceback" not in err


def test_internal_error_traceback_with_ftc_debug(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir / "ok.ftspec", CLEAN)
    monkeypatch.setattr(check_module, "check_file", _boom)
    monkeypatch.setenv("FTC_DEBUG", "1")
    with pytest.raises(SystemExit) as info:
        main(["check", "--no-data", "ok.ftspec"])
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err and "_boom" in err


def test_main_turns_usage_errors_into_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--no-data", "--ignore", "FT011", "x.ftspec"])
    assert info.value.code == 2
    assert "cannot be ignored" in capsys.readouterr().err


# --- formats ----------------------------------------------------------------------------------------

# An error from a rule (FT110: no test split) and a warning (FT150: unpinned revision).
MIXED = CLEAN.replace('    revision "3f2a9c1"\n', "").replace('    test "data/test.jsonl" rows 300\n', "").replace(
    "gate f1 >= 0.85 on test", "gate f1 >= 0.85 on val")


@pytest.fixture
def mixed(workdir: Path) -> Path:
    return write(workdir / "specs" / "mixed.ftspec", MIXED)


def test_text_format(mixed: Path) -> None:
    result = run("check", "--no-data", "--format", "text", "specs")
    assert result.exit_code == 1
    assert "  --> specs/mixed.ftspec:" in result.output
    assert result.output.index("warning[FT150]") < result.output.index("error[FT110]")  # by offset
    assert result.output.endswith("1 error, 1 warning in 1 file\n")
    assert "\x1b[" not in result.output


def test_color_always(mixed: Path) -> None:
    result = run("check", "--no-data", "--color", "always", "specs")
    assert "\x1b[" in result.output


def test_concise_format(mixed: Path) -> None:
    result = run("check", "--no-data", "--format", "concise", "specs")
    lines = result.output.splitlines()
    assert result.exit_code == 1 and len(lines) == 2
    assert lines[0].startswith("specs/mixed.ftspec:5:10: FT150 ")
    assert lines[1].startswith("specs/mixed.ftspec:12:3: FT110 ")


def test_json_format(mixed: Path) -> None:
    result = run("check", "--no-data", "--format", "json", "specs")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["format_version"] == 1
    assert doc["summary"]["errors"] == 1 and doc["summary"]["warnings"] == 1 and doc["summary"]["files"] == 1
    by_code = {d["code"]: d for d in doc["diagnostics"]}
    assert set(by_code) == {"FT110", "FT150"}
    for d in doc["diagnostics"]:
        for field in ("code", "name", "severity", "message", "help", "path", "line", "column", "end_line",
                      "end_column"):
            assert d[field] not in (None, ""), field
        assert d["path"] == "specs/mixed.ftspec"
        assert (d["end_line"], d["end_column"]) >= (d["line"], d["column"])
    no_test = by_code["FT110"]
    assert no_test["name"] == "no-test-split" and no_test["severity"] == "error"
    assert (no_test["line"], no_test["column"], no_test["end_line"], no_test["end_column"]) == (12, 3, 12, 7)
    assert "test" in no_test["message"] and no_test["help"]
    assert by_code["FT150"]["severity"] == "warning"


def test_json_keeps_suppressed_diagnostics(workdir: Path) -> None:
    text = WARNINGS.replace('base "hf:org/encoder"', 'base "hf:org/encoder"  # ftc: ignore[FT150] mirror pins it')
    write(workdir / "s.ftspec", text)
    result = run("check", "--no-data", "--format", "json", "s.ftspec")
    doc = json.loads(result.output)
    sup = [d for d in doc["diagnostics"] if d["suppressed"]]
    assert [d["code"] for d in sup] == ["FT150"] and sup[0]["suppression_reason"] == "mirror pins it"
    assert doc["summary"]["suppressed"] == 1 and doc["summary"]["warnings"] == 1


def test_sarif_format_validates(mixed: Path) -> None:
    result = run("check", "--no-data", "--format", "sarif", "specs")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(doc)
    (run_,) = doc["runs"]
    assert run_["tool"]["driver"]["name"] == "ftc"
    assert sorted(r["ruleId"] for r in run_["results"]) == ["FT110", "FT150"]
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"] for r in run_["results"] for loc in r["locations"]}
    assert uris == {"specs/mixed.ftspec"}


def test_github_format(mixed: Path) -> None:
    result = run("check", "--no-data", "--format", "github", "specs")
    lines = result.output.splitlines()
    assert result.exit_code == 1 and len(lines) == 2
    assert lines[0].startswith("::warning file=specs/mixed.ftspec,line=5,col=10,")
    assert lines[1].startswith("::error file=specs/mixed.ftspec,line=12,col=3,")
    assert "title=FT110 no-test-split::" in lines[1]


def test_clean_run_prints_nothing_in_concise_and_github(workdir: Path) -> None:
    write(workdir / "ok.ftspec", CLEAN)
    for fmt in ("concise", "github"):
        result = run("check", "--no-data", "--format", fmt, "ok.ftspec")
        assert result.exit_code == 0 and result.output == ""


# --- select / ignore --------------------------------------------------------------------------------

@pytest.mark.parametrize("options,expected", [
    ([], ["FT142", "FT150"]),
    (["--ignore", "FT15"], ["FT142"]),
    (["--ignore", "ft150"], ["FT142"]),
    (["--select", "FT14"], ["FT142"]),
    (["--ignore", "FT1"], []),
    (["--ignore", "FT1", "--select", "FT150"], ["FT150"]),  # the longer prefix wins
    (["--select", "FT15", "--ignore", "FT150"], []),
    (["--ignore", "FT142,FT150"], []),
    (["--select", "FT142", "--select", "FT150"], ["FT142", "FT150"]),
])
def test_select_and_ignore_prefixes(workdir: Path, options: list[str], expected: list[str]) -> None:
    write(workdir / "warn.ftspec", WARNINGS)
    result = run("check", "--no-data", "--format", "json", *options, "warn.ftspec")
    assert result.exit_code == 0
    assert sorted(codes_in_json(result)) == expected


def test_select_never_hides_errors(workdir: Path) -> None:
    write(workdir / "bad.ftspec", ERRORS.replace('    revision "3f2a9c1"\n', ""))
    result = run("check", "--no-data", "--format", "json", "--select", "FT15", "--ignore", "FT1", "bad.ftspec")
    assert result.exit_code == 1
    assert codes_in_json(result) == ["FT011"]


# --- paths ------------------------------------------------------------------------------------------

@pytest.fixture
def tree(workdir: Path) -> Path:
    write(workdir / "project" / "b.ftspec", WARNINGS)
    write(workdir / "project" / "a.ftspec", CLEAN)
    write(workdir / "project" / "sub" / "c.ftspec", ERRORS)
    write(workdir / "project" / ".hidden" / "d.ftspec", ERRORS)
    write(workdir / "project" / "notes.txt", "not a spec")
    return workdir


def _paths(result: Result) -> list[str]:
    return [d["path"] for d in json.loads(result.output)["diagnostics"]]


def test_folder_is_searched_recursively_in_order(tree: Path) -> None:
    result = run("check", "--no-data", "--format", "json", "project")
    doc = json.loads(result.output)
    assert doc["summary"]["files"] == 3  # a, b, sub/c; hidden folders and other files skipped
    assert _paths(result) == sorted(_paths(result))
    assert set(_paths(result)) == {"project/b.ftspec", "project/sub/c.ftspec"}
    assert result.exit_code == 1


def test_glob_paths(tree: Path) -> None:
    result = run("check", "--no-data", "--format", "concise", "project/*.ftspec")
    assert result.exit_code == 0  # a and b only: warnings
    assert {line.split(":")[0] for line in result.output.splitlines()} == {"project/b.ftspec"}
    result = run("check", "--no-data", "--format", "json", "project/**/*.ftspec")
    assert json.loads(result.output)["summary"]["files"] == 3


def test_output_is_deterministic_and_relative(tree: Path) -> None:
    absolute = str(tree / "project")
    first = run("check", "--no-data", "--format", "json", absolute)
    second = run("check", "--no-data", "--format", "json", "project")
    assert first.output == second.output
    for fmt in ("text", "concise", "json", "sarif", "github"):
        out = run("check", "--no-data", "--format", fmt, absolute).output
        assert str(tree) not in out and "file://" not in out, fmt


def test_same_file_twice_is_checked_once(tree: Path) -> None:
    result = run("check", "--no-data", "--format", "json", "project/b.ftspec", "project", "project/b.ftspec")
    assert json.loads(result.output)["summary"]["files"] == 3


# --- explain and rules ------------------------------------------------------------------------------

def test_explain_prints_why_example_and_fix() -> None:
    result = run("explain", "FT110")
    assert result.exit_code == 0
    out = result.output
    assert out.startswith("FT110 no-test-split (error)")
    for section in ("Why:", "Example", "Use instead:", "Suppressible:"):
        assert section in out
    assert out.index("Why:") < out.index("Example") < out.index("Use instead:")


def test_explain_by_name_and_lowercase() -> None:
    assert run("explain", "no-test-split").output == run("explain", "FT110").output
    assert run("explain", "ft110").output == run("explain", "FT110").output


@pytest.mark.parametrize("word,hint", [("FT1100", "FT110"), ("no-test-splt", "no-test-split"),
                                       ("unknown-kye", "unknown-key")])
def test_explain_unknown_code_suggests(word: str, hint: str) -> None:
    result = run("explain", word)
    assert result.exit_code == 2
    assert f"did you mean `{hint}`" in result.output and "ftc rules" in result.output


def test_rules_text_lists_every_code() -> None:
    result = run("rules")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()]
    assert listed == [r.code for r in RULES]


def test_rules_json_lists_every_code() -> None:
    result = run("rules", "--format", "json")
    doc = json.loads(result.output)
    assert doc["format_version"] == 1
    assert [r["code"] for r in doc["rules"]] == [r.code for r in RULES]
    assert all({"code", "name", "severity", "summary", "stage", "suppressible", "status"} <= set(r)
               for r in doc["rules"])


def test_rules_markdown() -> None:
    result = run("rules", "--format", "markdown")
    assert result.output.startswith("| code | name | severity | what it checks |")
    assert all(f"| {r.code} |" in result.output for r in RULES)


# --- real processes ---------------------------------------------------------------------------------

def _proc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FTC_DEBUG"}
    return subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


def test_installed_ftc_exit_codes(tmp_path: Path) -> None:
    ftc = str(BIN / "ftc")
    write(tmp_path / "ok.ftspec", CLEAN)
    write(tmp_path / "bad.ftspec", ERRORS)
    ok = _proc([ftc, "check", "--no-data", "ok.ftspec"], tmp_path)
    assert (ok.returncode, ok.stdout) == (0, "All checks passed: 1 file\n")
    bad = _proc([ftc, "check", "--no-data", "--format", "concise", "ok.ftspec", "bad.ftspec"], tmp_path)
    assert bad.returncode == 1 and bad.stdout.startswith("bad.ftspec:") and "FT011" in bad.stdout
    usage = _proc([ftc, "check", "--no-data", "--ignore", "FT011", "ok.ftspec"], tmp_path)
    assert usage.returncode == 2 and "cannot be ignored" in usage.stderr and usage.stdout == ""


def test_python_dash_m_ftc_version(tmp_path: Path) -> None:
    from ftc import __version__

    proc = _proc([sys.executable, "-m", "ftc", "--version"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ftc, version {__version__}"
