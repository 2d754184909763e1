"""Hub bases through the Hugging Face cache (compiler/hub.py, FT154, FT150): resolved exactly as
huggingface_hub resolves them offline, checked against huggingface_hub itself, with a cache built
in tmp_path from the shipped tiny BERT (tests/hf_cache.py). Nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ftc.compiler import hub
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.diagnostics import Severity

from tests.conftest import ROOT
from tests.hf_cache import cache_model
from tests.unit.test_imports import imported_modules

TINY_BERT = ROOT / "specs" / "ticket-triage" / "models" / "tiny-bert"
SPEC = "specs/ticket-triage/ticket-triage.ftspec"
SHA = "0123456789abcdef0123456789abcdef01234567"
TAGGED = "fedcba9876543210fedcba9876543210fedcba98"
LOCAL_BASE = 'base "models/tiny-bert"  # a local folder: ftc records a hash of its files, no revision needed'


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding org/tiny at SHA (refs/main) and at TAGGED (refs/v1)."""
    root = tmp_path / "hf-cache"
    cache_model(root, "org/tiny", TINY_BERT, SHA, refs=("main",))
    cache_model(root, "org/tiny", TINY_BERT, TAGGED, refs=("v1",))
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ticket-triage example (which checks clean) copied into tmp_path, its base still local."""
    shutil.copytree(ROOT / "specs" / "ticket-triage", tmp_path / "specs" / "ticket-triage")
    shutil.copy(ROOT / "specs" / "team-defaults.ftspec", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    return tmp_path


def with_base(project: Path, base: str) -> FileResult:
    """The example with `base` in place of its local one. `params` too: the memory estimate reads
    only a local folder's config (FT161 would say the size is unknown)."""
    spec = project / SPEC
    text = (ROOT / SPEC).read_text(encoding="utf-8")
    assert LOCAL_BASE in text
    spec.write_text(text.replace(LOCAL_BASE, base + "\n    params 1M"), encoding="utf-8")
    return check_file(Path(SPEC), CheckOptions())


def unsuppressed(result: FileResult) -> list[tuple[str, str]]:
    return [(d.code, d.severity.value) for d in result.diagnostics if d.suppressed_reason is None]


# --- where the cache is -----------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    {"HF_HUB_CACHE": "/c/hub-cache", "HUGGINGFACE_HUB_CACHE": "/c/legacy", "HF_HOME": "/c/home"},
    {"HUGGINGFACE_HUB_CACHE": "/c/legacy", "HF_HOME": "/c/home"},
    {"HF_HOME": "/c/home", "XDG_CACHE_HOME": "/c/xdg"},
    {"XDG_CACHE_HOME": "/c/xdg"},
    {"HOME": "/c/user"},
    {"HF_HUB_CACHE": "~/x/$SUB", "HOME": "/c/user", "SUB": "y"},
])
def test_cache_dir_is_huggingface_hubs(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same folder huggingface_hub's constants.py computes from the same environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")}
    full = {**base, "HOME": "/c/user", **env}
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    theirs = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True)
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"HOME": "/c/user", **env}.items():
        monkeypatch.setenv(k, v)
    assert str(hub.cache_dir()) == theirs.stdout.strip()


# --- resolving a revision ---------------------------------------------------------------------

@pytest.mark.parametrize("revision", [SHA, TAGGED, "main", "v1", None])
def test_resolution_matches_huggingface_hub(cache: Path, revision: str | None) -> None:
    from huggingface_hub import try_to_load_from_cache

    theirs = try_to_load_from_cache("org/tiny", "config.json", cache_dir=cache, revision=revision)
    assert isinstance(theirs, str)
    found = hub.find("org/tiny", revision)
    assert found.folder == Path(theirs).parent and found.folder.name == {TAGGED: TAGGED, "v1": TAGGED}.get(
        revision or "", SHA)
    assert (found.folder / "config.json").read_bytes() == (TINY_BERT / "config.json").read_bytes()  # via blobs/


def test_a_short_sha_resolves_by_unique_prefix(cache: Path) -> None:
    assert hub.find("org/tiny", SHA[:7]).folder == cache / "models--org--tiny" / "snapshots" / SHA
    cache_model(cache, "org/tiny", TINY_BERT, SHA[:7] + "f" * 33, refs=())
    twice = hub.find("org/tiny", SHA[:7])
    assert twice.folder is None and twice.ambiguous and "matches 2 cached snapshots" in twice.problem
    assert hub.find("org/tiny", SHA[:8]).folder is not None  # a longer prefix tells them apart


