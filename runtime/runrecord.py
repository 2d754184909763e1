"""The run record: what one `ftc run` was, did and produced, as a typed, versioned structure.

One `RunRecord` per run lives in the registry (runtime/registry.py, as JSON) with a copy beside the
run (record.json). The run writes it (runtime/run.py); `ftc runs show`, `ftc runs diff`, `ftc gc`,
the report and the MLflow mirror read it, all through these types: nothing reads the record by key.

Format history (`format` in the JSON):
- 1 (no `format` key): the untyped dict of ftc before the typed record. Same keys as 2, so it reads as 2.
- 2: this module.

Reading is tolerant (`RunRecord.from_json`): a record written by an older ftc, or damaged by hand,
still reads; a value of the wrong type becomes its default and is named in `problems`, keys this
version does not know are kept in `other` and written back unchanged. A record of a newer format
than this ftc knows is refused (`RecordFormatError`) rather than rewritten without what it holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict, Union

FORMAT = 2

JSON = Union[str, int, float, bool, None, list["JSON"], dict[str, "JSON"]]  # noqa: UP007 (a recursive alias)
JSONMap = dict[str, JSON]


class RecordFormatError(ValueError):
    """A record written by a newer ftc than this one."""


@dataclass(frozen=True)
class GateRecord:
    gate: str  # as written: "f1 >= 0.85 on test.email"
    value: float | None
    before: float | None  # the base model's value, when there is one
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class Removal:
    """`ftc gc` removed the artifact."""

    by: str
    at: float
    user: str | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """The trained model in the content-addressed store (or where training left it, `store` false)."""

    kind: str = ""
    source: str | None = None
    path: str | None = None
    sha256: str | None = None
    merged: str | None = None
    merged_sha256: str | None = None
    store: bool = True
    store_error: str | None = None
    stored_new: bool | None = None
    merged_stored_new: bool | None = None
    removed: Removal | None = None

    def paths(self) -> list[tuple[str, str | None]]:
        """(folder, sha256) of the model and of its merged copy, none once removed."""
        if self.removed is not None:
            return []
        return [(p, digest) for p, digest in ((self.path, self.sha256), (self.merged, self.merged_sha256)) if p]


@dataclass(frozen=True)
class Hardware:
    machine: str | None = None
    processor: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class ForcedPromotion:
    """`ftc promote --force`: who promoted a run whose gates failed, when and why."""

    reason: str | None
    user: str
    at: float
    was: str


@dataclass(frozen=True)
class MlflowRef:
    uri: str
    run_id: str


@dataclass(frozen=True)
class Waiver:
    code: str
    reason: str


class RunRow(TypedDict):
    """A run as the registry holds it: the row's columns, and the record."""

    id: str
    spec_name: str
    status: str
    plan_hash: str
    started: float
    finished: float | None
    record: RunRecord


@dataclass(frozen=True)
class RunRecord:
    run_id: str = ""
    run_dir: str = ""
    status: str | None = None  # the registry row's status holds the truth; this is its copy at the last write
    # lineage: what the run was made of (copies of the plan's sections; runtime/run.py `lineage`)
    ftc_version: str | None = None
    plan_hash: str | None = None
    spec: JSONMap = field(default_factory=dict)  # path, name, sha256, files
    spec_text: str | None = None
    spec_sources: dict[str, str] = field(default_factory=dict)
    base: JSONMap = field(default_factory=dict)  # ref, revision, local, sha256
    data: JSONMap = field(default_factory=dict)  # sizes, hashes, after_dedup, ...
    method: JSONMap = field(default_factory=dict)
    seed: int | None = None
    training: dict[str, JSONMap] = field(default_factory=dict)  # train node id -> its parameters
    artifacts_keep: int | None = None  # `train { artifacts keep N }`, read by `ftc gc`
    versions: dict[str, str | None] = field(default_factory=dict)
    python: str | None = None
    hardware: Hardware = field(default_factory=Hardware)
    git_commit: str | None = None
    user: str | None = None
    waivers: tuple[Waiver, ...] = ()
    # this process
    options: JSONMap = field(default_factory=dict)
    pid: int | None = None
    resumed: int = 0
    # outcome
    gates: tuple[GateRecord, ...] = ()
    metrics: dict[str, JSONMap] = field(default_factory=dict)  # "base:test" / "tuned:test" / "latency" -> values
    slices: dict[str, JSONMap] = field(default_factory=dict)
    extra: dict[str, JSONMap] = field(default_factory=dict)
    history: tuple[JSONMap, ...] = ()  # step and eval events
    artifact: ArtifactRecord | None = None
    error: str | None = None
    failed_rank: int | None = None  # the process of a distributed training node that failed first
    interrupted_by: str | None = None
    forced_promotion: ForcedPromotion | None = None
    mlflow: MlflowRef | None = None
    # keys this version of ftc does not know (a newer minor writer): kept, written back unchanged
    other: JSONMap = field(default_factory=dict, compare=False)
    problems: tuple[str, ...] = field(default=(), compare=False)  # what did not read (not written)

    @property
    def spec_path(self) -> str | None:
        return _str(self.spec.get("path"))

    @property
    def spec_name(self) -> str | None:
        return _str(self.spec.get("name"))

    @property
    def gates_passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def failed_gates(self) -> list[str]:
        return [g.gate for g in self.gates if not g.passed]

    def but(self, **changes: Any) -> RunRecord:
        """A copy with `changes` (dataclasses.replace, typed by the fields)."""
        return replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> JSONMap:
        out: JSONMap = dict(self.other)
        for f in fields(self):
            if f.name not in ("other", "problems", "artifacts_keep"):
                out[f.name] = _plain(getattr(self, f.name))
        out["retention"] = {"artifacts_keep": self.artifacts_keep}
        out["format"] = FORMAT
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, default=str)

    @classmethod
    def loads(cls, text: str) -> RunRecord:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            return cls(problems=(f"the record is not JSON: {err}",))
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: object) -> RunRecord:
        """Read a record of format 1 or 2 (tolerantly: see the module's docstring)."""
        if not isinstance(obj, Mapping):
            return cls(problems=(f"the record is a {type(obj).__name__}, not an object",))
        version = obj.get("format", 1)
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
            raise RecordFormatError(f"this run record has format {version}; this ftc reads formats 1 to {FORMAT}: "
                                    "upgrade ftc to read it")
        r = _Reader(obj)
        known = {f.name for f in fields(cls)} | {"retention", "format"}
        retention = r.mapping("retention")
        return cls(
            run_id=r.text("run_id") or "", run_dir=r.text("run_dir") or "", status=r.text("status"),
            ftc_version=r.text("ftc_version"), plan_hash=r.text("plan_hash"), spec=r.mapping("spec"),
            spec_text=r.text("spec_text"), spec_sources=r.str_map("spec_sources"), base=r.mapping("base"),
            data=r.mapping("data"), method=r.mapping("method"), seed=r.integer("seed"),
            training=r.map_of_maps("training"),
            artifacts_keep=_int(retention.get("artifacts_keep")),
            versions={k: _str(v) for k, v in r.mapping("versions").items()}, python=r.text("python"),
            hardware=r.typed("hardware", Hardware) or Hardware(), git_commit=r.text("git_commit"),
            user=r.text("user"), waivers=r.typed_list("waivers", Waiver), options=r.mapping("options"),
            pid=r.integer("pid"), resumed=r.integer("resumed") or 0, gates=r.typed_list("gates", GateRecord),
            metrics=r.map_of_maps("metrics"), slices=r.map_of_maps("slices"), extra=r.map_of_maps("extra"),
            history=tuple(e for e in r.array("history") if isinstance(e, dict)),
            artifact=r.artifact(), error=r.text("error"), failed_rank=r.integer("failed_rank"),
            interrupted_by=r.text("interrupted_by"),
            forced_promotion=r.typed("forced_promotion", ForcedPromotion), mlflow=r.typed("mlflow", MlflowRef),
            other={k: v for k, v in obj.items() if k not in known}, problems=tuple(r.problems))


