"""`ftc runs diff A B`: what changed between two recorded runs.

Sections: the spec (a unified diff of each source file's recorded text), the base model, method
and training settings, seed, run options (--max-steps, device), library versions, hardware, data
per split (rows and sha256), metrics per model (base = before training, tuned = after), split and
slice with B − A deltas, gates, and the artifacts. `diff_runs` returns a plain dict (rendered as
JSON with sorted keys: deterministic); `render_text` prints the changes and one line per section
that did not change.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from typing import Any

from ftc.runtime.registry import when
from ftc.runtime.runrecord import ArtifactRecord, GateRecord, RunRecord, RunRow

FORMAT_VERSION = 1


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value, key=str):
            out.update(_flat(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _changes(a: Any, b: Any) -> dict[str, Any]:
    fa, fb = _flat(a or {}), _flat(b or {})
    changes = {k: {"a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    return {"changed": bool(changes), "changes": changes, "a_recorded": a is not None, "b_recorded": b is not None}


def _spec(ra: RunRecord, rb: RunRecord, ida: str, idb: str) -> dict[str, Any]:
    sa, sb = ra.spec, rb.spec
    out: dict[str, Any] = {"a_sha256": sa.get("sha256"), "b_sha256": sb.get("sha256"),
                           "a_path": sa.get("path"), "b_path": sb.get("path")}
    out["changed"] = sa.get("sha256") != sb.get("sha256")
    texts_a, texts_b = _texts(ra), _texts(rb)
    missing = [run for run, texts in ((ida, texts_a), (idb, texts_b)) if texts is None]
    if missing:
        out["diff"] = None
        out["note"] = f"spec text not recorded for {', '.join(missing)} (recorded by an earlier ftc)"
        return out
    assert texts_a is not None and texts_b is not None
    if len(texts_a) == 1 and len(texts_b) == 1:  # the spec file renamed or moved: compare the two texts
        pairs = [(next(iter(texts_a)), next(iter(texts_b)))]
    else:
        pairs = [(name, name) for name in sorted(set(texts_a) | set(texts_b))]
    lines: list[str] = []
    for na, nb in pairs:
        lines.extend(difflib.unified_diff(texts_a.get(na, "").splitlines(), texts_b.get(nb, "").splitlines(),
                                          fromfile=f"A/{na}", tofile=f"B/{nb}", lineterm=""))
    out["diff"] = lines
    return out


def _texts(r: RunRecord) -> dict[str, str] | None:
    """The spec's source texts (one, for a record of an ftc before `spec_sources`; None if neither)."""
    if r.spec_sources:
        return r.spec_sources
    return {r.spec_path or "spec": r.spec_text} if r.spec_text is not None else None


def _split_map(data: dict[str, Any], key: str) -> dict[str, Any]:
    v = data.get(key)
    return v if isinstance(v, dict) else {}


def _data(ra: RunRecord, rb: RunRecord) -> dict[str, Any]:
    (sa, ha), (sb, hb) = ((_split_map(r.data, "sizes"), _split_map(r.data, "hashes")) for r in (ra, rb))
    out = {}
    for s in sorted(set(sa) | set(sb) | set(ha) | set(hb)):
        a, b = {"rows": sa.get(s), "sha256": ha.get(s)}, {"rows": sb.get(s), "sha256": hb.get(s)}
        out[s] = {"a": a, "b": b, "changed": a != b}
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _metric_rows(record: RunRecord) -> dict[tuple[str, str, str, str], float]:
    """(model, split, slice, metric) -> value; model "base" (before), "tuned" (after), "" (latency)."""
    rows: dict[tuple[str, str, str, str], float] = {}
    for key, values in record.metrics.items():
        model, _, split = key.partition(":") if ":" in key else ("", "", key)
        for metric, v in (values or {}).items() if isinstance(values, dict) else ():
            num = _number(v)
            if num is not None and metric not in ("n", "warmup"):
                rows[(model, split, "", metric)] = num
    for key, slices in record.slices.items():
        model, _, split = key.partition(":")
        for name, per_slice in slices.items():
            for metric, v in per_slice.items() if isinstance(per_slice, dict) else ():
                num = _number(v)
                if num is not None and metric != "n":
                    rows[(model, split, name, metric)] = num
    return rows


