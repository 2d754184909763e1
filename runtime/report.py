"""`ftc report RUN`: one self-contained report per run, as HTML (default) or GitHub-flavoured Markdown.

The HTML file needs nothing else to be read offline or attached to a code review: its style is
inline, its plots are inline SVG drawn by `svg.py` (no scripts, fonts or images from anywhere). The
Markdown file carries the same tables, with the plots embedded as `data:image/svg+xml;base64` images.
Everything taken from the record is escaped. The output depends only on the record (and, when the
run folder is still on disk, its event log and error file): no generation time, keys in sorted
order, so the same record gives the same bytes. A record with pieces missing (a failed run, an old
record, a deleted run folder) still gives a report, which lists what it could not show.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from ftc.runtime import report_details as details
from ftc.runtime import report_sections as sections
from ftc.runtime.report_sections import Block, Para, Plot, Pre, Run, Section, Table, d
from ftc.runtime.runrecord import RunRecord

FORMATS = ("html", "md")
BUILDERS: tuple[Callable[[Run], Section], ...] = (
    sections.summary, sections.gate_table, sections.metric_tables, sections.slice_tables, sections.curves,
    details.latency, details.confusion, details.predictions, details.event_log, details.error, details.lineage,
    details.artifact, details.spec_text, details.other)
Banner = tuple[str, str, str]  # css class (ok | bad | warn), label, text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a1a1a;background:#fafafa}
main{max-width:1000px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;word-break:break-all}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
nav ul{columns:3;font-size:13px;padding-left:18px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f0f0f0}
caption{text-align:left;font-weight:bold;padding:4px 0}
td.pass{color:#0a6b2d;font-weight:bold}
td.fail{color:#b00020;font-weight:bold}
.banner{padding:12px 16px;border-radius:6px;font-size:1.1em}
.ok{background:#e3f5e8;border:1px solid #0a6b2d;color:#0a4d21}
.bad{background:#fde8eb;border:1px solid #b00020;color:#7a0016}
.warn{background:#fff4df;border:1px solid #a66300;color:#6b4000}
pre{background:#f4f4f4;border:1px solid #e2e2e2;padding:12px;overflow-x:auto;font-size:12px}
figure{margin:12px 0}
figure svg{max-width:100%;height:auto;border:1px solid #eee;background:#fff}
figcaption{font-size:12px;color:#555}
""".strip()


