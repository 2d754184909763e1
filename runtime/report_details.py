"""Report sections on evaluation details and provenance: latency, confusion matrices, prediction
samples, notes and warnings, the error of a failed run, lineage, the artifact, the spec text and any
field of the record this report does not know yet."""

from __future__ import annotations

from pathlib import Path

from ftc.runtime import svg
from ftc.runtime.report_sections import (
    Block,
    Para,
    Plot,
    Pre,
    Run,
    Section,
    Table,
    d,
    fnum,
    lst,
    num,
)

CLIP = 300


def _clip(text: str) -> str:
    return text if len(text) <= CLIP else text[:CLIP] + "…"


def latency(run: Run) -> Section:
    sec = Section("Latency")
    lat = run.rec.metrics.get("latency", {})
    if not lat:
        sec.blocks.append(Para("Latency was not measured (the spec has no latency gate, or the run stopped "
                               "before it)."))
        return sec
    unit = str(lat.get("unit") or "s")
    scale, shown = (1000.0, "ms") if unit == "s" else (1.0, unit)

    def scaled(v: object) -> float | None:
        f = fnum(v)
        return None if f is None else f * scale

    rows = [(f"{k} ({shown})", num(scaled(lat.get(k)))) for k in ("p50", "p95", "p99", "mean") if k in lat]
    rows += [(k, num(lat[k])) for k in sorted(lat) if k not in ("p50", "p95", "p99", "mean", "samples", "unit")]
    sec.blocks.append(Table(("measure", "value"), rows))
    samples = [scaled(v) for v in lst(lat.get("samples"))]
    if samples:
        title = f"Latency per request ({len(samples)} samples)"
        marks = [(k, scaled(lat.get(k))) for k in ("p50", "p95", "p99")]
        sec.blocks.append(Plot(title, svg.histogram(title, samples, x_label=f"latency ({shown})", marks=marks)))
    else:
        sec.blocks.append(Para("No per-request samples are recorded: no histogram."))
    return sec


def confusion(run: Run) -> Section:
    sec = Section("Confusion matrices")
    extra = run.rec.extra
    for key in sorted(extra):
        cm = d(d(extra[key]).get("confusion_matrix"))
        if cm:
            labels = [str(x) for x in lst(cm.get("labels"))]
            matrix = [[fnum(v) for v in lst(r)] for r in lst(cm.get("matrix"))]
            title = f"Confusion matrix of {key} (rows: true label, columns: predicted)"
            sec.blocks.append(Plot(title, svg.heatmap(title, labels, matrix)))
    if not sec.blocks:
        sec.blocks.append(Para("No confusion matrix is recorded (only classification evaluations record one)."))
    return sec


def predictions(run: Run) -> Section:
    sec = Section("Prediction samples")
    extra = run.rec.extra
    for key in sorted(extra):
        samples = [d(r) for r in lst(d(extra[key]).get("samples"))][:10]
        if samples:
            cols = sorted({str(c) for r in samples for c in r})
            sec.blocks.append(Table(tuple(cols), [tuple(_clip(num(r.get(c))) for c in cols) for r in samples],
                                    caption=f"{key}: first {len(samples)} test examples"))
        rest = {k: v for k, v in d(extra[key]).items() if k not in ("samples", "confusion_matrix")}
        if rest:
            sec.blocks.append(Table(("field", "value"), [(k, _clip(num(rest[k]))) for k in sorted(rest)],
                                    caption=f"{key}: other details"))
    if not sec.blocks:
        sec.blocks.append(Para("No prediction samples are recorded."))
    return sec


def event_log(run: Run) -> Section:
    sec = Section("Notes and warnings")
    rows = []
    for e in run.events:
        if e.get("event") in ("note", "warning"):
            help_ = f" (help: {e['help']})" if e.get("help") else ""
            rows.append((str(e.get("event")), num(e.get("step")), num(e.get("message")) + help_))
    if rows:
        sec.blocks.append(Table(("kind", "step", "message"), rows))
    elif run.source.endswith("events.jsonl"):
        sec.blocks.append(Para("No notes or warnings were logged."))
    else:
        sec.blocks.append(Para("Notes and warnings are unknown: the run's event log is not available."))
    return sec


def error(run: Run) -> Section:
    sec = Section("Error")
    err = run.rec.error
    if err:
        sec.blocks.append(Pre(err))
    run_dir = run.rec.run_dir
    if run_dir:
        try:
            trace = (Path(run_dir) / "error.txt").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            trace = []
        if trace:
            sec.blocks.append(Para(f"The last {min(60, len(trace))} lines of {Path(run_dir) / 'error.txt'}:"))
            sec.blocks.append(Pre("\n".join(trace[-60:])))
    status = run.row.get("status") or run.rec.status
    if status == "failed" and not sec.blocks:
        run.missing.append("the run failed but its error is not recorded")
    return sec


