"""The content of a run report, independent of its format: sections of tables, plots and text.

`build(row)` reads one registry row (`Registry().get(run_id)`) and, when the run folder is still on
disk, its `events.jsonl` (every event; the record's `history` is the fallback). Each section builder
tolerates records of any age or shape: what is absent is said, in the section and in "What is
missing", never raised. `report.py` renders the sections as HTML or Markdown.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.runtime import svg
from ftc.runtime.runrecord import GateRecord, RecordFormatError, RunRecord
from ftc.runtime.svg import Series


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    caption: str = ""


@dataclass(frozen=True)
class Plot:
    title: str
    svg: str


@dataclass(frozen=True)
class Pre:
    text: str


@dataclass(frozen=True)
class Para:
    text: str


Block = Table | Plot | Pre | Para


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Run:
    row: dict[str, Any]
    rec: RunRecord
    events: list[dict[str, Any]]
    source: str
    missing: list[str]


GATE = re.compile(r"^(?P<metric>\S+) (?P<op>>=|<=|==|!=|>|<) (?P<threshold>\S+)")
PREFERRED = ("f1.macro", "f1", "accuracy", "exact_match", "reward_accuracy", "recall_at_k", "loss")


def d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def lst(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def num(v: Any) -> str:
    """A cell's text: numbers to 4 significant digits, missing values as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "NaN" if math.isnan(v) else "inf" if v > 0 else "-inf"
        return f"{v:.0f}" if 1e4 <= abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def fnum(v: Any) -> float | None:
    """A number to plot (NaN and inf kept, for the chart to count as not drawn), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def when(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if svg.finite(t) else "not recorded"


def lookup(metrics: dict[str, Any], metric: str) -> str | None:
    """The key under which `metric` (as a gate names it: f1.macro) is stored: f1.macro, f1_macro or f1."""
    for key in (metric, metric.replace(".", "_", 1), f"eval_{metric}", metric.split(".")[0]):
        if key in metrics:
            return key
    return None


def record_of(row: dict[str, Any]) -> tuple[RunRecord, list[str]]:
    """The row's record (typed already from the registry; a plain JSON object from elsewhere) and what
    of it did not read."""
    rec = row.get("record")
    if isinstance(rec, RunRecord):
        return rec, list(rec.problems)
    if not rec:
        return RunRecord(), ["the record is empty"]
    try:
        typed = RunRecord.from_json(rec)
    except RecordFormatError as err:
        return RunRecord(), [str(err)]
    return typed, list(typed.problems)


def gates(run: Run) -> tuple[GateRecord, ...]:
    return run.rec.gates


def gate_metrics(run: Run) -> list[tuple[str, str, str, float | None]]:
    """(gate text, metric, threshold as written, threshold as a number) of gates on a model metric."""
    out = []
    for g in gates(run):
        m = GATE.match(g.gate)
        if m and not m["metric"].startswith(("latency", "regression")):
            try:
                value: float | None = float(m["threshold"])
            except ValueError:
                value = None
            out.append((g.gate, m["metric"], f"{m['op']} {m['threshold']}", value))
    return out


def load_events(rec: RunRecord, missing: list[str]) -> tuple[list[dict[str, Any]], str]:
    run_dir = rec.run_dir
    if run_dir:
        path = Path(run_dir) / "events.jsonl"
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            missing.append(f"the event log {path} is not on disk: curves come from the record's history")
        else:
            events, bad = [], 0
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(event, dict):
                    events.append(event)
            if bad:
                missing.append(f"{bad} unreadable line(s) of {path} were skipped")
            return events, str(path)
    else:
        missing.append("the record names no run folder: curves come from the record's history")
    return [dict(e) for e in rec.history], "the record's history"


def phases(events: list[dict[str, Any]]) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Training curves per training node: (step events, in-training eval events), by step, deduplicated
    (a resumed run logs some steps twice; the later one wins). Without node events, a step that goes
    back starts a new phase."""
    named = any(e.get("event") == "node" for e in events)
    found: dict[str, tuple[dict[int, dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]] = {}
    current, count, last = "train", 1, -1.0
    for e in events:
        kind, step = e.get("event"), e.get("step")
        if kind == "node":
            current = str(e.get("id"))
            continue
        if kind not in ("step", "eval") or not svg.finite(step) or "model" in e or "id" in e:
            continue
        if not named and kind == "step":
            if step < last:
                count += 1
                current = f"train ({count})"
            last = step
        steps, evals = found.setdefault(current, ({}, {}))
        if kind == "step":
            steps[int(step)] = e
        else:
            evals[(str(e.get("split", "val")), int(step))] = e
    return {name: ([s[k] for k in sorted(s)], [v[k] for k in sorted(v)]) for name, (s, v) in found.items()}


# ---------------------------------------------------------------------------------------------
# Sections


def summary(run: Run) -> Section:
    row, rec = run.row, run.rec
    started, finished = row.get("started"), row.get("finished")
    took = f"{finished - started:.1f} s" if svg.finite(started) and svg.finite(finished) else "—"
    rows = [("run", num(row.get("id") or rec.run_id)), ("spec name", num(row.get("spec_name"))),
            ("status", num(row.get("status") or rec.status)),
            ("plan hash", num(row.get("plan_hash") or rec.plan_hash)),
            ("started", when(started)), ("finished", when(finished)), ("duration", took),
            ("curves from", run.source)]
    if rec.resumed:
        rows.append(("resumed", f"{rec.resumed} time(s)"))
    return Section("Summary", [Table(("field", "value"), rows)])


def gate_table(run: Run) -> Section:
    sec = Section("Gates")
    if not gates(run):
        run.missing.append("no gates were judged (the run did not reach its gates step)")
        sec.blocks.append(Para("No gate results are recorded."))
        return sec
    rows = []
    for g in gates(run):
        m = GATE.match(g.gate)
        latency = bool(m and m["metric"].startswith("latency"))
        rows.append((g.gate, _gate_cell(g.before, latency), _gate_cell(g.value, latency),
                     f"{m['op']} {m['threshold']}" if m else "—", "pass" if g.passed else "FAIL", g.note))
    sec.blocks.append(Table(("gate", "before", "after", "threshold", "result", "note"), rows))
    return sec


def _gate_cell(v: Any, latency: bool) -> str:
    """A gate's before/after value in the gate's unit: a latency (measured in seconds) in ms."""
    if latency and svg.finite(v):
        return f"{num(float(v) * 1000)} ms"
    return num(v)


def _pairs(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"tuned:test": x, "base:test": y} -> {"test": {"tuned": x, "base": y}}."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(table):
        who, sep, target = key.partition(":")
        if sep:
            out.setdefault(target, {})[who] = table[key]
    return out


def _change(a: Any, b: Any) -> str:
    fa, fb = fnum(a), fnum(b)
    return f"{fb - fa:+.4g}" if fa is not None and fb is not None and svg.finite(fa) and svg.finite(fb) else "—"


def metric_tables(run: Run) -> Section:
    sec = Section("Metrics per split (before: base model, after: tuned model)")
    pairs = _pairs(run.rec.metrics)
    if not pairs:
        run.missing.append("no evaluation metrics are recorded")
        sec.blocks.append(Para("No evaluation metrics are recorded."))
    for target, who in pairs.items():
        before, after = d(who.get("base")), d(who.get("tuned"))
        rows = [(k, num(before.get(k)), num(after.get(k)), _change(before.get(k), after.get(k)))
                for k in sorted(set(before) | set(after))]
        sec.blocks.append(Table(("metric", "before", "after", "change"), rows, caption=f"split: {target}"))
    return sec


def _chart_metrics(run: Run, available: dict[str, Any]) -> list[str]:
    names = [lookup(available, m) for _, m, _, _ in gate_metrics(run)]
    chosen = list(dict.fromkeys(n for n in names if n is not None))
    return (chosen or [p for p in PREFERRED if p in available][:1])[:2]


def slice_tables(run: Run) -> Section:
    sec = Section("Slices")
    pairs = _pairs(run.rec.slices)
    if not any(d(v) for who in pairs.values() for v in who.values()):
        sec.blocks.append(Para("No slice metrics are recorded (the spec declares no slices, or evaluation did "
                               "not run)."))
        return sec
    overall = _pairs(run.rec.metrics)
    for target, who in pairs.items():
        before, after = d(who.get("base")), d(who.get("tuned"))
        names = sorted(set(before) | set(after))
        rows = []
        for s in names:
            b, a = d(before.get(s)), d(after.get(s))
            rows += [(s, num(a.get("n", b.get("n"))), k, num(b.get(k)), num(a.get(k)), _change(b.get(k), a.get(k)))
                     for k in sorted((set(b) | set(a)) - {"n"})]
        sec.blocks.append(Table(("slice", "n", "metric", "before", "after", "change"), rows,
                                caption=f"split: {target}"))
        whole = overall.get(target, {})
        sample = {k: v for s in names for k, v in {**d(before.get(s)), **d(after.get(s))}.items()}
        for metric in _chart_metrics(run, sample):
            groups = [f"{target} (all)"] + names
            series = [(label, [fnum(d(whole.get(w)).get(metric))] + [fnum(d(src.get(s)).get(metric)) for s in names])
                      for label, w, src in (("before (base)", "base", before), ("after (tuned)", "tuned", after))]
            title = f"{metric} per slice of {target}, before vs after"
            sec.blocks.append(Plot(title, svg.bar_chart(title, groups, series, y_label=metric, x_label="slice")))
    return sec


def curves(run: Run) -> Section:
    sec = Section("Training curves")
    found = phases(run.events)
    if not found:
        run.missing.append("no training history (step events) is recorded")
        sec.blocks.append(Para("No training steps are recorded."))
        return sec
    by_metric: dict[str, list[tuple[str, str, float | None]]] = {}
    for text, metric, thr, value in gate_metrics(run):
        by_metric.setdefault(metric, []).append((text, thr, value))
    unseen = dict(by_metric)
    for name, (steps, evals) in found.items():
        tag = f" ({name})" if len(found) > 1 else ""
        splits = sorted({str(e.get("split", "val")) for e in evals})
        loss = [Series("train loss", [(e["step"], fnum(e.get("loss"))) for e in steps])]
        loss += [Series(f"{sp} loss", [(e["step"], fnum(e.get(lookup(e, "loss") or "loss"))) for e in evals
                                       if str(e.get("split", "val")) == sp], dashed=True) for sp in splits]
        sec.blocks.append(Plot(f"Loss{tag}", svg.line_chart(f"Loss{tag}", loss, x_label="step", y_label="loss")))
        for metric, used in by_metric.items():
            series = [Series(f"{sp} {metric}", [(e["step"], fnum(e.get(lookup(e, metric) or metric))) for e in evals
                                                if str(e.get("split", "val")) == sp and lookup(e, metric)])
                      for sp in splits]
            series = [s for s in series if s.points]
            if series:
                unseen.pop(metric, None)
                title = f"{metric} over steps{tag}"
                lines = sorted({(f"threshold {thr}", v) for _, thr, v in used if v is not None})
                chart = svg.line_chart(title, series, x_label="step", y_label=metric, hlines=lines)
                sec.blocks.append(Plot(f"{title}; gate(s): {'; '.join(t for t, _, _ in used)}", chart))
        for key, label in (("grad_norm", "gradient norm"), ("lr", "learning rate")):
            if any(key in e for e in steps):
                title = f"{label[0].upper()}{label[1:]}{tag}"
                chart = svg.line_chart(title, [Series(label, [(e["step"], fnum(e.get(key))) for e in steps])],
                                       x_label="step", y_label=label)
                sec.blocks.append(Plot(title, chart))
            else:
                sec.blocks.append(Para(f"No {label} was recorded{tag}."))
        sec.blocks.append(_throughput(steps, tag))
    for metric, used in sorted(unseen.items()):
        texts = "; ".join(t for t, _, _ in used)
        sec.blocks.append(Para(f"{metric} (gate: {texts}) was not evaluated during training: no curve."))
    return sec


def _throughput(steps: list[dict[str, Any]], tag: str) -> Table:
    def agg(key: str, how: Callable[[list[float]], float]) -> str:
        vals = [float(e[key]) for e in steps if svg.finite(e.get(key))]
        return num(how(vals)) if vals else "—"

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    rows = [("steps logged", str(len(steps))), ("last step", num(steps[-1].get("step"))),
            ("last epoch", num(steps[-1].get("epoch"))), ("mean samples/s", agg("samples_per_s", mean)),
            ("mean tokens/s", agg("tokens_per_s", mean)), ("peak RSS (MB)", agg("rss_mb", max)),
            ("peak GPU memory (MB)", agg("gpu_mb", max))]
    return Table(("measure", "value"), rows, caption=f"Throughput and memory{tag}")
