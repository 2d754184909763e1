"""Run reports (`ftc report`): self-contained, well-formed HTML whose inline SVG plots carry the
record's data, the same tables in Markdown with the plots embedded as data: images, everything
escaped, deterministic, and a report for any record, however little it holds."""

from __future__ import annotations

import base64
import json
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from ftc.runtime import svg
from ftc.runtime.report import render, write_report
from ftc.runtime.report_sections import phases

from tests.runtime.test_run_e2e import SPEC, project  # noqa: F401 (a fixture)

NS = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "img", "hr", "input", "link", "wbr", "col", "area", "base", "source"}
EVIL = "<script>alert(1)</script>"


class _Balanced(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse_html(text: str) -> tuple[_Balanced, dict[str, ET.Element]]:
    """Check the document is balanced; return the parser and each SVG (parsed as XML) by title."""
    parser = _Balanced()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    svgs = {}
    for chunk in re.findall(r"<svg\b.*?</svg>", text, re.DOTALL):
        root = ET.fromstring(chunk)
        assert root.tag == f"{NS}svg"
        title = root.find(f"{NS}title")
        assert title is not None and title.text
        svgs[title.text] = root
    return parser, svgs


def points(root: ET.Element, series: str) -> list[tuple[float, float]]:
    out = []
    for line in root.iter(f"{NS}polyline"):
        if line.get("data-series") == series:
            out += [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]  # type: ignore[misc]
    return out


def record(**over: Any) -> dict[str, Any]:
    steps = [{"event": "step", "step": s, "epoch": s / 10, "loss": 1.5 - s / 100, "lr": 1e-3 * (1 - s / 60),
              "grad_norm": 0.5 + s / 100, "samples_per_s": 100.0, "rss_mb": 900.0 + s} for s in range(2, 42, 2)]
    steps[3]["loss"] = float("nan")
    evals = [{"event": "eval", "step": s, "split": "val", "loss": 1.4 - s / 120, "f1.macro": 0.3 + s / 100}
             for s in (10, 20, 30, 40)]
    samples = [0.002 + 0.0001 * (i % 7) for i in range(37)]
    rec = {
        "run_id": "demo-1", "run_dir": None, "status": "rejected", "plan_hash": "ab" * 32, "seed": 7,
        "spec": {"name": "demo", "path": "specs/demo.ftspec", "sha256": "5" * 64, "files": ["specs/demo.ftspec"]},
        "spec_text": 'spec "demo" {\n  eval { gate f1.macro >= 0.85 on test }\n}\n',
        "base": {"ref": "hf:org/enc", "revision": "3f2a9c1", "sha256": "b" * 64},
        "method": {"kind": "lora", "rank": 8, "alpha": 16, "targets": ["query", "value"]},
        "data": {"sizes": {"train": 100, "val": 20, "test": 30}, "hashes": {"train": "1" * 64, "val": "2" * 64,
                                                                            "test": "3" * 64}},
        "versions": {"torch": "2.14.1", "transformers": "5.23.0"}, "python": "3.11.7",
        "hardware": {"machine": "x86_64"}, "git_commit": "c0ffee", "user": "ana",
        "waivers": [{"code": "FT042", "reason": "pilot"}],
        "gates": [{"gate": "f1.macro >= 0.85 on test", "value": 0.9, "before": 0.3, "passed": True, "note": ""},
                  {"gate": "f1.macro >= 0.80 on test.email", "value": 0.7, "before": 0.2, "passed": False,
                   "note": ""},
                  {"gate": "latency.p95 <= 50ms on test", "value": 0.0026, "before": None, "passed": True,
                   "note": ""}],
        "metrics": {"base:test": {"f1.macro": 0.3, "accuracy": 0.4, "loss": 1.3},
                    "tuned:test": {"f1.macro": 0.9, "accuracy": 0.92, "loss": 0.5},
                    "latency": {"p50": 0.0023, "p95": 0.0026, "p99": 0.0027, "mean": 0.0024, "n": len(samples),
                                "unit": "s", "device": "cpu", "samples": samples}},
        "slices": {"base:test": {"email": {"f1.macro": 0.2, "n": 12.0}, "chat": {"f1.macro": 0.35, "n": 18.0}},
                   "tuned:test": {"email": {"f1.macro": 0.7, "n": 12.0}, "chat": {"f1.macro": 0.95, "n": 18.0}}},
        "extra": {"tuned:test": {"confusion_matrix": {"labels": ["billing", "bug", "account"],
                                                      "matrix": [[9, 1, 0], [2, 8, 0], [0, 1, 9]]},
                                 "samples": [{"input": "my invoice", "target": "billing", "prediction": "billing"}],
                                 "skipped": 0}},
        "history": steps + evals,
        "artifact": {"path": "/nowhere/adapter", "kind": "adapter", "sha256": "9" * 64, "merged": None},
    }
    rec.update(over)
    return {"id": "demo-1", "spec_name": "demo", "status": rec["status"], "plan_hash": "ab" * 32,
            "started": 1_700_000_000.0, "finished": 1_700_000_042.5, "record": rec}


def test_html_is_well_formed_self_contained_and_has_every_plot() -> None:
    html = render(record())
    parser, svgs = parse_html(html)
    external = r"<script|<link|<img|\bsrc=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)"
    assert not re.search(external, html, re.IGNORECASE)
    assert set(svgs) == {"Loss", "f1.macro over steps", "Gradient norm", "Learning rate",
                         "f1.macro per slice of test, before vs after", "Latency per request (37 samples)",
                         "Confusion matrix of tuned:test (rows: true label, columns: predicted)"}
    for root in svgs.values():  # axes with ticks and labels on every chart but the heat-map
        texts = [t.get("class") for t in root.iter(f"{NS}text")]
        assert "title" in texts and "ylabel" in texts
    assert sum(1 for t, _ in parser.tags if t == "figure") == len(svgs)
    assert 'class="banner bad"' in html and "REJECTED" in html


def test_curves_carry_one_point_per_step_and_skip_nan() -> None:
    _, svgs = parse_html(render(record()))
    loss = svgs["Loss"]
    assert len(points(loss, "train loss")) == 19  # 20 steps, one NaN loss not drawn
    assert len([p for p in loss.iter(f"{NS}polyline") if p.get("data-series") == "train loss"]) == 2  # a gap
    assert len(points(loss, "val loss")) == 4
    assert any("1 missing or non-finite" in (t.text or "") for t in loss.iter(f"{NS}text"))
    grad = points(svgs["Gradient norm"], "gradient norm")
    assert len(grad) == 20 and [x for x, _ in grad] == sorted(x for x, _ in grad)
    assert grad[0][1] > grad[-1][1]  # rising norm: drawn higher (smaller y) at the end
    gate = svgs["f1.macro over steps"]
    assert len(points(gate, "val f1.macro")) == 4
    assert [h.get("data-value") for h in gate.iter(f"{NS}line") if h.get("class") == "hline"] == ["0.8", "0.85"]


def test_histogram_confusion_matrix_and_slice_bars_hold_the_data() -> None:
    row = record()
    _, svgs = parse_html(render(row))
    hist = svgs["Latency per request (37 samples)"]
    counts = [int(r.get("data-count") or 0) for r in hist.iter(f"{NS}rect") if r.get("class") == "bin"]
    assert sum(counts) == 37 and len(counts) > 1
    marks = {m.get("data-name"): float(m.get("data-value") or 0) for m in hist.iter(f"{NS}line")
             if m.get("class") == "mark"}
    assert marks == pytest.approx({"p50": 2.3, "p95": 2.6, "p99": 2.7})
    cm = svgs["Confusion matrix of tuned:test (rows: true label, columns: predicted)"]
    cells = {(int(c.get("data-row") or 0), int(c.get("data-col") or 0)): int(c.get("data-count") or -1)
             for c in cm.iter(f"{NS}rect") if c.get("class") == "cell"}
    matrix = row["record"]["extra"]["tuned:test"]["confusion_matrix"]["matrix"]
    assert cells == {(i, j): v for i, r in enumerate(matrix) for j, v in enumerate(r)}
    assert sorted(t.text for t in cm.iter(f"{NS}text") if t.get("class") == "count") == sorted(
        str(v) for r in matrix for v in r)
    bars = svgs["f1.macro per slice of test, before vs after"]
    values = {s: [float(r.get("data-value") or 0) for r in bars.iter(f"{NS}rect") if r.get("data-series") == s]
              for s in ("before (base)", "after (tuned)")}
    assert values == {"before (base)": [0.3, 0.35, 0.2], "after (tuned)": [0.9, 0.95, 0.7]}  # all, chat, email


def test_tables_gates_metrics_and_lineage() -> None:
    html = render(record())
    gate_rows = re.findall(r"<tr><td>(f1\.macro &gt;= 0\.8\d? on test[^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                           r"<td>([^<]*)</td><td class=\"(\w+)\">(\w+)</td>", html)
    assert gate_rows == [("f1.macro &gt;= 0.85 on test", "0.3", "0.9", "&gt;= 0.85", "pass", "pass"),
                         ("f1.macro &gt;= 0.80 on test.email", "0.2", "0.7", "&gt;= 0.80", "fail", "FAIL")]
    assert "<td>2.6 ms</td>" in html  # the latency gate's value in the unit of its threshold
    assert "<tr><td>accuracy</td><td>0.4</td><td>0.92</td><td>+0.52</td></tr>" in html
    for text in ("3f2a9c1", "5" * 64, "1" * 64, "c0ffee", "ana", "FT042", "pilot", "9" * 64, "MISSING on disk",
                 "<td>rank</td><td>8</td>", "package torch", "2023-11-14 22:13:20 UTC", "42.5 s"):
        assert text in html, text
    assert '<pre>spec &quot;demo&quot; {\n  eval { gate f1.macro &gt;= 0.85 on test }' in html


def test_a_latency_gates_before_and_after_are_both_in_ms() -> None:
    """The base model's latency (`before`, seconds in the record) is shown in the gate's unit, like
    the final model's; a missing one stays an em dash; other gates' values are left as they are."""
    gate_list = [{"gate": "latency.p95 <= 50ms on test", "value": 0.0026, "before": 0.0031, "passed": True,
                  "note": ""},
                 {"gate": "latency.p99 <= 50ms on test", "value": 0.0027, "before": None, "passed": True, "note": ""},
                 {"gate": 'regression <= 0.02 vs base on "general.jsonl"', "value": 0.01, "before": 0.0,
                  "passed": True, "note": ""}]
    row = record(gates=gate_list)
    cells = r"<tr><td>({})</td><td>([^<]*)</td><td>([^<]*)</td>"
    html = render(row)
    assert re.findall(cells.format(r"latency\.p9\d &lt;= 50ms on test"), html) == [
        ("latency.p95 &lt;= 50ms on test", "3.1 ms", "2.6 ms"), ("latency.p99 &lt;= 50ms on test", "—", "2.7 ms")]
    assert re.findall(cells.format("regression[^<]*"), html) == [
        ("regression &lt;= 0.02 vs base on &quot;general.jsonl&quot;", "0", "0.01")]
    assert "| 3.1 ms | 2.6 ms |" in render(row, fmt="md")


def test_everything_from_the_record_is_escaped() -> None:
    row = record(spec={"name": EVIL, "path": EVIL}, spec_text=EVIL, user=EVIL, error=EVIL,
                 extra={"tuned:test": {"confusion_matrix": {"labels": [EVIL, "b"], "matrix": [[1, 0], [0, 1]]},
                                       "samples": [{"input": EVIL, EVIL: "x"}]}},
                 slices={"tuned:test": {EVIL: {"f1.macro": 0.5}}}, gates=[{"gate": EVIL, "passed": False}])
    row["spec_name"] = row["id"] = EVIL
    row["record"]["metrics"]["tuned:test"][EVIL] = 1.0
    html = render(row)
    _, svgs = parse_html(html)
    assert "<script" not in html.lower() and html.count("&lt;script&gt;") >= 10
    md = render(row, "md")
    outside_code = re.sub(r"^(`{3,})text\n.*?\n\1$", "", md, flags=re.DOTALL | re.MULTILINE)
    assert "<script" not in outside_code.lower() and "&lt;script&gt;" in outside_code
    assert len(svgs) == len(re.findall(r"data:image/svg\+xml;base64,", md))


def test_markdown_has_the_tables_and_embeds_valid_svgs() -> None:
    row = record()
    md = render(row, "md")
    assert md.startswith("# ftc run report: demo-1\n") and "> **REJECTED**" in md
    assert "| gate | before | after | threshold | result | note |\n| --- | --- | --- | --- | --- | --- |" in md
    assert "| f1.macro &gt;= 0.80 on test.email | 0.2 | 0.7 | &gt;= 0.80 | FAIL |  |" in md
    images = re.findall(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(images) == 7
    for alt, data in images:
        root = ET.fromstring(base64.b64decode(data).decode("utf-8"))
        assert root.tag == f"{NS}svg" and alt
    assert "```text\nspec \"demo\" {" in md


def _reversed(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _reversed(v[k]) for k in reversed(list(v))}
    return [_reversed(x) for x in v] if isinstance(v, list) else v


def test_output_is_deterministic_whatever_the_key_order(tmp_path: Path) -> None:
    row = record()
    for fmt in ("html", "md"):
        first = render(row, fmt)
        assert render(json.loads(json.dumps(row)), fmt) == first
        assert render(_reversed(row), fmt) == first
    write_report(row, tmp_path / "sub" / "r.html")
    assert (tmp_path / "sub" / "r.html").read_text(encoding="utf-8") == render(row)
    with pytest.raises(ValueError, match="unknown report format"):
        write_report(row, tmp_path / "r.pdf", "pdf")


@pytest.mark.parametrize("row", [
    {},
    {"id": "x", "status": "failed", "record": {}},
    {"id": "x", "status": "running", "record": {"run_dir": "/nowhere", "history": []}},
    {"id": "y", "status": "rejected", "record": {
        "gates": [1, None, {"gate": "nonsense"}], "metrics": "garbage", "slices": {"tuned:test": [1]},
        "history": ["x", {"event": "step", "step": "one"}, {"event": "step", "step": 3, "loss": "high"}],
        "extra": {"tuned:test": {"confusion_matrix": {"labels": ["a"], "matrix": [[1, 2]]}}},
        "artifact": "lost", "spec": [], "data": {"sizes": None}, "waivers": [None]}},
])
def test_a_record_with_little_or_odd_content_still_renders(row: dict[str, Any]) -> None:
    html = render(row)
    parse_html(html)
    assert "What is missing" in html and "could not be drawn" not in html
    md = render(row, "md")
    assert "## What is missing" in md
    if row.get("status") == "failed":
        assert "FAILED" in html and "no evaluation metrics are recorded" in html
        assert "no training history" in html and "the record names no run folder" in html


def test_the_event_log_gives_phases_notes_and_the_error(tmp_path: Path) -> None:
    events = [{"event": "node", "id": "train.reward", "kind": "train_reward"},
              {"event": "start", "stage": "reward", "method": "lora", "precision": "fp32"}]
    events += [{"event": "step", "step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 1.0} for s in range(1, 6)]
    events += [{"event": "node", "id": "train.policy", "kind": "train_policy"}]
    events += [{"event": "step", "step": s, "loss": 2.0 / s, "lr": 1e-4} for s in range(1, 5)]
    events += [{"event": "node", "id": "train.policy", "kind": "train_policy"}]  # resumed: steps 3, 4 again
    events += [{"event": "step", "step": s, "loss": 3.0 / s, "lr": 1e-4} for s in range(3, 8)]
    events += [{"event": "warning", "kind": "divergence", "step": 6, "message": "val loss rose", "help": "stop"},
               {"event": "eval", "id": "eval.tuned.test", "model": "tuned", "split": "test", "loss": 9.0}]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\nnot json\n")
    (run_dir / "error.txt").write_text("Traceback (most recent call last):\nValueError: boom <b>\n")
    row = record(run_dir=str(run_dir), history=[], status="failed", error="ValueError: boom <b>", gates=[])
    row["status"] = "failed"
    html = render(row)
    _, svgs = parse_html(html)
    assert len(points(svgs["Loss (train.reward)"], "train loss")) == 5
    assert len(points(svgs["Loss (train.policy)"], "train loss")) == 7
    policy = phases([e for e in events if isinstance(e, dict)])["train.policy"][0]
    assert [(e["step"], e["loss"]) for e in policy] == [(1, 2.0), (2, 1.0)] + [(s, 3.0 / s) for s in range(3, 8)]
    assert "No gradient norm was recorded (train.policy)." in html
    assert "val loss rose (help: stop)" in html and "1 unreadable line(s)" in html
    assert "ValueError: boom &lt;b&gt;" in html and "Traceback (most recent call last):" in html
    assert "reward: precision" in html and 'class="banner bad"' in html


def test_svg_charts_handle_single_points_and_empty_data() -> None:
    one = ET.fromstring(svg.line_chart("one", [svg.Series("s", [(5, 0.5)])], x_label="step", y_label="v"))
    assert points(one, "s") and len(list(one.iter(f"{NS}circle"))) == 1
    for chart in (svg.line_chart("none", [svg.Series("s", [(1, math.nan), (2, math.inf), (3, None)])],
                                 x_label="x", y_label="y"),
                  svg.histogram("h", [math.nan], x_label="ms"), svg.bar_chart("b", ["a"], [("s", [None])], y_label="y"),
                  svg.heatmap("m", ["a", "b"], [[1.0, 2.0]])):
        root = ET.fromstring(chart)
        assert any(t.get("class") == "empty" for t in root.iter(f"{NS}text"))
    same = ET.fromstring(svg.histogram("h", [0.2] * 9, x_label="ms"))
    assert [r.get("data-count") for r in same.iter(f"{NS}rect") if r.get("class") == "bin"] == ["9"]
    long = ET.fromstring(svg.line_chart("long", [svg.Series("s", [(i, float(i % 7)) for i in range(5001)])],
                                        x_label="step", y_label="v"))
    drawn = points(long, "s")
    assert len(drawn) <= svg.MAX_POINTS and drawn[-1][0] == max(x for x, _ in drawn)
    assert any(t.text == "1 point in 3 drawn" for t in long.iter(f"{NS}text"))
    assert svg.nice_ticks(0.13, 0.87) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(1, 330, count=6, integer=True) == [0, 100, 200, 300, 400]


def test_report_of_a_real_run(project: Path) -> None:  # noqa: F811 (the fixture)
    from ftc.runtime.registry import Registry
    from ftc.runtime.run import run

    outcome = run(SPEC, max_steps=24)
    row = Registry().get(outcome.run_id)
    assert row is not None
    html = render(row)
    _, svgs = parse_html(html)
    steps = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    n_steps = len({e["step"] for e in steps if e.get("event") == "step" and e.get("loss") is not None})
    assert len(points(svgs["Loss"], "train loss")) == n_steps > 3
    assert len(points(svgs["Loss"], "val loss")) >= 1
    cm = next(v for k, v in svgs.items() if k.startswith("Confusion matrix of tuned:test"))
    assert sum(int(c.get("data-count") or 0) for c in cm.iter(f"{NS}rect")) == row["record"].data["sizes"]["test"]
    hist = next(v for k, v in svgs.items() if k.startswith("Latency per request"))
    assert sum(int(r.get("data-count") or 0) for r in hist.iter(f"{NS}rect")) == len(
        row["record"].metrics["latency"]["samples"])
    assert "f1.macro over steps" in svgs and "What is missing" not in html
    md_path = project / "report.md"
    write_report(row, md_path, "md")
    assert md_path.read_text(encoding="utf-8").count("data:image/svg+xml;base64,") == len(svgs)
