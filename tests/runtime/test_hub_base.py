"""A hub base (`base "hf:org/name"` + `revision`) runs from the Hugging Face cache, offline.

Regression (issue 9): `base "hf:org/name"` passed `ftc check`, `ftc plan` and `ftc run --dry-run`,
and `ftc run` then failed after the base evaluation (runtime/backends/loading.py refused hub ids).
Now check and run resolve the base through the same function (compiler/hub.py): the run loads the
cached snapshot, and a base that is not cached is refused by check (FT154) before anything runs.
The cache is built in tmp_path from the shipped tiny BERT (tests/hf_cache.py); nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from ftc.runtime.backends import loading
from ftc.runtime.registry import Registry
from ftc.runtime.run import EXIT_GATES, EXIT_PROMOTED, EXIT_REFUSED, run

from tests.conftest import ROOT
from tests.hf_cache import cache_model

SPEC = "specs/ticket-triage/ticket-triage.ftspec"
SHA = "0123456789abcdef0123456789abcdef01234567"
LOCAL_BASE = 'base "models/tiny-bert"  # a local folder: ftc records a hash of its files, no revision needed'


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hf-cache"
    cache_model(root, "org/tiny", ROOT / "specs" / "ticket-triage" / "models" / "tiny-bert", SHA)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail loudly, not hang
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ticket-triage example with its base replaced by `hf:org/tiny` at SHA (the folder removed)."""
    shutil.copytree(ROOT / "specs" / "ticket-triage", tmp_path / "specs" / "ticket-triage")
    shutil.copy(ROOT / "specs" / "team-defaults.ftspec", tmp_path / "specs")
    shutil.rmtree(tmp_path / "specs" / "ticket-triage" / "models")
    spec = tmp_path / SPEC
    text = spec.read_text(encoding="utf-8")
    assert LOCAL_BASE in text
    spec.write_text(text.replace(LOCAL_BASE, f'base "hf:org/tiny"\n    revision "{SHA[:7]}"\n    params 1M'),
                    encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    return tmp_path


def test_a_cached_hub_base_runs(cache: Path, project: Path) -> None:
    outcome = run(SPEC, max_steps=1)
    assert outcome.exit_code in (EXIT_PROMOTED, EXIT_GATES), outcome.message
    [rec] = Registry().runs("ticket-triage")
    lineage = rec["record"].to_json()
    assert lineage["base"]["ref"] == "hf:org/tiny" and lineage["base"]["revision"] == SHA[:7]
    adapter = Path(lineage["artifact"]["path"])
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base) == (cache / "models--org--tiny" / "snapshots" / SHA).resolve()


def test_an_uncached_hub_base_is_refused_before_anything_runs(tmp_path: Path, project: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    outcome = run(SPEC, max_steps=1)
    assert outcome.exit_code == EXIT_REFUSED
    assert Registry().runs("ticket-triage") == []


def test_base_dir_loads_the_snapshot_or_says_how_to_download(cache: Path, tmp_path: Path) -> None:
    def ctx(revision: str | None) -> SimpleNamespace:
        model = SimpleNamespace(base="hf:org/tiny", revision=revision)
        return SimpleNamespace(spec=SimpleNamespace(model=model))

    assert loading.base_dir(ctx(SHA)) == (cache / "models--org--tiny" / "snapshots" / SHA).resolve()  # type: ignore[arg-type]
    assert loading.base_dir(ctx("main")).name == SHA  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"does not download at run time\. Download it once: "
                                         r"`hf download org/tiny --revision abcdef0`"):
        loading.base_dir(ctx("abcdef0"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("module", "base", "pretrained"), [
    ("vision_model", "timm:resnet18", None), ("multimodal_model", "open_clip:ViT-B-32", "laion2b_s34b_b79k")])
def test_timm_and_open_clip_names_are_refused_in_the_words_of_check(module: str, base: str,
                                                                     pretrained: str | None) -> None:
    """The runtime refuses them (FT155 refuses them at check first): the same help in both places."""
    import importlib

    from ftc.compiler import hub

    backend = importlib.import_module(f"ftc.runtime.backends.{module}")
    ctx = SimpleNamespace(spec=SimpleNamespace(model=SimpleNamespace(base=base, pretrained=pretrained)))
    how = hub.timm_help(base) if base.startswith("timm:") else hub.open_clip_help(base, pretrained)
    with pytest.raises(ValueError) as err:
        backend.base_dir(ctx)
    assert str(err.value) == f"`base {base!r}` is a hub id, and ftc does not download at run time. " \
                             f"{how[0].upper()}{how[1:]}"
