"""Rule documentation, generated from the rule docstrings: `ftc explain`, `ftc rules`, README.

A rule's Example and Use instead sections show blocks of a spec; they replace the blocks of the
same name in EXAMPLE_BASE, a spec that checks clean, so each example stays short and the tests can
run it (compose_example).
"""

from __future__ import annotations

import json

from ftc.compiler.rules import RULES
from ftc.compiler.rules.base import Rule, doc_sections

EXAMPLE_BASE = """\
spec "example" {
  intent { goal behavior; stability stable; owner "ml-team" }
  model {
    modality text
    base "hf:org/encoder"
    revision "3f2a9c1"
    task classification
    labels ["billing", "bug", "account"]
    params 110M
  }
  method lora { rank 8; alpha 16 }
  signal sft { input "text"; target "label" }
  data {
    train "data/train.jsonl" rows 2000
    val "data/val.jsonl" rows 300
    test "data/test.jsonl" rows 300
  }
  train {
    epochs 3; learning_rate 2e-4; batch_size 16
    early_stopping patience 2 on val.loss
    checkpoints keep 2
  }
  eval {
    metric f1 macro
    gate f1 >= 0.85 on test
  }
  budget { gpu_memory 24GB }
}
"""


def _top_blocks(text: str) -> list[tuple[str, str]]:
    """Split a snippet into its top-level blocks: (block word, text), by brace depth."""
    blocks: list[tuple[str, str]] = []
    depth, start, in_string = 0, None, False
    for i, ch in enumerate(text):
        if ch == '"':
            in_string = not in_string
        if in_string:
            continue
        if depth == 0 and start is None and not ch.isspace():
            start = i
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                chunk = text[start:i + 1]
                blocks.append((chunk.split()[0], chunk))
                start = None
    return blocks


def compose_example(snippet: str) -> str:
    """EXAMPLE_BASE with each top-level block of `snippet` replacing the block of the same name."""
    if snippet.lstrip().startswith(("spec ", "extends ", "defaults ")):
        return snippet if snippet.endswith("\n") else snippet + "\n"  # a whole file
    replace = dict(_top_blocks(snippet))
    lines_out: list[str] = []
    for word, chunk in _top_blocks(EXAMPLE_BASE[EXAMPLE_BASE.index("{") + 1: EXAMPLE_BASE.rindex("}")]):
        lines_out.append("  " + replace.pop(word, chunk))
    lines_out.extend("  " + chunk for chunk in replace.values())
    return 'spec "example" {\n' + "\n".join(lines_out) + "\n}\n"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def explain_text(rule: Rule) -> str:
    sec = doc_sections(rule.doc)
    out = [f"{rule.code} {rule.name} ({rule.severity.value})", "", sec["Summary"], ""]
    if sec.get("Why"):
        out += ["Why:", _indent(sec["Why"]), ""]
    if sec.get("Example"):
        out += ["Example (blocks of an otherwise clean spec):", _indent(sec["Example"]), ""]
    if sec.get("Use instead"):
        out += ["Use instead:", _indent(sec["Use instead"]), ""]
    if sec.get("Fires with"):
        out += ["Fires with:", _indent(sec["Fires with"]), ""]
    out.append(f"Suppressible: {rule.suppressible}.")
    if rule.stage == "files":
        out.append("Reads the files the spec names; skipped by `ftc check --no-data`.")
    if rule.stage == "target":
        out.append("Runs only with `ftc check --target NAME`.")
    return "\n".join(out)


def rules_text() -> str:
    width = max(len(r.name) for r in RULES)
    return "".join(f"{r.code}  {r.name:<{width}}  {r.severity.value:<7}  {r.summary}\n" for r in RULES)


def rules_json() -> str:
    rows = [{"code": r.code, "name": r.name, "severity": r.severity.value, "summary": r.summary,
             "stage": r.stage, "suppressible": r.suppressible, "status": r.status} for r in RULES]
    return json.dumps({"format_version": 1, "rules": rows}, indent=2) + "\n"


def rules_markdown() -> str:
    out = ["| code | name | severity | what it checks |", "| --- | --- | --- | --- |"]
    for r in RULES:
        summary = r.summary.replace("|", "\\|")
        out.append(f"| {r.code} | {r.name} | {r.severity.value} | {summary} |")
    return "\n".join(out) + "\n"


README_START, README_END = "<!-- rules:start -->\n", "<!-- rules:end -->"


def readme_with_rules(text: str) -> str:
    """README.md text with its rule table regenerated from the rule docstrings."""
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return head + README_START + rules_markdown() + README_END + tail


if __name__ == "__main__":  # python -m ftc.compiler.docs README.md: refresh the README's rule table
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    target.write_text(readme_with_rules(target.read_text(encoding="utf-8")), encoding="utf-8")