def _metrics(ra: RunRecord, rb: RunRecord) -> list[dict[str, Any]]:
    ma, mb = _metric_rows(ra), _metric_rows(rb)
    order = {"base": 0, "tuned": 1, "": 2}
    out = []
    for key in sorted(set(ma) | set(mb), key=lambda k: (order.get(k[0], 3), k[0], k[1], k[2], k[3])):
        a, b = ma.get(key), mb.get(key)
        out.append({"model": key[0] or None, "split": key[1], "slice": key[2] or None, "metric": key[3],
                    "when": {"base": "before", "tuned": "after"}.get(key[0]), "a": a, "b": b,
                    "delta": b - a if a is not None and b is not None else None})
    return out


def _gates(ra: RunRecord, rb: RunRecord) -> list[dict[str, Any]]:
    ga, gb = {g.gate: g for g in ra.gates}, {g.gate: g for g in rb.gates}
    names = list(ga) + [n for n in gb if n not in ga]

    def side(g: GateRecord | None) -> dict[str, Any] | None:
        return None if g is None else {"value": g.value, "before": g.before, "passed": g.passed, "note": g.note}

    def passed(g: GateRecord | None) -> bool | None:
        return None if g is None else g.passed

    return [{"gate": n, "a": side(ga.get(n)), "b": side(gb.get(n)),
             "changed": passed(ga.get(n)) != passed(gb.get(n))} for n in names]


def _versions(r: RunRecord) -> dict[str, Any]:
    return {**r.versions, "python": r.python, "ftc": r.ftc_version}


def _hardware(r: RunRecord) -> dict[str, Any] | None:
    hw = {"machine": r.hardware.machine, "processor": r.hardware.processor, "host": r.hardware.host}
    return {k: v for k, v in hw.items() if v is not None} or None


def _artifact(ra: RunRecord, rb: RunRecord) -> dict[str, Any]:
    aa, ab = ra.artifact or ArtifactRecord(), rb.artifact or ArtifactRecord()
    return {"a_sha256": aa.sha256, "b_sha256": ab.sha256, "a_path": aa.path, "b_path": ab.path,
            "same": bool(aa.sha256) and aa.sha256 == ab.sha256}


def diff_runs(a: RunRow, b: RunRow) -> dict[str, Any]:
    """Two registry rows (Registry.get) -> what changed from A to B."""
    ra, rb = a["record"], b["record"]

    def head(row: RunRow) -> dict[str, Any]:
        return {"id": row["id"], "spec": row["spec_name"], "status": row["status"], "plan_hash": row["plan_hash"],
                "started": row["started"], "finished": row["finished"]}

    seed = {"a": ra.seed, "b": rb.seed, "changed": ra.seed != rb.seed}
    return {"format_version": FORMAT_VERSION, "a": head(a), "b": head(b),
            "plan_changed": a["plan_hash"] != b["plan_hash"],
            "spec": _spec(ra, rb, a["id"], b["id"]),
            "base": _changes(ra.base or None, rb.base or None),
            "method": _changes(ra.method or None, rb.method or None),
            "training": _changes(ra.training or None, rb.training or None),
            "seed": seed,
            "options": _changes(ra.options or None, rb.options or None),
            "versions": _changes(_versions(ra), _versions(rb)),
            "hardware": _changes(_hardware(ra), _hardware(rb)),
            "data": _data(ra, rb),
            "metrics": _metrics(ra, rb),
            "gates": _gates(ra, rb),
            "artifact": _artifact(ra, rb)}


def to_json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, default=str) + "\n"


# ---------------------------------------------------------------------------------------------
# Text


