"""Runs that reproduce: pin what the base model is (DOMAIN.md, 'Training practice')."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler.checked import CheckedSpec
from ftc.compiler.estimate import is_local
from ftc.compiler.hub import is_pin
from ftc.compiler.rules.base import ERROR, WARNING, Hit, rule

SCHEMES = ("hf:", "timm:", "open_clip:")


def _hub(base: str) -> bool:
    return base.startswith(("hf:", "timm:"))


@rule("FT150", "unpinned-revision", WARNING)
def unpinned_revision(c: CheckedSpec) -> Iterator[Hit]:
    """A hub base model without a pinned revision, or pinned to a branch or tag name.

    Why:
    A hub id names whatever its owner pushed last: the same spec can train a different model next
    month. A branch (`main`) or tag moves the same way: only a commit sha (7 to 40 hex digits)
    names one set of files. Pin the commit so that runs reproduce and the registry's lineage is true.

    Example:
        model { modality text; base "hf:org/encoder"; revision "main"; task classification; labels ["a", "b"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """
    m = c.spec.model
    if m is None or not _hub(m.base) or m.trust_remote_code:  # FT151 refuses remote code that is not pinned
        return
    if m.revision is None:
        yield Hit(f"base `{m.base}` has no pinned revision", m.at("base"),
                  help='add `revision "<commit sha>"` to `model`')
    elif not is_pin(m.revision):
        yield Hit(f"revision `{m.revision}` of `{m.base}` is a branch or tag name, not a commit: it moves when "
                  "the repository changes", m.at("revision"),
                  help='pin the commit it points to now: `revision "<commit sha>"` (7 to 40 hex digits)')


@rule("FT151", "remote-code-unpinned", ERROR)
def remote_code_unpinned(c: CheckedSpec) -> Iterator[Hit]:
    """`trust_remote_code true` on a hub model without a pinned revision (a commit, not a branch or tag).

    Why:
    Remote code runs with your permissions; without a pinned revision, whatever the repository
    holds next time runs on your machines. A branch or tag name moves just the same.

    Example:
        model { modality text; base "hf:org/encoder"; task classification; labels ["a", "b"]; params 110M; trust_remote_code true }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M; trust_remote_code true }
    """
    m = c.spec.model
    if m is not None and m.trust_remote_code and _hub(m.base) and not is_pin(m.revision):
        yield Hit("`trust_remote_code true` without a pinned revision runs unreviewed code", m.at("trust_remote_code"),
                  help='pin the reviewed commit: `revision "<commit sha>"`')


@rule("FT152", "revision-on-local-base", WARNING)
def revision_on_local_base(c: CheckedSpec) -> Iterator[Hit]:
    """A `revision` on a local base folder, where it means nothing.

    Why:
    A local folder has no revisions; the setting would be silently ignored. Lineage for a local
    base comes from the hash of its files.

    Example:
        model { modality text; base "models/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }

    Use instead:
        model { modality text; base "models/encoder"; task classification; labels ["a", "b"]; params 110M }
    """
    m = c.spec.model
    if m is not None and is_local(m.base) and m.revision is not None:
        yield Hit(f"`revision` does nothing for the local base `{m.base}`", m.at("revision"),
                  help="remove `revision`; ftc records a hash of the local files instead")


@rule("FT153", "base-scheme", ERROR)
def base_scheme(c: CheckedSpec) -> Iterator[Hit]:
    """A base model reference that names no known source, or a source that does not fit the modality.

    Why:
    A base is `hf:org/name` (transformers), `timm:name` (vision), `open_clip:arch` (multimodal), or
    a local folder. Anything else cannot be loaded, and the mistake would surface only at run time.

    Example:
        model { modality text; base "s3:bucket/encoder"; task classification; labels ["a", "b"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["a", "b"]; params 110M }
    """
    m = c.spec.model
    if m is None:
        return
    if not is_local(m.base) and not m.base.startswith(SCHEMES):
        yield Hit(f"unknown model source in `{m.base}`", m.at("base"),
                  help='use "hf:org/name", "timm:name", "open_clip:arch", or a local folder path')
        return
    fits = {"timm:": "vision", "open_clip:": "multimodal"}
    for prefix, modality in fits.items():
        if m.base.startswith(prefix) and m.modality != modality:
            yield Hit(f"`{prefix}` models are {modality} models, but `modality {m.modality}` is set", m.at("base"),
                      help=f"set `modality {modality}`, or use an hf: or local text model")
    if m.base.startswith("hf:") and m.modality != "text":
        yield Hit(f"`hf:` bases load through transformers (text); {m.modality} models load through "
                  f"{'timm' if m.modality == 'vision' else 'open_clip'}", m.at("base"),
                  help=f"use `{'timm:' if m.modality == 'vision' else 'open_clip:'}...` or a local folder")
