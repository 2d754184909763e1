"""Lark tree -> frozen AST. Classifies numeric literals and reports malformed ones."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ftc.compiler import (
    ast,
    larkimport,  # noqa: F401 (before lark: see its docstring)
    limits,
)
from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.source import Source, Span
from lark import Token, Tree

_NUM = re.compile(
    r"(?P<num>[-+]?(\d[\d_]*(\.\d+)?|\.\d+)([eE][-+]?\d+)?)(?P<unit>%|[A-Za-z]+)?(?P<ratio>(/\d+(\.\d+)?)*)$"
)

Report = Callable[[Diagnostic], None]


def _number(text: str) -> float:
    return float(text.replace("_", ""))


class Lowerer:
    def __init__(self, source: Source, report: Report, bounds: limits.Current | None = None) -> None:
        self.source = source
        self.report = report
        self.bounds = bounds or limits.current()

    def span_tok(self, tok: Token) -> Span:
        return self.source.span(tok.start_pos or 0, tok.end_pos or 0)

    def span_tree(self, tree: Tree[Token]) -> Span:
        meta = tree.meta
        if getattr(meta, "empty", True):
            return self.source.span(0, 0)
        return self.source.span(meta.start_pos, meta.end_pos)

    def file(self, tree: Tree[Token], comments: tuple[ast.Comment, ...]) -> ast.SpecFile:
        extends: list[ast.Str] = []
        root: Tree[Token] | None = None
        for child in tree.children:
            if isinstance(child, Tree) and child.data == "header":
                extends.append(self.string(child.children[1]))
            elif isinstance(child, Tree):
                root = child
        assert root is not None  # the grammar requires a root
        body_tree = root.children[-1]
        assert isinstance(body_tree, Tree)
        name = self.string(root.children[1]) if root.data == "spec" else None
        body = self.body(body_tree)
        return ast.SpecFile(
            self.source.path, str(root.data), name, tuple(extends), body,
            self.source.span(0, len(self.source.text)), comments,
        )

    def body(self, tree: Tree[Token]) -> ast.Body:
        stmts = tuple(self.stmt(c) for c in tree.children if isinstance(c, Tree))
        return ast.Body(stmts, self.span_tree(tree))

    def stmt(self, tree: Tree[Token]) -> ast.Stmt:
        override = False
        key: Token | None = None
        args: list[ast.Value] = []
        body: ast.Body | None = None
        for child in tree.children:
            if isinstance(child, Token) and child.type == "OVERRIDE":
                override = True
            elif isinstance(child, Token) and child.type == "NAME" and key is None:
                key = child
            elif isinstance(child, Tree) and child.data == "body":
                body = self.body(child)
            else:
                args.append(self.value(child))
        assert key is not None
        return ast.Stmt(str(key), self.span_tok(key), tuple(args), body, override, self.span_tree(tree))

    def value(self, node: Tree[Token] | Token) -> ast.Value:
        assert isinstance(node, Tree), node
        kind = node.data
        if kind == "string":
            return self.string(node.children[0])
        if kind == "number":
            return self.number(node.children[0])
        if kind == "dotted":
            return ast.Name(tuple(str(t) for t in node.children), self.span_tree(node))
        if kind == "list":
            children = [c for c in node.children if isinstance(c, Tree)]
            if len(children) > self.bounds.list_items:
                return self.too_long(children, self.span_tree(node))
            return ast.ListV(tuple(self.value(c) for c in children), self.span_tree(node))
        if kind == "comparison":
            left, op, right = node.children
            return ast.Compare(self.value(left), str(op), self.value(right), self.span_tree(node))
        raise AssertionError(f"unknown tree {kind}")

    def too_long(self, items: list[Tree[Token]], span: Span) -> ast.ListV:
        cap = self.bounds.list_items
        self.report(make("FT026", f"a list of {len(items):,} items: more than {cap:,}", span,
                         help=f"shorten the list; {limits.LIST_ITEMS.help(cap)}"))
        return ast.ListV((), span)

    def string(self, tok: Token | Tree[Token]) -> ast.Str:
        assert isinstance(tok, Token)
        raw = str(tok)[1:-1]
        cap = self.bounds.string_chars
        if len(raw) > cap:
            self.report(make("FT025", f"a string of {len(raw):,} characters: longer than {cap:,}",
                             self.span_tok(tok), help=f"shorten it; {limits.STRING_CHARS.help(cap)}"))
            return ast.Str("", self.span_tok(tok))
        value = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw)
        return ast.Str(value, self.span_tok(tok))

    def number(self, tok: Token | Tree[Token]) -> ast.Value:
        assert isinstance(tok, Token)
        text = str(tok)
        span = self.span_tok(tok)
        cap = self.bounds.number_chars
        if len(text) > cap:
            self.report(make("FT025", f"a number of {len(text):,} characters: longer than {cap}", span,
                             help=f"no setting needs a number this long; {limits.NUMBER_CHARS.help(cap)}"))
            return ast.Num(0.0, "0", True, span)
        m = _NUM.match(text)
        assert m is not None  # the token regex and _NUM agree
        if not all(math.isfinite(_number(p)) for p in (m.group("num"), *m.group("ratio").split("/")[1:])):
            self.report(make("FT025", f"`{text}` is too large to represent", span,
                             help="write a number below 1e308; no setting needs one larger"))
            return ast.Num(0.0, "0", True, span)
        num, unit, ratio = m.group("num"), m.group("unit"), m.group("ratio")
        if ratio:
            if unit:
                self.report(make("FT003", f"malformed ratio `{text}`", span,
                                 help="write a ratio as plain numbers, e.g. `80/10/10`"))
            parts = (_number(num), *(_number(p) for p in ratio.split("/")[1:]))
            return ast.Ratio(parts, text, span)
        if unit == "%":
            return ast.Percent(_number(num), text, span)
        if unit:
            return ast.Quantity(_number(num), unit, text, span)
        is_int = re.fullmatch(r"[-+]?[\d_]+", num) is not None
        return ast.Num(_number(num), text, is_int, span)
