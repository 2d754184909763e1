"""The base model itself, read from its folder (a local base or an `hf:` base's cached snapshot):
is it on this machine, does it hold what the run loads, do the method's module names exist in it.

Every check here is one the run would otherwise fail (or silently get wrong) after it started,
often after the base evaluation: these rules read the folder's files without torch
(compiler/hub.py, compiler/basemodel.py) and are skipped by `--no-data` with the other file rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftc.compiler import basemodel as bm
from ftc.compiler import hub, weights
from ftc.compiler.checked import CheckedSpec, display_path
from ftc.compiler.rules.base import ERROR, WARNING, Hit, rule
from ftc.compiler.source import Span
from ftc.compiler.types import suggest

SHOWN = 16  # candidate names listed in a help line
HEADS = ("classifier.", "score.", "pre_classifier.")  # transformers' sequence-classification heads


def _item(c: CheckedSpec, span: Span | None, value: str) -> Span | None:
    """The span of one string inside a list (`"q_lin"` in `targets ["q_lin", "v_lin"]`)."""
    source = c.sources.get(span.path) if span is not None else None
    if span is None or source is None:
        return span
    at = source.text.find(f'"{value}"', span.start, span.end)
    return source.span(at, at + len(value) + 2) if at >= 0 else span


def _listing(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _shown_base(c: CheckedSpec, folder: Path) -> str:
    m = c.spec.model
    assert m is not None
    return f"`{m.base}`" if hub.repo_id(m.base) is None else f"`{m.base}` (snapshot {folder.name[:12]})"


# ---------------------------------------------------------------------------------------------
# Is the base on this machine


@rule("FT154", "hub-base-not-cached", ERROR, stage="files")
def hub_base_not_cached(c: CheckedSpec) -> Iterator[Hit]:
    """A hub base (`hf:org/name`) whose revision is not in the local Hugging Face cache.

    Why:
    ftc never downloads: a run loads a hub base offline from the cache that huggingface_hub keeps
    ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), at the revision the spec
    pins. A base that is not there would stop the run after it started. Download it once, at that
    revision; a short sha must name exactly one cached snapshot.

    Example:
        model { modality text; base "hf:org/encoder"; revision "0badc0d"; task classification; labels ["billing", "bug", "account"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }
    """
    m = c.spec.model
    cached = hub.find_base(m.base, m.revision) if m is not None else None
    if m is None or cached is None or cached.folder is not None:
        return
    at = m.at("revision") if m.revision is not None and cached.looked.is_dir() else m.at("base")
    fix = ("write the full 40-hex commit sha" if cached.ambiguous else
           f"ftc does not download: run `{cached.download}` once (or point HF_HUB_CACHE at a cache that holds it)")
    yield Hit(f"hub base `{m.base}`: {cached.problem}", at, help=fix,
              detail=f"looked in {display_path(cached.looked)}")


@rule("FT155", "hub-name-not-loadable", ERROR, stage="files")
def hub_name_not_loadable(c: CheckedSpec) -> Iterator[Hit]:
    """A `timm:` or `open_clip:` hub name as the base: ftc loads vision and image-text bases from local folders.

    Why:
    timm and open_clip would fetch the weights from their hubs when the run starts, and ftc never
    downloads (a run must not depend on the network, and it must train the files that were
    checked and hashed). Save the model once as a local folder and name that folder.

    Example:
        model { modality vision; base "timm:resnet18"; revision "5f8b7d3"; task image_classification; labels ["cat", "dog"]; params 11M }

    Use instead:
        model { modality vision; base "models/resnet18"; task image_classification; labels ["cat", "dog"] }
    """
    m = c.spec.model
    if m is None:
        return
    if m.base.startswith("timm:"):
        fix = hub.timm_help(m.base)
    elif m.base.startswith("open_clip:"):
        fix = hub.open_clip_help(m.base, m.pretrained)
    else:
        return
    yield Hit(f"`{m.base}` is a hub name, and ftc does not download at run time", m.at("base"), help=fix)


# ---------------------------------------------------------------------------------------------
# Does it hold what the run loads


@rule("FT157", "base-files-missing", ERROR, stage="files")
def base_files_missing(c: CheckedSpec) -> Iterator[Hit]:
    """A base model folder without a file the run loads: config, weights, or the tokenizer.

    Why:
    transformers, timm and open_clip each read a fixed layout (a text base: config.json, weights
    and a tokenizer). A missing config or weights file stops the run when it loads the base; a
    missing tokenizer is worse: transformers then builds one with an empty vocabulary from the
    config's model type, every word becomes [UNK], and the run trains on nothing without an error.

    Example:
        model { modality text; base "hf:org/no-tokenizer"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }
    """
    m = c.spec.model
    folder = hub.resolve_base(c)
    if m is None or folder is None:
        return
    missing = bm.missing_files(folder, m.modality)
    if m.trust_remote_code:  # remote code may read a tokenizer of its own making
        missing = [f for f in missing if not f.startswith("tokenizer")]
    if missing:
        fix = (f"download the whole snapshot (`hf download {hub.repo_id(m.base)} --revision {folder.name}`), or use a "
               "local folder that holds the model and its tokenizer" if hub.repo_id(m.base) else
               "save the model and its tokenizer into the folder (`save_pretrained` on both)")
        yield Hit(f"the base {_shown_base(c, folder)} has no {' and no '.join(missing)}", m.at("base"), help=fix,
                  detail=f"read {display_path(folder)}")


@rule("FT162", "pickled-weights", ERROR, stage="files")
def pickled_weights(c: CheckedSpec) -> Iterator[Hit]:
    """A base model whose weights are pickles (`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`), not safetensors.

    Why:
    Unpickling a file runs whatever code it holds: a base folder from a colleague, a model hub or
    a pull request can carry a payload that runs as the user who trains, with every credential of
    the training machine. safetensors holds tensors and nothing else, and every loader ftc uses
    reads it (transformers with `use_safetensors=True`, timm's and open_clip's `local-dir:`). ftc
    loads weights from safetensors only: convert the pickle once, where you trust it.

    Example:
        model { modality text; base "hf:org/pickled"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }
    """
    m = c.spec.model
    folder = hub.resolve_base(c) if m is not None else None
    pickles = bm.pickled_weights(folder, m.modality) if m is not None and folder is not None else []
    if m is None or folder is None or not pickles:
        return
    cached = hub.find_base(m.base, m.revision)
    ref = (cached.repo, folder.name) if cached is not None else None
    fix = bm.conversion(display_path(folder), m.modality, bm.architecture(folder), ref)
    after = (f"then set `base` to models/{cached.repo.rsplit('/', 1)[-1]}" if cached is not None else
             f"then delete {', '.join(pickles)}")
    yield Hit(f"the base {_shown_base(c, folder)} holds its weights as pickles ({_listing(pickles)}), which run code "
              "when loaded: ftc reads safetensors only", m.at("base"),
              help=f"convert them once, where you trust the file: `{fix}`, {after}",
              detail=f"read {display_path(folder)}")


@rule("FT163", "remote-code", WARNING, stage="files")
def remote_code(c: CheckedSpec) -> Iterator[Hit]:
    """`trust_remote_code true` on a base whose config maps its classes to its own code (`auto_map`).

    Why:
    With `trust_remote_code`, transformers imports the base's .py files and runs them when it
    loads the model, as the user who trains. Review those files as you would a dependency: ftc
    records each file's sha256 in the plan (its base section, copied into the run's record), so a
    changed file changes the plan hash and a reviewed plan (`ftc run plan.json`) refuses to run
    it. Code that `auto_map` takes from another repository (`org/name--module.Class`) would be
    downloaded at load time, and ftc does not download.

    Example:
        model { modality text; base "hf:org/remote-code"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M; trust_remote_code true }

    Use instead:
        model { modality text; base "hf:org/encoder"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }
    """
    m = c.spec.model
    folder = hub.resolve_base(c) if m is not None and m.trust_remote_code else None
    code = bm.remote_code(folder) if folder is not None else {}
    if m is None or folder is None or not code:
        return
    files = [n for n in code if "--" not in n]
    shown = "; ".join(f"{n} sha256 {h[:12]}" if h else f"{n} (missing)" for n, h in code.items() if n in files)
    yield Hit(f"`trust_remote_code true` runs the base's own code ({_listing(files)}) when the model loads",
              m.at("trust_remote_code"), detail=f"recorded in the plan: {shown}",
              help="review these files; `ftc plan --out plan.json` pins their hashes, and `ftc run plan.json` "
                   "refuses to run them once changed (suppress with `# ftc: ignore[FT163] <who reviewed>`)")
    if external := [n for n in code if "--" in n]:
        yield Hit(f"`auto_map` of the base {_shown_base(c, folder)} takes code from another repository "
                  f"({_listing(external)}), which transformers would download: ftc does not",
                  m.at("trust_remote_code"),
                  help="copy that code into the base folder and name it without the `org/name--` prefix")


# ---------------------------------------------------------------------------------------------
# Do the method's module names exist in it


@rule("FT156", "module-not-in-base", ERROR, stage="files")
def module_not_in_base(c: CheckedSpec) -> Iterator[Hit]:
    """A LoRA target, or a `freeze`/`unfreeze`/`progressive` pattern, that names no module of the base.

    Why:
    Module names differ between architectures (BERT's `query`/`value`, DistilBERT's `q_lin`/`v_lin`,
    Llama's `q_proj`/`v_proj`). peft silently skips a LoRA target that matches nothing when another
    one matches, and fails on a target that matches only a container or a norm; a pattern that
    matches no parameter stops the run. ftc reads the names from the base's safetensors headers.

    Example:
        method lora { rank 8; alpha 16; targets ["q_lin", "v_lin"] }

    Use instead:
        method lora { rank 8; alpha 16; targets ["query", "value"] }
    """
    m, method = c.spec.model, c.spec.method
    folder = hub.resolve_base(c) if m is not None and method is not None else None
    mods = bm.modules(folder) if folder is not None else None
    if m is None or mods is None:
        return
    if method.kind in ("lora", "qlora") and method.given("targets") and tuple(method.targets) != ("all-linear",):
        for target, message, fix in _target_problems(c, mods, tuple(method.targets)):
            yield Hit(message, _item(c, method.at("targets"), target), help=fix)
    if method.kind == "full":
        yield from _pattern_hits(c, mods, method)


def _target_problems(c: CheckedSpec, mods: bm.Modules, targets: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(target, message, help) for each target the run cannot adapt, as its backend matches it."""
    m = c.spec.model
    assert m is not None
    if m.modality == "multimodal":
        yield from _clip_target_problems(mods, targets)
        return
    head = _vision_head(c) if m.modality == "vision" else None
    extra = {"lm_head"} if m.modality == "text" and m.task != "classification" else set()  # tied: not in the file
    kinds = mods.linear_kinds
    for t in targets:
        if t == head:
            continue  # the vision backend trains the head fully instead
        hits = mods.matching(t)
        if not hits and t not in extra:
            yield t, f"LoRA target `{t}` matches no module of the base", _no_match_help(t, kinds)
        elif bad := [h for h in hits if not mods.is_layer(h)]:
            yield t, (f"LoRA target `{t}` names `{bad[0]}`, which is not a layer LoRA can adapt (a container or "
                      f"a norm: no weight matrix of its own)"), f"target its linear layers instead: {_listing(kinds)}"


def _no_match_help(target: str, kinds: list[str]) -> str:
    if target == "all-linear":
        return 'write `targets ["all-linear"]` alone: with other names peft reads it as a module name'
    return f"{suggest(target.rsplit('.', 1)[-1], kinds)}layers LoRA can adapt in this base: {_listing(kinds)}"


def _clip_linears(mods: bm.Modules) -> set[str]:
    """open_clip modules LoRA can adapt (multimodal_model.py): Linear layers whose forward runs, so
    not a MultiheadAttention's out_proj (its parent holds `in_proj_weight`), nor an Embedding."""
    return {n for n, p in mods.own.items() if n and p.get("weight") == 2 and "embedding" not in n.rsplit(".", 1)[-1]
            and not (n.endswith(".out_proj") and "in_proj_weight" in mods.own.get(n.rsplit(".", 1)[0], {}))}


def _clip_target_problems(mods: bm.Modules, targets: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    linears = _clip_linears(mods)
    kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
    for t in targets:
        hits = mods.matching(t)
        if not hits:
            yield t, f"LoRA target `{t}` matches no module of the open_clip base", _no_match_help(t, kinds)
        elif not any(h in linears for h in hits):
            why = ("only the out_proj of nn.MultiheadAttention, whose forward never runs" if
                   any(h.endswith("out_proj") for h in hits) else "no Linear layer")
            yield t, f"LoRA target `{t}` names {why}: the adapter would do nothing", \
                f'target the Linear layers that run ({_listing(kinds)}) or use ["all-linear"]'


def _vision_head(c: CheckedSpec) -> str | None:
    folder = hub.resolve_base(c)
    cfg = bm.config(folder) if folder is not None else None
    pre = cfg.get("pretrained_cfg") if cfg else None
    head = pre.get("classifier") if isinstance(pre, dict) else None
    return head if isinstance(head, str) else None


def _param_names(c: CheckedSpec, mods: bm.Modules) -> list[str]:
    """The parameters the run's model has: the file's, plus the new head of a text classifier whose
    file has none (its name depends on the architecture: `classifier`, or `score` for decoders).
    A tied lm_head is no parameter of its own (named_parameters lists the embedding once)."""
    m = c.spec.model
    assert m is not None
    names = list(mods.params)
    if m.modality == "text" and m.task == "classification" and not any(
            n.startswith(HEADS) for n in names):
        names += ["classifier.weight", "classifier.bias", "score.weight"]
    return names


def _matches(names: list[str], pattern: str) -> bool:
    """A pattern matches as the runtime's; `bert.embeddings` also matches a folder saved without
    the `bert.` prefix that the loaded model adds."""
    tail = pattern.split(".", 1)[1] if "." in pattern else None
    return any(weights.name_matches(n, pattern) or (tail is not None and weights.name_matches(n, tail)) for n in names)


def _pattern_hits(c: CheckedSpec, mods: bm.Modules, method: Any) -> Iterator[Hit]:
    names = _param_names(c, mods)
    parts = sorted({p for n in names for p in n.split(".")[:-1] if not p.isdigit()})
    for key in ("unfreeze", "freeze", "progressive"):
        for pattern in getattr(method, key):
            if not _matches(names, pattern):
                yield Hit(f"`{key}` pattern `{pattern}` matches no parameter of the base",
                          _item(c, method.at(key), pattern),
                          help=f"{suggest(pattern.rsplit('.', 1)[-1], parts)}module names in this base: {_listing(parts)}")
    unfreeze, freeze = tuple(method.unfreeze), tuple(method.freeze)
    if (unfreeze or freeze) and not any((not unfreeze or any(weights.name_matches(n, p) for p in unfreeze))
                                        and not any(weights.name_matches(n, p) for p in freeze) for n in names):
        yield Hit("`freeze`/`unfreeze` leave no parameter of the base to train", method.at("freeze" if freeze else
                  "unfreeze"), help="freeze less, or unfreeze what should train")


# ---------------------------------------------------------------------------------------------
# Does its head fit the labels


@rule("FT158", "base-head-labels", WARNING, stage="files")
def base_head_labels(c: CheckedSpec) -> Iterator[Hit]:
    """A text classifier base whose trained head does not match the spec's labels.

    Why:
    A base saved as a sequence classifier carries a head trained for its own classes. With another
    number of labels, ftc loads it with a new, untrained head (transformers' `ignore_mismatched_sizes`):
    the head's training is lost, and the base's evaluation scores a random head. With as many labels
    but other names (or another order), the old head is kept and its rows are read, by position, as
    the spec's labels.

    Example:
        model { modality text; base "hf:org/classifier"; revision "3f2a9c1"; task classification; labels ["billing", "bug", "account"]; params 110M }

    Use instead:
        model { modality text; base "hf:org/classifier"; revision "3f2a9c1"; task classification; labels ["billing", "bug"]; params 110M }
    """
    m = c.spec.model
    folder = hub.resolve_base(c) if m is not None else None
    head = _head_labels(bm.config(folder)) if folder is not None else None
    if m is None or folder is None or head is None or not m.labels or m.modality != "text" \
            or m.task != "classification":
        return
    labels = list(m.labels)
    if len(head) != len(labels):
        yield Hit(f"the base's classification head has {len(head)} classes and the spec {len(labels)} labels: "
                  "ftc replaces it with a new, untrained head", m.at("labels"),
                  detail=f"the base's classes: {', '.join(head)}",
                  help="expected when the base is a classifier for other classes; else use its labels, or an "
                       "encoder saved without a classification head")
    elif head != labels and not all(h == f"LABEL_{i}" for i, h in enumerate(head)):
        quoted = ", ".join(f'"{h}"' for h in head)
        reordered = sorted(head) == sorted(labels)
        yield Hit(f"the base's classification head names its classes {'in another order' if reordered else 'otherwise'} "
                  f"({', '.join(head)}): ftc keeps it and reads its rows, by position, as the spec's labels",
                  m.at("labels"),
                  help=f"write the labels in the head's order: `labels [{quoted}]`" if reordered else
                  "if these are the spec's classes, write the head's names in its order; if not, start from the "
                  "encoder saved without this head")


def _head_labels(cfg: dict[str, Any] | None) -> list[str] | None:
    """The class names of a saved sequence-classification head (config.json), else None."""
    archs = cfg.get("architectures") if cfg else None
    if cfg is None or not isinstance(archs, list) or not any(str(a).endswith("ForSequenceClassification")
                                                             for a in archs):
        return None
    id2label = cfg.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            return [str(id2label[k]) for k in sorted(id2label, key=int)]
        except ValueError:
            return None
    n = cfg.get("num_labels")
    return [f"LABEL_{i}" for i in range(n)] if isinstance(n, int) and n > 0 else None