def write_report(row: Mapping[str, Any], out: Path, fmt: str = "html") -> None:
    """Write the report of a registry row (`Registry().get(run_id)`) to `out` (html or md)."""
    text = render(row, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def render(row: Mapping[str, Any], fmt: str = "html") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format `{fmt}`: use one of {', '.join(FORMATS)}")
    title, banner, secs = build(row)
    return html_doc(title, banner, secs) if fmt == "html" else markdown_doc(title, banner, secs)


def build(row: Mapping[str, Any]) -> tuple[str, Banner, list[Section]]:
    row = d(row)
    rec, problems = sections.record_of(row)
    missing: list[str] = problems
    events, source = sections.load_events(rec, missing)
    run = Run(row, rec, events, source, missing)
    secs: list[Section] = []
    for builder in BUILDERS:
        try:
            sec = builder(run)
        except Exception as err:  # noqa: BLE001 (an odd record gets a report saying what it could not show)
            name = builder.__name__.replace("_", " ")
            sec = Section(name, [Para(f"This section could not be drawn from the record: {type(err).__name__}: "
                                      f"{err}")])
            missing.append(f"the {name} section ({type(err).__name__})")
        if sec.blocks:
            secs.append(sec)
    if missing:
        secs.insert(1, Section("What is missing", [Para(m) for m in dict.fromkeys(missing)]))
    run_id = row.get("id") or rec.run_id or "unknown run"
    return f"ftc run report: {run_id}", banner(row, rec), secs


def banner(row: dict[str, Any], rec: RunRecord) -> Banner:
    status = str(row.get("status") or rec.status or "unknown")
    gates, failed = rec.gates, rec.failed_gates()
    if status == "promoted":
        return ("ok" if not failed else "warn", "PROMOTED",
                f"all {len(gates)} gate(s) passed: the model was promoted" if not failed else
                f"promoted although {len(failed)} gate(s) failed: {'; '.join(failed)}")
    if status == "rejected":
        return ("bad", "REJECTED", (f"{len(failed)} of {len(gates)} gate(s) failed ({'; '.join(failed)}): "
                                   "the model was not promoted"))
    if status == "failed":
        return "bad", "FAILED", f"the run failed: {rec.error or 'no error recorded'}"
    if status == "interrupted":
        return "warn", "INTERRUPTED", "the run stopped before it finished: continue it with `ftc run --resume`"
    if status == "running":
        return "warn", "RUNNING", "no final result yet (or the process died without recording one)"
    return "warn", status.upper(), f"status `{status}`"


# ---------------------------------------------------------------------------------------------
# HTML


def _cell(text: str, tag: str = "td") -> str:
    cls = ' class="pass"' if text == "pass" else ' class="fail"' if text.startswith(("FAIL", "MISSING")) else ""
    return f"<{tag}{cls if tag == 'td' else ''}>{escape(text)}</{tag}>"


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        caption = f"<caption>{escape(block.caption)}</caption>" if block.caption else ""
        head = "".join(_cell(h, "th") for h in block.headers)
        body = "\n".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in block.rows)
        return f"<table>{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    if isinstance(block, Plot):
        return f"<figure>\n{block.svg}\n<figcaption>{escape(block.title)}</figcaption></figure>"
    if isinstance(block, Pre):
        return f"<pre>{escape(block.text)}</pre>"
    return f"<p>{escape(block.text)}</p>"


def html_doc(title: str, banner: Banner, secs: list[Section]) -> str:
    cls, label, text = banner
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(title)}</title>", f"<style>\n{CSS}\n</style>", "</head>", "<body>", "<main>",
           f"<h1>{escape(title)}</h1>",
           f'<p class="banner {cls}" id="verdict"><strong>{escape(label)}</strong>: {escape(text)}</p>',
           "<nav><ul>" + "".join(f'<li><a href="#s{i}">{escape(s.title)}</a></li>' for i, s in enumerate(secs))
           + "</ul></nav>"]
    for i, sec in enumerate(secs):
        out.append(f'<section id="s{i}">\n<h2>{escape(sec.title)}</h2>')
        out += [_html_block(b) for b in sec.blocks]
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Markdown


def md_text(text: str) -> str:
    """Text that GitHub renders literally: HTML escaped, Markdown punctuation backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|#~!])", r"\\\1", escape(text, quote=False)).replace("\n", "<br>")


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        lines = [f"**{md_text(block.caption)}**", ""] if block.caption else []
        lines.append("| " + " | ".join(md_text(h) for h in block.headers) + " |")
        lines.append("|" + " --- |" * len(block.headers))
        lines += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in block.rows]
        return "\n".join(lines)
    if isinstance(block, Plot):
        data = base64.b64encode(block.svg.encode("utf-8")).decode("ascii")
        return f"![{md_text(block.title)}](data:image/svg+xml;base64,{data})"
    if isinstance(block, Pre):
        runs = [len(m) for m in re.findall(r"`+", block.text)]
        fence = "`" * max(3, max(runs, default=0) + 1)
        return f"{fence}text\n{block.text.rstrip()}\n{fence}"
    return md_text(block.text)


def markdown_doc(title: str, banner: Banner, secs: list[Section]) -> str:
    _, label, text = banner
    out = [f"# {md_text(title)}", "", f"> **{md_text(label)}**: {md_text(text)}"]
    for sec in secs:
        out += ["", f"## {md_text(sec.title)}"]
        for block in sec.blocks:
            out += ["", _md_block(block)]
    return "\n".join(out) + "\n"