def _plain(value: object) -> JSON:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "float": (int, float), "bool": (bool,), "int": (int,)}


class _Reader:
    """Reads one record's JSON; what has the wrong type becomes the default and is noted."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.obj, self.problems = obj, list[str]()

    def _get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        v = self.obj.get(key)
        if v is None:
            return None
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            self.problems.append(f"`{key}` is not {what} ({type(v).__name__}): ignored")
            return None
        return v

    def text(self, key: str) -> str | None:
        v: str | None = self._get(key, (str,), "a string")
        return v

    def integer(self, key: str) -> int | None:
        v: int | None = self._get(key, (int,), "an integer")
        return v

    def mapping(self, key: str) -> JSONMap:
        v = self._get(key, (dict,), "an object")
        return dict(v) if v else {}

    def array(self, key: str) -> list[JSON]:
        v = self._get(key, (list,), "a list")
        return list(v) if v else []

    def str_map(self, key: str) -> dict[str, str]:
        return {k: v for k, v in self.mapping(key).items() if isinstance(v, str)}

    def map_of_maps(self, key: str) -> dict[str, JSONMap]:
        out = {}
        for k, v in self.mapping(key).items():
            if isinstance(v, dict):
                out[k] = v
            else:
                self.problems.append(f"`{key}.{k}` is not an object: ignored")
        return out

    def typed(self, key: str, cls: type[Any]) -> Any:
        v = self._get(key, (dict,), "an object")
        return None if v is None else self.build(key, cls, v)

    def typed_list(self, key: str, cls: type[Any]) -> tuple[Any, ...]:
        built = (self.build(f"{key}[{i}]", cls, v) if isinstance(v, dict) else None
                 for i, v in enumerate(self.array(key)))
        return tuple(b for b in built if b is not None)

    def build(self, where: str, cls: type[Any], v: Mapping[str, Any]) -> Any:
        """A dataclass from an object whose scalar fields have the annotated types (else None, noted)."""
        args: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in v or v[f.name] is None:
                if str(f.type).endswith("| None"):
                    args[f.name] = None  # an optional value not recorded
                continue
            want = str(f.type).replace(" | None", "")
            value = v[f.name]
            kinds = _SCALARS.get(want)
            if kinds is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and want != "bool")):
                self.problems.append(f"`{where}.{f.name}` is not a {want}: ignored")
                continue
            args[f.name] = float(value) if want == "float" else value
        try:
            return cls(**args)
        except TypeError:
            self.problems.append(f"`{where}` lacks a required field: ignored")
            return None

    def artifact(self) -> ArtifactRecord | None:
        v = self._get("artifact", (dict,), "an object")
        if v is None:
            return None
        art: ArtifactRecord | None = self.build("artifact", ArtifactRecord, {k: x for k, x in v.items()
                                                                             if k != "removed"})
        removed = v.get("removed")
        if art is not None and isinstance(removed, dict):
            art = replace(art, removed=self.build("artifact.removed", Removal, removed))
        return art