def _v(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _short(h: Any) -> str:
    return str(h)[:12] if h else "—"


def _section(name: str, d: dict[str, Any], same: str = "same") -> list[str]:
    if not d["a_recorded"] and not d["b_recorded"]:
        return [f"{name}: not recorded"]
    if not d["a_recorded"] or not d["b_recorded"]:
        return [f"{name}: recorded for {'B' if d['b_recorded'] else 'A'} only (an earlier ftc)"]
    if not d["changed"]:
        return [f"{name}: {same}"]
    return [f"{name}:"] + [f"  {k}: {_v(c['a'])} → {_v(c['b'])}" for k, c in d["changes"].items()]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _signed(v: float | None) -> str:
    return "—" if v is None else ("0" if v == 0 else f"{v:+.4g}")


def render_text(d: dict[str, Any]) -> str:
    a, b = d["a"], d["b"]
    out = [f"A: {a['id']}  {a['status']}  started {when(a['started'])}",
           f"B: {b['id']}  {b['status']}  started {when(b['started'])}"]
    if a["spec"] != b["spec"]:
        out.append(f"note: different spec names ({a['spec']} vs {b['spec']})")
    out.append(f"plan: changed ({_short(a['plan_hash'])} → {_short(b['plan_hash'])})" if d["plan_changed"]
               else f"plan: same ({_short(a['plan_hash'])})")
    spec = d["spec"]
    if not spec["changed"]:
        out.append(f"spec: same (sha256 {_short(spec['a_sha256'])})")
    else:
        out.append(f"spec: changed (sha256 {_short(spec['a_sha256'])} → {_short(spec['b_sha256'])})")
        if spec.get("note"):
            out.append(f"  {spec['note']}")
        elif spec["diff"] == []:
            out.append("  the recorded texts are identical (a file it extends changed, or only whitespace)")
        else:
            out.extend(f"  {line}" for line in spec["diff"])
    base = d["base"]
    out.extend(_section("base", base))
    out.extend(_section("method", d["method"]))
    out.extend(_section("training", d["training"]))
    seed = d["seed"]
    out.append(f"seed: {_v(seed['a'])} → {_v(seed['b'])}" if seed["changed"] else f"seed: same ({_v(seed['a'])})")
    out.extend(_section("options", d["options"]))
    out.extend(_section("versions", d["versions"]))
    out.extend(_section("hardware", d["hardware"]))
    data_rows: list[tuple[str, ...]] = [("data", "A rows", "A sha256", "B rows", "B sha256", "")]
    for split, s in d["data"].items():
        data_rows.append((split, _v(s["a"]["rows"]), _short(s["a"]["sha256"]), _v(s["b"]["rows"]),
                          _short(s["b"]["sha256"]), "changed" if s["changed"] else "same"))
    if len(data_rows) > 1:
        out.extend(_table(data_rows))
    metrics = d["metrics"]
    base_changed = any(m["model"] == "base" and m["delta"] != 0 for m in metrics)
    shown = [m for m in metrics if m["model"] != "base" or base_changed]
    if shown:
        rows: list[tuple[str, ...]] = [("metric", "A", "B", "Δ (B − A)")]
        for m in shown:
            where = m["split"] + (f".{m['slice']}" if m["slice"] else "")
            label = f"{where} {m['metric']}" + (f" ({m['when']})" if m["when"] else "")
            rows.append((label, _v(m["a"]), _v(m["b"]), _signed(m["delta"])))
        out.extend(_table(rows))
        if not base_changed and any(m["model"] == "base" for m in metrics):
            out.append("  (before-training metrics are the same in both; `--format json` lists them)")
    if d["gates"]:
        gate_rows: list[tuple[str, ...]] = [("gate", "A", "B")]
        for g in d["gates"]:
            def cell(s: dict[str, Any] | None) -> str:
                return "—" if s is None else f"{'pass' if s['passed'] else 'FAIL'} {_v(s['value'])}"
            gate_rows.append((str(g["gate"]), cell(g["a"]), cell(g["b"])))
        out.extend(_table(gate_rows))
    art = d["artifact"]
    out.append(f"artifact: same bytes ({_short(art['a_sha256'])})" if art["same"] else
               f"artifact: {_short(art['a_sha256'])} → {_short(art['b_sha256'])}")
    return "\n".join(out) + "\n"
