"""Read the data a spec names, check rows against their contract, realise the splits.

`analyze(checked)` returns a DataReport: the tables read, the realised parts (train/val/test)
with sizes and content hashes, and the located problems met on the way. Data rules
(compiler/rules/data.py) read the report; the plan and the registry record its sizes and hashes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s
from ftc.compiler.data.fields import input_fields, row_text, target_field  # noqa: F401 (re-exported)
from ftc.compiler.data.splits import Part, presplit, split_source
from ftc.compiler.data.table import RowProblem, Table

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec
    from ftc.compiler.data.stream import Read, Source
    from ftc.compiler.source import Span


@dataclass
class EvalSet:
    """A data file a gate evaluates on (`gate regression <= 0.02 vs base on "data/general.jsonl"`),
    read as `ftc run` reads it (format inferred, the spec's `fields` applied) and checked against
    the signal's row contract. `usable` counts the rows that parsed and satisfy the contract."""

    dataset: str  # the path as the gate writes it
    part: Part
    usable: int
    span: Span | None  # the gate's file string in the spec


@dataclass
class DataReport:
    sizes: dict[str, int] = field(default_factory=dict)  # realised split sizes
    hashes: dict[str, str] = field(default_factory=dict)  # content hash per split
    parts: dict[str, Part] = field(default_factory=dict)  # rows (absent when restored from cache)
    tables: list[Table] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    bad_rows: dict[str, int] = field(default_factory=dict)  # display path -> rows not usable
    stages: dict[str, dict[str, Part]] = field(default_factory=dict)  # rlhf stage -> parts
    evalsets: dict[str, EvalSet] = field(default_factory=dict)  # gate's path as written -> its file's rows

    def summary(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "hashes": self.hashes}


def _read(c: CheckedSpec, data: s.Data, f: s.DataFile, mapping: dict[str, str], stage: str | None,
          report: DataReport) -> Table:
    from ftc.compiler.checked import display_path
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table

    real = c.resolve_path(f.path, f.span)
    root = c.resolve_path(data.image_root, data.at("image_root")) if data.image_root else None
    table = read_table(real, display_path(real), data.format, image_root=root)
    _collect(table, report)
    _validate(c, table, stage, report, mapping)
    if mapping:  # checked against the contract with the user's column names, analysed with the spec's
        table.rows = apply_mapping(table.rows, mapping)
    report.tables.append(table)
    return table


def _schema(c: CheckedSpec, stage: str | None, report: DataReport) -> dict[str, Any]:
    from ftc.compiler.data.access import read_regular
    from ftc.compiler.data.contracts import row_schema
    from ftc.compiler.data.limits import LimitExceeded, current

    output_schema = None
    model = c.spec.model
    if model is not None and model.output_schema is not None:
        try:
            path = c.resolve_path(model.output_schema, model.at("output_schema"))
            output_schema = json.loads(read_regular(path, current().json_document_bytes, "json_document_bytes")
                                       .decode("utf-8"))
        except (OSError, ValueError, LimitExceeded) as err:
            report.problems.append(RowProblem(model.output_schema, None, None,
                                              f"cannot read the output schema: {err}", "fix the JSON Schema file"))
    return row_schema(c.spec, stage, output_schema=output_schema)


def _validate(c: CheckedSpec, table: Table, stage: str | None, report: DataReport,
              mapping: dict[str, str]) -> int:
    from ftc.compiler.data.contracts import validate_rows

    problems, invalid = validate_rows(table, _schema(c, stage, report), mapping=mapping)
    _verdict(table.path, problems, invalid, report)
    return invalid


def _verdict(path: str, problems: list[RowProblem], invalid: int, report: DataReport) -> None:
    report.problems.extend(problems)
    if invalid:  # reported by FT201 (an error); the rows stay in the analysis so that counts are true
        report.bad_rows[path] = report.bad_rows.get(path, 0) + invalid


def _source(c: CheckedSpec, data: s.Data, f: s.DataFile, mapping: dict[str, str], stage: str | None,
            report: DataReport) -> Source | None:
    """A streaming reader for a data file in a format that streams (jsonl, csv, parquet), else None."""
    from ftc.compiler.checked import display_path
    from ftc.compiler.data.readers import TableStream
    from ftc.compiler.data.stream import Source, streams

    if data.image_root is not None:
        return None
    real = c.resolve_path(f.path, f.span)
    stream = TableStream(real, display_path(real), data.format)
    if not streams(stream):
        return None
    return Source(stream, mapping, _schema(c, stage, report))


def _streamed(read: Read, report: DataReport) -> None:
    """Record a streamed file's header and contract verdict, in the order `_read` does."""
    _collect(read.table, report)
    _verdict(read.table.path, read.problems, read.invalid, report)
    report.tables.append(read.table)


def _parts(c: CheckedSpec, data: s.Data, stage: str | None, report: DataReport) -> dict[str, Part]:
    from ftc.compiler.data.stats import PartStats, wants
    from ftc.compiler.data.stream import SplitPlan, stream_part, stream_split

    mapping = dict(data.fields.mapping) if data.fields is not None else {}
    if data.source is not None and data.split is not None:
        source = _source(c, data, data.source, mapping, stage, report)
        if source is not None:
            plan = SplitPlan(tuple(data.split.ratios), data.split.by, data.split.key, data.seed, data.stratify)
            parts, read, problems = stream_split(source, plan, PartStats(wants(c, stage)))
            _streamed(read, report)
            report.problems.extend(problems)
            return parts
        table = _read(c, data, data.source, mapping, stage, report)
        parts, problems = split_source(table, data.split.ratios, data.split.by, data.split.key, data.seed,
                                       data.stratify)
        report.problems.extend(problems)
        return parts
    tables: dict[str, Table] = {}
    streamed: dict[str, Part] = {}
    for name in ("train", "val", "test"):
        f = getattr(data, name)
        if f is None:
            continue
        source = _source(c, data, f, mapping, stage, report) if name == "train" else None
        if source is not None:
            streamed[name], read = stream_part(source, name, PartStats(wants(c, stage)))
            _streamed(read, report)
        else:
            tables[name] = _read(c, data, f, mapping, stage, report)
    held = presplit(tables)
    return {name: streamed[name] if name in streamed else held[name] for name in ("train", "val", "test")
            if name in streamed or name in held}


def _collect(table: Table, report: DataReport) -> None:
    report.problems.extend(table.problems)
    if table.bad_rows:
        report.bad_rows[table.path] = report.bad_rows.get(table.path, 0) + table.bad_rows


def analyze(c: CheckedSpec) -> DataReport:
    report = DataReport()
    spec = c.spec
    if spec.data is not None:
        report.parts = _parts(c, spec.data, None, report)
        report.sizes = {n: len(p) for n, p in report.parts.items()}
        report.hashes = {n: p.sha256 for n, p in report.parts.items()}
    sig = spec.signal
    if sig is not None and sig.kind == "rlhf":
        for stage in ("reward",):
            node = sig.reward
            if node is not None and node.data is not None:
                report.stages[stage] = _parts(c, node.data, stage, report)
                for n, p in report.stages[stage].items():
                    report.sizes[f"{stage}.{n}"] = len(p)
                    report.hashes[f"{stage}.{n}"] = p.sha256
    _evalsets(c, report)
    return report


def gate_file_span(c: CheckedSpec, gate: s.Gate) -> Span:
    """The span of a gate's file string (`on "data/general.jsonl"`), else the whole gate."""
    src = c.sources.get(gate.span.path)
    if src is not None:
        text = src.text[gate.span.start:gate.span.end]
        found = [m for m in _ON_FILE.finditer(text)]
        if found:
            m = found[-1]
            return src.span(gate.span.start + m.start(1), gate.span.start + m.end(1))
    return gate.span


_ON_FILE = re.compile(r'\bon\s+("(?:[^"\\\n]|\\.)*")')


def _evalsets(c: CheckedSpec, report: DataReport) -> None:
    """Read every data file a gate evaluates on, as `ftc run` does (runtime/backends/text_eval.py
    `read_rows`: format inferred, `fields` applied), and check its rows against the contract of
    the signal's own data (an RLHF policy is evaluated on prompts). A file that is also one of the
    spec's splits is not validated twice: its problems are reported once, for the split."""
    from ftc.compiler.checked import display_path
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table

    spec = c.spec
    if spec.eval is None:
        return
    data = spec.data
    mapping = dict(data.fields.mapping) if data is not None and data.fields is not None else {}
    stage = "policy" if spec.signal is not None and spec.signal.kind == "rlhf" else None
    split_files = {t.path for t in report.tables}
    seen: set[Path] = set()
    for g in spec.eval.gates:
        if g.dataset is None:
            continue
        real = c.resolve_path(g.dataset, g.span)
        key = real.resolve()
        if key in seen or not real.exists():  # a missing file is FT180's finding
            continue
        seen.add(key)
        shown = display_path(real)
        table = read_table(real, shown)
        invalid = 0
        if shown not in split_files:
            _collect(table, report)
            invalid = _validate(c, table, stage, report, mapping)
        if mapping:
            table.rows = apply_mapping(table.rows, mapping)
        part = presplit({shown: table})[shown]
        report.evalsets[g.dataset] = EvalSet(g.dataset, part, max(0, len(table.rows) - invalid),
                                             gate_file_span(c, g))


def data_paths(c: CheckedSpec) -> list[Path]:
    """Every data file or folder the analysis reads (for cache keys)."""
    from ftc.compiler.checked import named_files

    return [c.resolve_path(p, at) for what, p, at in named_files(c) if what != "base model folder"]

