"""No import cycles among ftc's modules, counting imports made inside functions.

A function-level import hides a cycle from Python (it runs later) but not from the design: two
modules that need each other are one module in two files, and a rule module that imports the
driver which runs the rules makes every stage depend on every other. Edges are every `import`
and `from ... import` of an ftc module anywhere in a file (functions included), and importing a
package's submodule also runs the package's `__init__`; imports under `if TYPE_CHECKING:` do not
run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = {"compiler": "ftc.compiler", "runtime": "ftc.runtime"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    name = ".".join([PACKAGES[rel.parts[0]], *rel.parts[1:]])
    return name.removesuffix(".__init__")


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            if "_pkg" not in path.parts:
                out[_module_name(path)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module if is_package else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        target = base + (f".{node.module}" if node.module else "")
    else:
        target = node.module or ""
    return [target, *(f"{target}.{a.name}" for a in node.names)]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
                for target in _imported(node, name, path.name == "__init__.py"):
                    parts = target.split(".")
                    # `a.b.c` runs a/__init__ and a/b/__init__ too
                    deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_function_level_imports() -> None:
    graph = _graph()
    assert "ftc.compiler.rules" in graph["ftc.compiler.check"]  # imported inside check_file
    assert "ftc.compiler.data.analyze" not in graph["ftc.compiler.checked"]  # TYPE_CHECKING only


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Cycles that are known and not yet broken (issue 9): each must go, and the test fails when one is
# gone but still listed, so the list only shrinks. Any other cycle fails the test.
KNOWN = [
    ["ftc.compiler.rules.data", "ftc.compiler.rules.evalsets"],  # evalsets uses data's private helpers
]


def test_no_import_cycles_but_the_known_ones() -> None:
    cycles = sorted(_cycles(_graph()))
    new = [c for c in cycles if c not in KNOWN]
    assert new == [], "import cycles (function-level imports counted):\n" + "\n".join(" <-> ".join(c) for c in new)
    gone = [c for c in KNOWN if c not in cycles]
    assert gone == [], f"these cycles are broken now: remove them from KNOWN: {gone}"