def _flat(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in table.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _kv(caption: str, table: dict[str, object], first: tuple[str, ...] = ()) -> Table:
    table = _flat(table)
    keys = [k for k in first if k in table] + sorted(k for k in table if k not in first)
    rows = [(k, num(table[k])) for k in keys] or [("(nothing recorded)", "—")]
    return Table(("field", "value"), rows, caption=caption)


def lineage(run: Run) -> Section:
    rec = run.rec
    recorded = {"spec": rec.spec, "base": rec.base, "data": rec.data, "seed": rec.seed, "versions": rec.versions,
                "hardware": rec.hardware.host or rec.hardware.machine, "user": rec.user}
    run.missing += [f"lineage: `{key}` is not recorded" for key, v in recorded.items() if v in (None, {})]
    spec = rec.spec
    blocks: list[Block] = [
        _kv("Spec", {**spec, "files": ", ".join(str(f) for f in lst(spec.get("files"))) or None,
                     "plan hash": rec.plan_hash, "ftc version": rec.ftc_version},
            ("name", "path", "sha256", "files")),
        _kv("Base model", dict(rec.base), ("ref", "revision", "sha256")),
        _kv("Method", dict(rec.method), ("kind",))]
    setup: dict[str, object] = {"seed": rec.seed}
    for i, e in enumerate(e for e in run.events if e.get("event") == "start"):
        tag = f"{e['stage']}: " if e.get("stage") else (f"{i + 1}: " if i else "")
        setup.update({f"{tag}{k}": v for k, v in e.items() if k not in ("event", "stage")})
    setup.update({f"option {k}": v for k, v in rec.options.items()})
    blocks.append(_kv("Training setup", setup, ("seed",)))
    blocks += [_kv(f"Training settings: {node}", dict(rec.training[node])) for node in sorted(rec.training)]
    sizes, hashes = d(rec.data.get("sizes")), d(rec.data.get("hashes"))
    splits = sorted(set(sizes) | set(hashes))
    blocks.append(Table(("split", "rows", "sha256"), [(s, num(sizes.get(s)), num(hashes.get(s))) for s in splits]
                        or [("(nothing recorded)", "—", "—")], caption="Data"))
    rest: dict[str, object] = {k: v for k, v in rec.data.items() if k not in ("sizes", "hashes")}
    if rest:
        blocks.append(_kv("Data: other details", rest))
    env: dict[str, object] = {"python": rec.python, "git commit": rec.git_commit, "user": rec.user}
    env.update({f"package {k}": v for k, v in rec.versions.items()})
    env.update({f"hardware {k}": v for k, v in vars(rec.hardware).items()})
    blocks.append(_kv("Environment", env, ("python", "git commit", "user")))
    blocks.append(Table(("code", "reason"), [(w.code, w.reason) for w in rec.waivers]
                        or [("(none)", "—")], caption="Waivers"))
    return Section("Lineage", blocks)


def artifact(run: Run) -> Section:
    art = run.rec.artifact
    if art is None:
        run.missing.append("no artifact is recorded (the run did not finish training)")
        return Section("Artifact", [Para("No artifact is recorded.")])
    on_disk = "present" if art.path and Path(art.path).exists() else "MISSING on disk"
    shown = d(run.rec.to_json()["artifact"])
    return Section("Artifact", [_kv("", {**shown, "on disk": on_disk}, ("path", "sha256", "kind"))])


def spec_text(run: Run) -> Section:
    text, path = run.rec.spec_text, run.rec.spec_path
    sec = Section("Spec text")
    if text is not None:
        sec.blocks += [Para(f"{path or 'the spec'}:"), Pre(text)]
    else:
        run.missing.append("the spec text is not in the record (older ftc): see the spec's sha256 under Lineage")
        sec.blocks.append(Para("The spec text is not in this record."))
    sources = run.rec.spec_sources
    for name in sorted(sources):
        if name != path:
            sec.blocks += [Para(f"{name} (a file it builds on):"), Pre(sources[name])]
    return sec


def other(run: Run) -> Section:
    rows = [(k, _clip(num(v))) for k, v in sorted(run.rec.other.items())]
    return Section("Other recorded fields", [Table(("field", "value"), rows)] if rows else [])
