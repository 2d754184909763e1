"""The front end's driver: file -> parse -> resolve (with extends) -> rules -> suppressions.

`check_file` returns a FileResult holding the CheckedSpec (None when the spec could not be built)
and every diagnostic, sorted. Nothing here imports torch or any ML library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ftc.compiler import ast, limits, paths, schema
from ftc.compiler.checked import CheckedSpec, CheckOptions, display_path, path_problems
from ftc.compiler.diagnostics import (
    Diagnostic,
    has_errors,
    make,
    sort_diagnostics,
)
from ftc.compiler.parser import parse
from ftc.compiler.resolve import Decoded, build, decode, merge, stray_overrides
from ftc.compiler.source import Source, Span
from ftc.compiler.suppress import Waiver, apply_suppressions


@dataclass(frozen=True)
class FileResult:
    path: str
    kind: str  # spec | defaults | unreadable
    checked: CheckedSpec | None
    diagnostics: tuple[Diagnostic, ...]
    sources: Mapping[str, Source]
    waivers: tuple[Waiver, ...] = ()

    @property
    def ok(self) -> bool:
        return not has_errors([d for d in self.diagnostics if d.suppressed_reason is None])


def load_source(path: Path, limit: int | None = None) -> tuple[Source | None, Diagnostic | None]:
    """A spec file's text, or the located reason it cannot be read. Only a regular file is opened
    (non-blocking: a FIFO never hangs it), and at most `limit` bytes (limits.spec_file_bytes) are
    read, so `/dev/zero` or a huge file costs nothing."""
    shown = display_path(path)
    nowhere = Span(shown, 0, 0, 1, 1, 1, 1)
    cap = limits.SPEC_FILE_BYTES.value if limit is None else limit
    refused = _unreadable(path, shown, nowhere, cap)
    if refused is not None:
        return None, refused
    try:
        raw = paths.read_regular(path, cap)
    except IsADirectoryError:
        return None, _folder(shown, nowhere)
    except PermissionError:
        return None, make("FT029", f"cannot read {shown}: permission denied", nowhere, help=_PERMISSION)
    except OSError as err:
        return None, make("FT006", f"cannot read {shown}: {err.strerror or err}", nowhere,
                          help="check that the path names a readable .ftspec file")
    if len(raw) > cap:
        return None, _too_large(shown, nowhere, cap, f"more than {cap:,} bytes")
    return _decode(raw, shown, nowhere)


_PERMISSION = "give the user running ftc read access to the file and its folders (`ls -l`, `chmod u+r`)"


def _folder(shown: str, nowhere: Span) -> Diagnostic:
    return make("FT006", f"{shown} is a folder, not a spec file", nowhere,
                help="pass the folder to `ftc check` to check every .ftspec file in it")


def _too_large(shown: str, nowhere: Span, cap: int, size: str) -> Diagnostic:
    return make("FT023", f"{shown} is {size}: a spec file may hold at most {cap:,}", nowhere,
                help=f"a spec is a page of settings; {limits.SPEC_FILE_BYTES.help(cap)}")


def _unreadable(path: Path, shown: str, nowhere: Span, cap: int) -> Diagnostic | None:
    """What stops `path` being read as a spec file, judged before it is opened."""
    kind = paths.kind_of(path)
    if kind.kind == paths.MISSING:
        return make("FT006", f"no such file: {shown}", nowhere, help="check the path")
    if kind.kind == paths.LOOP:
        return make("FT029", f"{shown} is a symlink loop: following its links leads back to a link already followed",
                    nowhere, help="point the link at the real file (`ls -l` shows where each link leads)")
    if kind.kind == paths.DENIED:
        return make("FT029", f"cannot read {shown}: permission denied", nowhere, help=_PERMISSION)
    if kind.kind == paths.FOLDER:
        return _folder(shown, nowhere)
    if kind.kind == paths.SPECIAL:
        return make("FT027", f"{shown} is {kind.words}, not a spec file", nowhere,
                    help="name a regular .ftspec file: ftc reads only regular files (a device or a pipe never ends)")
    if kind.size > cap:
        return _too_large(shown, nowhere, cap, f"{kind.size:,} bytes")
    return None


def _decode(raw: bytes, shown: str, nowhere: Span) -> tuple[Source | None, Diagnostic | None]:
    if b"\x00" in raw:
        return None, make("FT006", f"{shown} is a binary file, not a spec", nowhere,
                          help="a .ftspec file is UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        good = raw[: err.start].decode("utf-8")
        src = Source(shown, good)
        at = src.span(len(good), len(good))
        return None, make("FT006", f"{shown} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})",
                          at, help="save the file as UTF-8")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    return Source(shown, text), None


class _Loader:
    """Parses a file and the files it extends; merges their decoded bodies. Every file it opens
    lies inside `roots`; a chain of `extends` is at most limits.extends_depth files long."""

    def __init__(self, roots: paths.Roots) -> None:
        self.roots = roots
        self.bounds = limits.current()
        self.sources: dict[str, Source] = {}
        self.diags: list[Diagnostic] = []
        self.files: dict[str, ast.SpecFile] = {}

    def load(self, path: Path, via: Span | None = None, chain: tuple[Path, ...] = ()) -> Decoded | None:
        real = paths.real(path)
        refused = self.refuse(path, real, via, chain)
        if refused is not None:
            self.diags.append(refused)
            return None
        src, err = load_source(path, self.bounds.spec_file_bytes)
        if err is not None:
            self.diags.append(err if via is None else _via(err, path, via))
            return None
        assert src is not None
        self.sources[src.path] = src
        tree, diags = parse(src)
        self.diags.extend(diags)
        if tree is None:
            return None
        self.files[src.path] = tree
        base: Decoded | None = None
        for ext in tree.extends:
            parent = self.load(paths.spec_path(ext.value, path.parent), ext.span, (*chain, real))
            if parent is not None:
                base = parent if base is None else merge(base, parent, self.diags.append)
        own = decode(tree.body, schema.Spec, self.diags.append)
        own.head = tree.name.span if tree.name else tree.span
        if base is None:
            stray_overrides(own, self.diags.append)
            return own
        return merge(base, own, self.diags.append)

    def refuse(self, path: Path, real: Path, via: Span | None, chain: tuple[Path, ...]) -> Diagnostic | None:
        """Why `path` is not opened: outside the roots, a cycle, or a chain too long."""
        shown = display_path(path)
        if not self.roots.contains(real):
            at = via or Span(shown, 0, 0, 1, 1, 1, 1)
            what = f"`extends` names {shown}, which" if via is not None else f"{shown}"
            return make("FT028", f"{what} lies outside the project root", at, help=self.roots.help())
        if real in chain:
            assert via is not None
            return make("FT017", f"`extends` cycle: {shown} extends itself", via,
                        help="remove one `extends` so that the chain ends")
        if len(chain) >= self.bounds.extends_depth:
            assert via is not None
            cap = self.bounds.extends_depth
            return make("FT024", f"`extends` chains more than {cap} files", via,
                        help=f"extend the shared defaults directly; {limits.EXTENDS_DEPTH.help(cap)}")
        return None


def _via(err: Diagnostic, path: Path, via: Span) -> Diagnostic:
    """A file named by `extends` that cannot be read: said at the `extends` line."""
    shown = display_path(path)
    reason = err.message.replace(f": {shown}", "").replace(f"{shown} ", "")
    code = "FT017" if err.code == "FT006" else err.code
    return make(code, f"cannot extend {shown}: {reason}", via, help=err.help)


DEFAULT_OPTIONS = CheckOptions()


def check_file(path: Path, options: CheckOptions = DEFAULT_OPTIONS) -> FileResult:
    from ftc.compiler.rules import run_rules  # the table imports every rule module

    roots = paths.project_root(path, Path(options.root) if options.root else None)
    loader = _Loader(roots)
    decoded = loader.load(path)
    shown = display_path(path)
    root = loader.files.get(shown)
    if decoded is None or root is None:
        return _result(shown, "unreadable" if root is None else root.kind, None, loader)
    partial = root.kind == "defaults"
    spec = build(decoded, loader.diags.append, partial=partial)
    if partial:
        return _result(shown, "defaults", None, loader)
    assert root.name is not None
    checked = CheckedSpec(shown, root.name.value, spec, path.parent, loader.sources, options, roots=roots)
    loader.diags.extend(path_problems(checked))
    if not has_errors(loader.diags):
        cached: list[Diagnostic] | None = None
        key: str | None = None
        if not options.no_data:
            checked, cached, key = _with_data(checked)
        loader.diags.extend(run_rules(checked, skip_data=cached is not None))
        if cached is not None:
            loader.diags.extend(cached)
        elif checked.data is not None and key is not None:
            _store_data_result(key, checked, loader.diags)
    return _result(shown, "spec", checked, loader)


def _data_key(checked: CheckedSpec) -> str:
    from ftc.compiler.data import cache
    from ftc.compiler.data.analyze import data_paths

    texts = sorted((path, src.text) for path, src in checked.sources.items())
    digests = [(p.as_posix(), cache.file_digest(p)) for p in data_paths(checked)]
    return cache.key_of("data-check", checked.path, texts, digests, checked.options.tokenize)


def _with_data(checked: CheckedSpec) -> tuple[CheckedSpec, list[Diagnostic] | None, str | None]:
    """Read the data unless a file is missing (FT180 says which). On a cache hit for unchanged
    spec and data, return the recorded sizes, hashes and data diagnostics instead of reading.
    The cache key is computed once, before reading, so a result is stored under what was read."""
    from ftc.compiler.checked import named_files
    from ftc.compiler.data import cache
    from ftc.compiler.data.analyze import DataReport, analyze
    from ftc.compiler.diagnostics import from_dict

    if checked.spec.data is None:
        return checked, None, None
    if any(not checked.resolve_path(p, at).exists() for _, p, at in named_files(checked)):
        return checked, None, None
    key = _data_key(checked)
    hit = cache.load("check", key)
    if isinstance(hit, dict):
        try:
            report = DataReport(sizes=dict(hit["sizes"]), hashes=dict(hit["hashes"]))
            return replace(checked, data=report), [from_dict(d) for d in hit["diagnostics"]], key
        except (KeyError, TypeError, ValueError):
            pass  # a damaged entry is a miss
    return replace(checked, data=analyze(checked)), None, key


def with_rows(checked: CheckedSpec) -> CheckedSpec:
    """The spec with its data rows in memory (a cached check keeps only sizes and hashes)."""
    from ftc.compiler.data.analyze import analyze

    if checked.data is not None and getattr(checked.data, "parts", None):
        return checked
    return replace(checked, data=analyze(checked))


def _store_data_result(key: str, checked: CheckedSpec, diags: list[Diagnostic]) -> None:
    from ftc.compiler.data import cache
    from ftc.compiler.diagnostics import to_dict
    from ftc.compiler.rules import rule_for_or_none

    if checked.data is None:
        return
    mine = [to_dict(d) for d in diags if (r := rule_for_or_none(d.code)) is not None and r.stage == "data"]
    cache.store("check", key, {**checked.data.summary(), "diagnostics": mine})


def _result(shown: str, kind: str, checked: CheckedSpec | None, loader: _Loader) -> FileResult:
    comments = [c for f in loader.files.values() for c in f.comments]
    diags, waivers = apply_suppressions(loader.diags, comments)
    return FileResult(shown, kind, checked, tuple(sort_diagnostics(diags)), loader.sources, tuple(waivers))

