"""Renderers: exact text output, concise lines, JSON shape, GitHub escaping, SARIF schema validity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ftc.compiler.diagnostics import Diagnostic, Related, Severity
from ftc.compiler.render import FORMATS, render
from ftc.compiler.source import Source

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json"

SPEC = """\
spec demo {
  model base "tiny"
  method lora { rnak 8 }
  train {
    lr 3e-4
  }
}
"""
SPLITS = 'split train from "data/train.jsonl"\n'


def src(text: str = SPEC, path: str = "specs/x.ftspec") -> Source:
    return Source(path, text)


def at(source: Source, needle: str, length: int | None = None, nth: int = 0) -> Any:
    start = -1
    for _ in range(nth + 1):
        start = source.text.index(needle, start + 1)
    return source.span(start, start + (len(needle) if length is None else length))


def diag(
    code: str, message: str, span: Any, severity: Severity = Severity.ERROR, **kw: Any
) -> Diagnostic:
    return Diagnostic(code, kw.pop("name", "unknown-key"), severity, message, span, **kw)


def unknown_key(source: Source | None = None, **kw: Any) -> Diagnostic:
    s = source or src()
    return diag(
        "FT011",
        "unknown key `rnak` in `method lora`",
        at(s, "rnak"),
        help="did you mean `rank`?",
        **kw,
    )


def sources(*items: Source) -> dict[str, Source]:
    return {s.path: s for s in items}


# --- text ------------------------------------------------------------------------------------------


def test_text_single_line_span() -> None:
    s = src()
    out = render([unknown_key(s)], sources(s), "text", files_checked=1)
    assert out == (
        "error[FT011]: unknown key `rnak` in `method lora`\n"
        "  --> specs/x.ftspec:3:17\n"
        "   |\n"
        " 3 |   method lora { rnak 8 }\n"
        "   |                 ^^^^\n"
        "   = help: did you mean `rank`?\n"
        "\n"
        "1 error in 1 file\n"
    )


def test_text_multi_line_span_underlines_to_end_of_first_line() -> None:
    s = src()
    start = s.text.index("train {")
    span = s.span(start, s.text.index("}", start) + 1)
    d = diag(
        "FT030",
        "`train` block has no `epochs`",
        span,
        Severity.WARNING,
        name="missing-key",
        detail="a run needs a stopping point\nepochs or max_steps",
    )
    out = render([d], sources(s), "text", files_checked=2)
    assert out == (
        "warning[FT030]: `train` block has no `epochs`\n"
        "  --> specs/x.ftspec:4:3\n"
        "   |\n"
        " 4 |   train {\n"
        "   |   ^^^^^^^\n"
        "   = note: a run needs a stopping point\n"
        "           epochs or max_steps\n"
        "\n"
        "1 warning in 2 files\n"
    )


def test_text_related_span_in_other_file_and_missing_source() -> None:
    spec, data = src(), src(SPLITS, "specs/data.ftspec")
    related = (
        Related(at(data, "train"), "split declared here"),
        Related(Source("gone.ftspec", "x\n" * 12).span(20, 21), "also here"),
    )
    d = unknown_key(spec, related=related)
    out = render([d], sources(spec, data), "text", files_checked=2)
    assert out == (
        "error[FT011]: unknown key `rnak` in `method lora`\n"
        "   --> specs/x.ftspec:3:17\n"
        "    |\n"
        "  3 |   method lora { rnak 8 }\n"
        "    |                 ^^^^\n"
        "    = help: did you mean `rank`?\n"
        "note: split declared here\n"
        "   --> specs/data.ftspec:1:7\n"
        "    |\n"
        '  1 | split train from "data/train.jsonl"\n'
        "    |       -----\n"
        "note: also here\n"
        "   --> gone.ftspec:11:1\n"
        "\n"
        "1 error in 2 files\n"
    )


def test_text_tabs_are_expanded_and_carets_align() -> None:
    s = src("spec t {\n\tmethod\tlora { rnak 8 }\n}\n")
    out = render([unknown_key(s)], sources(s), "text", files_checked=1)
    lines = out.splitlines()
    assert lines[3] == " 2 |     method    lora { rnak 8 }"
    assert lines[4] == "   |                      ^^^^"
    assert "\t" not in out
    assert lines[3].index("rnak") == lines[4].index("^")


def test_text_wide_characters_keep_carets_aligned() -> None:
    s = src('spec t { name "模型" rnak 8 }\n')
    out = render([unknown_key(s)], sources(s), "text").splitlines()
    assert out[3] == ' 1 | spec t { name "模型" rnak 8 }'
    assert out[4] == "   |                      ^^^^"


def test_text_no_span() -> None:
    d = diag("FT001", "no spec files found", None, name="no-input", help="pass a path to a .ftspec")
    out = render([d], {}, "text", files_checked=0)
    assert out == (
        "error[FT001]: no spec files found\n"
        "  = help: pass a path to a .ftspec\n"
        "\n"
        "1 error in 0 files\n"
    )


def test_text_empty_span_at_end_of_line_gets_one_caret() -> None:
    s = src("spec t {\n")
    d = diag("FT002", "expected `}`", s.span(8, 8), name="syntax-error")
    lines = render([d], sources(s), "text").splitlines()
    assert lines[3:5] == [" 1 | spec t {", "   |         ^"]


def test_text_clean_summary_and_plurals() -> None:
    assert render([], {}, "text", files_checked=3) == "All checks passed: 3 files\n"
    assert render([], {}, "text", files_checked=1) == "All checks passed: 1 file\n"
    s = src()
    ds = [
        unknown_key(s),
        diag("FT012", "m", at(s, "lr")),
        diag("FT040", "w", at(s, "model"), Severity.WARNING),
    ]
    assert render(ds, sources(s), "text", files_checked=3).endswith(
        "\n2 errors, 1 warning in 3 files\n"
    )


def test_text_hides_suppressed_and_counts_them() -> None:
    s = src()
    d = unknown_key(s, suppressed_reason="legacy spec")
    assert render([d], sources(s), "text", files_checked=1) == (
        "All checks passed: 1 file (1 suppressed)\n"
    )


def test_text_color_only_when_asked() -> None:
    s = src()
    plain = render([unknown_key(s)], sources(s), "text", files_checked=1)
    colored = render([unknown_key(s)], sources(s), "text", color=True, files_checked=1)
    assert "\x1b[" not in plain
    assert "\x1b[1;31merror[FT011]\x1b[0m" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


def test_render_sorts_by_path_offset_code() -> None:
    a, b = src(), src(SPLITS, "specs/a.ftspec")
    late = diag("FT050", "late", at(a, "lr"))
    early = diag("FT050", "early", at(a, "model"))
    other = diag("FT050", "other file", at(b, "train"))
    out = render([late, early, other], sources(a, b), "concise")
    assert [line.split(" ", 3)[-1] for line in out.splitlines()] == ["other file", "early", "late"]


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        render([], {}, "xml")


def test_format_modules_are_imported_lazily() -> None:
    code = (
        "import sys, ftc.compiler.render as r; "
        "print(sorted(m for m in sys.modules if m.startswith('ftc.compiler.render.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- concise ---------------------------------------------------------------------------------------


def test_concise_lines() -> None:
    s = src()
    ds = [
        unknown_key(s),
        diag("FT040", "lr is high", at(s, "3e-4"), Severity.WARNING),
        diag("FT001", "no spec files found", None),
        diag("FT041", "hidden", at(s, "model"), suppressed_reason="ok"),
    ]
    assert render(ds, sources(s), "concise") == (
        "FT001 [error] no spec files found\n"
        "specs/x.ftspec:3:17: FT011 [error] unknown key `rnak` in `method lora`\n"
        "specs/x.ftspec:5:8: FT040 [warning] lr is high\n"
    )
    assert render([], {}, "concise") == ""


# --- json ------------------------------------------------------------------------------------------

FIELDS = {
    "code",
    "name",
    "severity",
    "message",
    "help",
    "detail",
    "path",
    "line",
    "column",
    "end_line",
    "end_column",
    "related",
    "suppressed",
    "suppression_reason",
}


def test_json_round_trip_and_fields() -> None:
    spec, data = src(), src(SPLITS, "specs/data.ftspec")
    ds = [
        unknown_key(spec, related=(Related(at(data, "train"), "declared here"),), detail="d"),
        diag("FT040", "lr is high", at(spec, "3e-4"), Severity.WARNING, suppressed_reason="tested"),
        diag("FT001", "no spec files found", None),
    ]
    out = render(ds, sources(spec, data), "json", files_checked=2)
    assert out == render(list(reversed(ds)), sources(spec, data), "json", files_checked=2)
    assert out == json.dumps(json.loads(out), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    doc = json.loads(out)
    assert doc["format_version"] == 1
    assert doc["summary"] == {"errors": 2, "warnings": 0, "notes": 0, "suppressed": 1, "files": 2}
    nospan, key, lr = doc["diagnostics"]
    assert all(set(d) == FIELDS for d in doc["diagnostics"])
    assert [nospan[k] for k in ("path", "line", "column", "end_line", "end_column")] == [None] * 5
    assert key == {
        "code": "FT011",
        "name": "unknown-key",
        "severity": "error",
        "message": "unknown key `rnak` in `method lora`",
        "help": "did you mean `rank`?",
        "detail": "d",
        "path": "specs/x.ftspec",
        "line": 3,
        "column": 17,
        "end_line": 3,
        "end_column": 21,
        "suppressed": False,
        "suppression_reason": None,
        "related": [
            {
                "path": "specs/data.ftspec",
                "line": 1,
                "column": 7,
                "end_line": 1,
                "end_column": 12,
                "message": "declared here",
            }
        ],
    }
    assert lr["suppressed"] is True and lr["suppression_reason"] == "tested"


# --- github ----------------------------------------------------------------------------------------


def test_github_annotations_and_escaping() -> None:
    s = src(path="specs/a,b:c%.ftspec")
    ds = [
        diag(
            "FT011",
            "100% bad\r\nline two",
            at(s, "rnak"),
            help="use `rank`, not `rnak`",
            name="unknown-key",
        ),
        diag("FT040", "lr: high", at(s, "3e-4"), Severity.WARNING, name="lr,high"),
        diag("FT090", "fyi", None, Severity.NOTE, name="info"),
        diag("FT041", "hidden", at(s, "model"), suppressed_reason="ok"),
    ]
    assert render(ds, sources(s), "github").splitlines() == [
        "::notice title=FT090 info::fyi",
        (
            "::error file=specs/a%2Cb%3Ac%25.ftspec,line=3,col=17,endLine=3,endColumn=21,"
            "title=FT011 unknown-key::100%25 bad%0D%0Aline two%0Ahelp: use `rank`, not `rnak`"
        ),
        (
            "::warning file=specs/a%2Cb%3Ac%25.ftspec,line=5,col=8,endLine=5,endColumn=12,"
            "title=FT040 lr%2Chigh::lr: high"
        ),
    ]
    assert render([], {}, "github") == ""


# --- sarif -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRule:
    code: str
    name: str
    summary: str
    severity: Severity


RULES = [
    FakeRule("FT011", "unknown-key", "A key the block does not define.", Severity.ERROR),
    FakeRule(
        "FT040", "high-learning-rate", "The learning rate is unusually high.", Severity.WARNING
    ),
]


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def sarif_doc() -> tuple[str, dict[str, Any]]:
    spec, data = src(), src(SPLITS, "specs\\sub dir\\data.ftspec")
    ds = [
        unknown_key(spec, related=(Related(at(data, "train"), "declared here"),), detail="more"),
        diag(
            "FT040",
            "lr is high",
            at(spec, "3e-4"),
            Severity.WARNING,
            name="high-learning-rate",
            suppressed_reason="tuned on purpose",
        ),
        diag("FT001", "no spec files found", None, name="no-input"),
        diag("FT090", "empty span", spec.span(0, 0), Severity.NOTE, name="info"),
    ]
    out = render(ds, sources(spec, data), "sarif", files_checked=2, rules=RULES)
    return out, json.loads(out)


def test_sarif_validates_against_official_schema(validator: Any) -> None:
    out, doc = sarif_doc()
    validator.validate(doc)
    assert out == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert doc["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert doc["version"] == "2.1.0"


def test_sarif_clean_run_validates(validator: Any) -> None:
    doc = json.loads(render([], {}, "sarif", rules=RULES))
    validator.validate(doc)
    assert doc["runs"][0]["results"] == []


@pytest.mark.parametrize("breakage", ["no-version", "bad-level", "zero-line", "extra-key"])
def test_schema_rejects_broken_documents(validator: Any, breakage: str) -> None:
    _, doc = sarif_doc()
    result = next(r for r in doc["runs"][0]["results"] if r["ruleId"] == "FT011")
    if breakage == "no-version":
        del doc["version"]
    elif breakage == "bad-level":
        result["level"] = "fatal"
    elif breakage == "zero-line":
        result["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    else:
        result["severity"] = "error"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)


def test_sarif_content() -> None:
    import ftc

    _, doc = sarif_doc()
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("ftc", ftc.__version__)
    assert driver["informationUri"].startswith("https://")
    assert [r["id"] for r in driver["rules"]] == ["FT011", "FT040", "FT001", "FT090"]
    assert driver["rules"][1] == {
        "id": "FT040",
        "name": "high-learning-rate",
        "shortDescription": {"text": "The learning rate is unusually high."},
        "defaultConfiguration": {"level": "warning"},
    }
    by_id = {r["ruleId"]: r for r in run["results"]}
    for r in run["results"]:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
    key = by_id["FT011"]
    assert key["level"] == "error"
    assert key["message"]["text"] == (
        "unknown key `rnak` in `method lora`\nmore\nhelp: did you mean `rank`?"
    )
    assert key["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "specs/x.ftspec"},
        "region": {"startLine": 3, "startColumn": 17, "endLine": 3, "endColumn": 21},
    }
    rel = key["relatedLocations"][0]
    assert rel["physicalLocation"]["artifactLocation"]["uri"] == "specs/sub%20dir/data.ftspec"
    assert rel["message"] == {"text": "declared here"}
    assert "suppressions" not in key
    assert by_id["FT040"]["suppressions"] == [
        {"kind": "inSource", "justification": "tuned on purpose"}
    ]
    assert "locations" not in by_id["FT001"]
    assert by_id["FT090"]["level"] == "note"


def test_every_format_renders_an_empty_list() -> None:
    for fmt in FORMATS:
        assert isinstance(render([], {}, fmt), str)
