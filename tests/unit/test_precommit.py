"""The pre-commit hooks in .pre-commit-hooks.yaml work as a user's repository would use them.

A scratch "ftc" git repository is made from this working tree (pyproject.toml, README.md,
grammar/, compiler/, runtime/, .pre-commit-hooks.yaml), committed, and named by `repo:`/`rev:`
in a scratch project's .pre-commit-config.yaml. `pre-commit run --all-files` then installs ftc
into its own virtualenv, as it would for a user, and runs both hooks:
  * with a clean spec (the ticket-triage example, with its data and model) and a broken copy of
    it, the run fails and prints the broken file's located diagnostic;
  * once the broken spec is removed, the run passes.

Installing the full dependency list (torch, transformers, ... ) into pre-commit's virtualenv
took 2.5 minutes and 6 GB here, so the scratch copy's pyproject.toml keeps only what `ftc check`
imports: lark, click and jsonschema as pinned in pyproject.toml, plus numpy for the data rules'
near-duplicate engine (a dependency that torch brings in a full install). The install then
takes about 10 seconds (the whole test 12-21 s here, so it is not marked `slow`). Everything is
local: pip reads this machine's configured wheel indexes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
SHIPPED = ("pyproject.toml", "README.md", "grammar", "compiler", "runtime", ".pre-commit-hooks.yaml")
CHECK_DEPS = ("lark", "click", "jsonschema")  # what `ftc check` needs (see pyproject.toml)
EXTRA_DEPS = ("numpy",)  # the data rules' near-duplicate engine


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "ftc tests", "GIT_AUTHOR_EMAIL": "tests@example.com",
           "GIT_COMMITTER_NAME": "ftc tests", "GIT_COMMITTER_EMAIL": "tests@example.com"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def slim_pyproject(text: str) -> str:
    """pyproject.toml with `dependencies` cut to what `ftc check` imports (see the module doc)."""
    deps = tomllib.loads(text)["project"]["dependencies"]
    keep = [d for d in deps if re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() in CHECK_DEPS]
    assert len(keep) == len(CHECK_DEPS), f"pyproject.toml no longer lists {CHECK_DEPS}: {deps}"
    listed = "\n".join(f'  "{d}",' for d in [*keep, *EXTRA_DEPS])
    out, n = re.subn(r"(?ms)^dependencies = \[.*?^\]", f"dependencies = [\n{listed}\n]", text)
    assert n == 1
    return out


def test_every_subpackage_is_packaged() -> None:
    """A regular install (pre-commit's, CI's) ships only the packages pyproject.toml lists."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(tool["packages"])
    dirs = {v: k for k, v in tool["package-dir"].items()}
    missing = []
    for top in ("compiler", "grammar", "runtime"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT).as_posix()
            if "__pycache__" in rel:
                continue
            name = dirs.get(rel)
            if name is None or name not in listed:
                missing.append(rel)
    assert not missing, f"folders with __init__.py that pyproject.toml does not package: {missing}"


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("ftc-hook-repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    for name in SHIPPED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=ignore)
        elif src.exists():
            shutil.copy(src, repo / name)
    if not (repo / "README.md").exists():  # pyproject.toml names it as the readme
        (repo / "README.md").write_text("# ftc\n", encoding="utf-8")
    py = repo / "pyproject.toml"
    py.write_text(slim_pyproject(py.read_text(encoding="utf-8")), encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "ftc snapshot for the pre-commit test")
    return repo, _git(repo, "rev-parse", "HEAD")


def _project(tmp_path: Path, hook_repo: tuple[Path, str]) -> tuple[Path, str, tuple[int, int]]:
    """A user's repository: the ticket-triage example, a broken copy of its spec, a hook config."""
    repo, rev = hook_repo
    proj = tmp_path / "project"
    shutil.copytree(SPECS / "ticket-triage", proj / "specs" / "ticket-triage",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    shutil.copy(SPECS / "team-defaults.ftspec", proj / "specs" / "team-defaults.ftspec")
    text = (SPECS / "ticket-triage" / "ticket-triage.ftspec").read_text(encoding="utf-8")
    assert "\n    rank 8\n" in text
    broken = text.replace("\n    rank 8\n", "\n    rnak 8\n", 1)
    line = broken[: broken.index("rnak 8")].count("\n") + 1
    (proj / "specs" / "ticket-triage" / "broken.ftspec").write_text(broken, encoding="utf-8")
    (proj / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        f"  - repo: {repo.as_posix()}\n"
        f"    rev: {rev}\n"
        "    hooks:\n"
        "      - id: ftc-check\n"
        "      - id: ftc-check-no-data\n",
        encoding="utf-8")
    _git(proj, "init", "-q")
    _git(proj, "add", "-A")
    _git(proj, "commit", "-q", "-m", "specs")
    return proj, "specs/ticket-triage/broken.ftspec", (line, 5)


def _pre_commit(proj: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "NO_COLOR": "1", "PRE_COMMIT_COLOR": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_hooks_fail_on_a_broken_spec_and_pass_on_clean_ones(tmp_path: Path, hook_repo: tuple[Path, str]) -> None:
    proj, broken, (line, col) = _project(tmp_path, hook_repo)
    home = tmp_path / "pre-commit-home"

    failed = _pre_commit(proj, home)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1, out
    assert "internal error" not in out and "Traceback" not in out, out
    assert f"{broken}:{line}:{col}" in out, out  # the located diagnostic, from both hooks
    assert out.count("FT011") >= 2, out  # unknown key `rnak`, once per hook
    assert "did you mean `rank`" in out, out
    assert "ticket-triage.ftspec:" not in out, out  # the clean spec has nothing to report
    assert "Failed" in out and "- hook id: ftc-check" in out and "- hook id: ftc-check-no-data" in out, out

    _git(proj, "rm", "-q", broken)
    _git(proj, "commit", "-q", "-m", "remove the broken spec")
    passed = _pre_commit(proj, home)
    out = passed.stdout + passed.stderr
    assert passed.returncode == 0, out
    assert out.count("Passed") == 2, out
