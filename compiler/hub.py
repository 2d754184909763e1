"""Hub bases in the local Hugging Face cache: `hf:org/name` + `revision` -> a snapshot folder.

ftc never downloads. A hub base is usable when huggingface_hub has already put it in its cache,
and this module finds it there exactly as huggingface_hub lays the cache out (read from
huggingface_hub 2.4's `constants.py`, `file_download.try_to_load_from_cache` and
`_snapshot_download`'s offline branch), with pathlib alone: importing huggingface_hub's
file_download costs ~160 ms, more than all of `ftc check`'s own imports.

    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub
      models--org--name/
        refs/main                 a branch or tag name; the file holds a 40-hex commit sha
        snapshots/<commit>/...    the files of that commit (symlinks into blobs/, or copies)
        blobs/<hash>

A revision is resolved as huggingface_hub does offline: a 40-hex sha names a snapshot folder;
anything else is first read from `refs/<revision>` (no revision means "main"). A short sha (7-39
hex digits) that is not a ref must match exactly one snapshot folder by prefix. `ftc check`
(FT154) and the runtime (`runtime/backends/loading.py`) both call `find`, so that check passes
exactly the bases the run can load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.compiler.estimate import is_local

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec

COMMIT = re.compile(r"[0-9a-f]{40}")
PIN = re.compile(r"[0-9a-f]{7,40}")  # a commit sha, full or abbreviated (git's shortest default is 7)
DEFAULT_REVISION = "main"  # what huggingface_hub reads when no revision is given


def cache_dir() -> Path:
    """huggingface_hub's HF_HUB_CACHE, computed from the environment as its constants.py does."""
    home = os.path.expandvars(os.path.expanduser(os.getenv(
        "HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                                "huggingface"))))
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HUB_CACHE", legacy))))


def repo_id(base: str) -> str | None:
    """`hf:org/name` (or `hf://org/name`) -> `org/name`; None for any other kind of base."""
    if not base.startswith("hf:"):
        return None
    repo = base.removeprefix("hf:").removeprefix("//").strip("/")
    return repo or None


def is_pin(revision: str | None) -> bool:
    """A commit sha (7 to 40 hex digits) pins a revision; a branch or tag name moves."""
    return revision is not None and PIN.fullmatch(revision) is not None


def repo_folder(repo: str, cache: Path | None = None) -> Path:
    """The repository's folder in the cache: `models--org--name` (huggingface_hub's repo_folder_name)."""
    return (cache if cache is not None else cache_dir()) / "--".join(["models", *repo.split("/")])


@dataclass(frozen=True)
class Cached:
    """Where a hub base was looked for, and the snapshot folder when it is in the cache."""

    repo: str
    revision: str  # as the spec wrote it, or "main"
    looked: Path  # the repository's cache folder
    folder: Path | None  # snapshots/<commit> when cached
    problem: str = ""  # why it is not usable, when folder is None
    ambiguous: bool = False  # a short sha that matches several snapshots

    @property
    def commit(self) -> str | None:
        return self.folder.name if self.folder is not None else None

    @property
    def download(self) -> str:
        """The command that puts this revision in the cache (huggingface_hub's `hf` CLI)."""
        return f"hf download {self.repo} --revision {self.revision}"


def find(repo: str, revision: str | None, cache: Path | None = None) -> Cached:
    """The cached snapshot of `repo` at `revision`, or why there is none (nothing is downloaded)."""
    rev = revision or DEFAULT_REVISION
    folder = repo_folder(repo, cache)

    def missing(problem: str) -> Cached:
        return Cached(repo, rev, folder, None, problem)

    if any(part in ("", ".", "..") for part in repo.split("/")) or len(repo.split("/")) > 2:
        return missing(f"`{repo}` is not a hub repository id (`org/name`)")
    if not folder.is_dir():
        return missing(f"`{repo}` is not in the Hugging Face cache")
    snapshots = folder / "snapshots"
    commit = _commit(folder, rev)
    if commit is None and PIN.fullmatch(rev) and not COMMIT.fullmatch(rev):
        hits = sorted(p.name for p in _snapshot_dirs(snapshots) if p.name.startswith(rev))
        if len(hits) > 1:
            return Cached(repo, rev, folder, None, f"the short revision `{rev}` matches {len(hits)} cached "
                          f"snapshots ({', '.join(h[:12] for h in hits)})", ambiguous=True)
        commit = hits[0] if hits else None
    if commit is None:
        kind = "commit" if PIN.fullmatch(rev) else "branch or tag"
        return missing(f"the {kind} `{rev}` of `{repo}` is not in the Hugging Face cache")
    if not (snapshots / commit).is_dir():
        return missing(f"`{rev}` names commit {commit[:12]}, whose snapshot is not in the Hugging Face cache")
    return Cached(repo, rev, folder, snapshots / commit)


def _commit(folder: Path, rev: str) -> str | None:
    """A full sha as is; else the commit that `refs/<rev>` records (huggingface_hub's order)."""
    if COMMIT.fullmatch(rev):
        return rev
    if ".." in rev.split("/"):
        return None
    ref = folder / "refs" / rev
    try:
        sha = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except OSError:
        return None
    return sha if COMMIT.fullmatch(sha) else None


def _snapshot_dirs(snapshots: Path) -> list[Path]:
    try:
        return [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return []


def find_base(base: str, revision: str | None) -> Cached | None:
    """`find` for an `hf:` base; None for a local folder or another scheme."""
    repo = repo_id(base)
    return find(repo, revision) if repo is not None else None


def resolve_base(checked: CheckedSpec) -> Path | None:
    """The folder a spec's base model loads from: a local folder (resolved against the file that
    names it) or the cached snapshot of an `hf:` base; None when it is neither (not on this machine,
    or a `timm:`/`open_clip:` hub name, which ftc does not load)."""
    m = checked.spec.model
    if m is None:
        return None
    if is_local(m.base):
        path = checked.resolve_path(m.base, m.at("base"))
        return path if path.is_dir() else None
    cached = find_base(m.base, m.revision)
    return cached.folder if cached is not None else None


# ---------------------------------------------------------------------------------------------
# timm and open_clip hub names: ftc loads neither from a hub; both the runtime and FT155 say how
# to save one as a local folder, in the same words.


def timm_help(base: str) -> str:
    name = base.split(":", 1)[-1]
    return (f"save it once as a local folder (`timm.create_model({name!r}, pretrained=True)` then "
            f"`timm.models.save_for_hf(model, 'models/NAME', safe_serialization=True)`) and set `base` to that folder")


def open_clip_help(base: str, pretrained: str | None) -> str:
    arch = base.split(":", 1)[-1]
    tag = f", pretrained={pretrained!r}" if pretrained else ""
    return (f"save it once as a local folder (`model, _, _ = open_clip.create_model_and_transforms({arch!r}{tag})`, "
            "then write `{\"model_cfg\": ...}` to open_clip_config.json and the state dict to "
            "open_clip_model.safetensors with safetensors) and set `base` to that folder")