def test_what_is_not_cached(cache: Path) -> None:
    assert "not in the Hugging Face cache" in hub.find("org/absent", SHA).problem
    assert "commit `abcdef0` of `org/tiny`" in hub.find("org/tiny", "abcdef0").problem
    assert "branch or tag `dev`" in hub.find("org/tiny", "dev").problem
    (cache / "models--org--tiny" / "refs" / "stale").write_text("9" * 40)
    assert "whose snapshot is not in the Hugging Face cache" in hub.find("org/tiny", "stale").problem
    assert hub.find("org/../x", SHA).folder is None and hub.find("org/tiny", "../main").folder is None


def test_is_pin() -> None:
    assert hub.is_pin("3f2a9c1") and hub.is_pin(SHA)
    assert not any(hub.is_pin(r) for r in (None, "main", "v1.0", "3f2a9c", "3F2A9C1", SHA + "0"))


# --- ftc check ------------------------------------------------------------------------------------

@pytest.mark.parametrize("revision", [SHA, SHA[:7]])
def test_check_passes_for_a_cached_pinned_revision(cache: Path, project: Path, revision: str) -> None:
    result = with_base(project, f'base "hf:org/tiny"\n    revision "{revision}"')
    assert unsuppressed(result) == []
    assert result.checked is not None
    assert hub.resolve_base(result.checked) == cache / "models--org--tiny" / "snapshots" / SHA


def test_an_uncached_revision_is_refused_with_the_download_command(cache: Path, project: Path) -> None:
    result = with_base(project, 'base "hf:org/tiny"\n    revision "abcdef0"')
    [d] = [d for d in result.diagnostics if d.code == "FT154"]
    assert d.severity is Severity.ERROR and not result.ok
    assert d.help.startswith("ftc does not download: run `hf download org/tiny --revision abcdef0` once")
    assert d.detail == "looked in hf-cache/models--org--tiny"  # shown relative to the working directory
    assert d.span is not None and d.span.line == 19  # the revision, on the line after `base`
    assert result.checked is not None and hub.resolve_base(result.checked) is None


def test_the_download_command_names_an_existing_cli() -> None:
    """`hf download REPO --revision REV` is huggingface_hub's CLI (2.x; `huggingface-cli` is gone)."""
    hf = Path(sys.executable).parent / "hf"
    proc = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "--revision" in proc.stdout


def test_a_repository_not_in_the_cache_points_at_the_base(cache: Path, project: Path) -> None:
    result = with_base(project, f'base "hf:org/other"\n    revision "{SHA}"')
    [d] = [d for d in result.diagnostics if d.code == "FT154"]
    assert "`org/other` is not in the Hugging Face cache" in d.message and d.span is not None and d.span.line == 18


def test_a_branch_name_warns_like_a_missing_revision(cache: Path, project: Path) -> None:
    result = with_base(project, 'base "hf:org/tiny"\n    revision "main"')
    assert unsuppressed(result) == [("FT150", "warning")]  # resolved through refs/main: no FT154
    [d] = result.diagnostics
    assert "`main`" in d.message and "branch or tag" in d.message
    assert unsuppressed(with_base(project, 'base "hf:org/tiny"')) == [("FT150", "warning")]
    assert sorted(unsuppressed(with_base(project, 'base "hf:org/tiny"\n    revision "dev"'))) == [
        ("FT150", "warning"), ("FT154", "error")]


def test_remote_code_on_a_branch_is_refused(cache: Path, project: Path) -> None:
    result = with_base(project, 'base "hf:org/tiny"\n    revision "main"\n    trust_remote_code true')
    assert [c for c, _ in unsuppressed(result)] == ["FT151"]


def test_no_data_skips_the_cache(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--no-data` (pre-commit without the files) does not look for the base."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with_base(project, f'base "hf:org/tiny"\n    revision "{SHA}"')
    assert unsuppressed(check_file(Path(SPEC), CheckOptions(no_data=True))) == []


def test_check_reads_the_cache_without_huggingface_hub_or_torch(cache: Path, project: Path) -> None:
    with_base(project, f'base "hf:org/tiny"\n    revision "{SHA}"')
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftc", "check", SPEC], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout == "All checks passed: 1 file\n", proc.stdout + proc.stderr[-2000:]
    modules = imported_modules(proc.stderr)
    assert "ftc.compiler.hub" in modules and "ftc.compiler.rules.basemodel" in modules
    assert sorted(m for m in modules if m.split(".")[0] in ("huggingface_hub", "torch", "transformers")) == []
