"""Data contracts: what each row must hold for the spec's signal and task, as a JSON Schema.

`row_schema(spec)` builds a draft 2020-12 schema from the field names the spec gives (after the
`fields` mapping: `fields { text "body" }` makes the data's `body` column the spec's `text`);
`validate_rows(table, schema)` checks every row and describes the first few that break it, with
the field, the row's line and a help line. Contracts:

| signal / task | each row holds |
| --- | --- |
| sft, generation | `input` and `target`: non-blank strings; or `messages` (chat) |
| sft, classification / image_classification | `target` one of `model.labels`; `input` text or image |
| sft, extraction | `target`: JSON (a string that parses, or an object) valid against `output_schema` |
| sft with `messages` | a list of {role, content}, role in system/user/assistant/tool, one assistant turn at least |
| dpo; rlhf reward stage | `prompt`, `chosen`, `rejected` (strings or message lists); chosen differs from rejected |
| rlhf policy stage | `prompt` |
| contrastive, text | `anchor`, `positive` (and `negative` when named): non-blank strings |
| contrastive, image-text | `image` (a path, or an embedded image) and a non-blank `caption` |

Two checks JSON Schema cannot state are custom keywords, asserted by this module's validator:
`x-ftc-json` (the string parses as JSON, valid against the given schema) and `x-ftc-distinct` (the
named fields differ). jsonschema is imported on first use; each schema is compiled once.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ftc.compiler.data.table import RowProblem, Table

if TYPE_CHECKING:
    from ftc.compiler.schema import Spec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ROLES = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------------------------------------
# Building blocks


def _text(title: str) -> dict[str, Any]:
    return {"title": title, "type": "string", "minLength": 1, "pattern": r"\S"}


def _image(title: str) -> dict[str, Any]:
    """A path (image_table, image_folder) or an embedded image (a `datasets` Image struct)."""
    return {"title": title, "type": ["string", "object"], "minLength": 1, "pattern": r"\S",
            "anyOf": [{"type": "string"}, {"required": ["bytes"]}, {"required": ["path"]}]}


_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": {"enum": list(ROLES)}, "content": {"type": ["string", "array", "null"]}},
}


def _messages(title: str) -> dict[str, Any]:
    return {"title": title, "type": "array", "minItems": 1, "items": _MESSAGE,
            "contains": {"type": "object", "required": ["role"], "properties": {"role": {"const": "assistant"}}}}


def _preference(title: str) -> dict[str, Any]:
    """A preference field: a string, or a conversation (a list of messages), as TRL accepts."""
    return {"title": title, "type": ["string", "array"], "minLength": 1, "pattern": r"\S", "minItems": 1,
            "items": _MESSAGE}


def _label(title: str, labels: Iterable[str] | None) -> dict[str, Any]:
    if not labels:
        return _text(title)
    return {"title": title, "enum": list(labels)}


def _json_target(title: str, output_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"title": title, "type": ["string", "object", "array"],
            "x-ftc-json": dict(output_schema) if output_schema is not None else {}}


def _object(title: str, props: dict[str, dict[str, Any]], optional: Iterable[str] = (),
            distinct: tuple[str, str] | None = None) -> dict[str, Any]:
    props = {name: p for name, p in props.items() if name}
    schema: dict[str, Any] = {"$schema": DIALECT, "title": title, "type": "object",
                              "required": [n for n in props if n not in set(optional)], "properties": props}
    if distinct is not None and all(distinct):
        schema["x-ftc-distinct"] = list(distinct)
    return schema


# ---------------------------------------------------------------------------------------------
# The contract of a spec


def row_schema(spec: Spec, stage: str | None = None, *,
               output_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema every row must satisfy, in the spec's field names (after the mapping).

    `stage` picks an RLHF stage's contract: "reward" (preference pairs) or "policy" (prompts).
    Without it, an RLHF spec's top-level data must hold prompts, and the preference pairs too
    when the reward stage has no data of its own. `output_schema` is the loaded JSON Schema that
    extraction targets must satisfy (None: the target need only be JSON).
    """
    from ftc.compiler import schema as s

    sig, model = spec.signal, spec.model
    task = model.task if model is not None else None
    labels = model.labels if model is not None else None
    if isinstance(sig, s.SftSignal):
        if sig.messages is not None:
            return _object("sft chat messages", {sig.messages: _messages("chat messages")})
        if task in ("classification", "image_classification"):
            source = _image("image") if task == "image_classification" else _text("sft input")
            return _object(f"sft {task}", {sig.input or "": source, sig.target or "": _label("label", labels)})
        if task == "extraction":
            return _object("sft extraction", {sig.input or "": _text("sft input"),
                                              sig.target or "": _json_target("extraction target", output_schema)})
        return _object("sft pairs", {sig.input or "": _text("sft input"), sig.target or "": _text("sft target")})
    if isinstance(sig, s.DpoSignal):
        return _pairs("dpo preference pairs", sig.prompt, sig.chosen, sig.rejected)
    if isinstance(sig, s.RlhfSignal):
        return _rlhf(sig, stage)
    if isinstance(sig, s.ContrastiveSignal):
        if sig.image is not None or sig.caption is not None or task == "image_text_contrastive":
            return _object("image-text pairs", {sig.image or "image": _image("image"),
                                                 sig.caption or "caption": _text("caption")})
        vision = model is not None and model.modality == "vision"
        kind = _image if vision else _text
        props = {sig.anchor or "": kind("anchor"), sig.positive or "": kind("positive")}
        if sig.negative:
            props[sig.negative] = kind("negative")
        return _object("contrastive triplets" if sig.negative else "contrastive pairs", props)
    return {"$schema": DIALECT, "title": "rows", "type": "object"}


def _pairs(title: str, prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    props = {prompt: _preference("prompt"), chosen: _preference("chosen answer"),
             rejected: _preference("rejected answer")}
    return _object(title, props)  # chosen == rejected is FT212's finding, counted there


def _rlhf(sig: Any, stage: str | None) -> dict[str, Any]:
    reward, policy = sig.reward, sig.policy
    if stage == "reward" and reward is not None:
        return _pairs("reward model preference pairs", reward.prompt, reward.chosen, reward.rejected)
    prompt = policy.prompt if policy is not None else "prompt"
    if stage == "policy" or (reward is not None and reward.data is not None) or reward is None:
        return _object("policy prompts", {prompt: _preference("prompt")})
    schema = _pairs("rlhf prompts and preference pairs", reward.prompt, reward.chosen, reward.rejected)
    schema["properties"].setdefault(prompt, _preference("prompt"))
    schema["required"] = list(schema["properties"])
    return schema


# ---------------------------------------------------------------------------------------------
# Mapping


def apply_mapping(rows: list[dict[str, Any]], mapping: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """Rows in the spec's names: `{"text": "body"}` renames each row's `body` to `text`.

    A mapped column that is also a spec name of its own is kept under both names. Rows are
    copied only when the mapping renames something; the input is never changed.
    """
    pairs = [(name, column) for name, column in (mapping or {}).items() if name != column]
    if not pairs:
        return rows
    drop = {column for _, column in pairs} - {name for name, _ in pairs}
    out = []
    for row in rows:
        new = {k: v for k, v in row.items() if k not in drop}
        for name, column in pairs:
            if column in row:
                new[name] = row[column]
            else:
                new.pop(name, None)
        out.append(new)
    return out


# ---------------------------------------------------------------------------------------------
# Validation


_COMPILED: dict[str, Any] = {}


def _compile(schema: Mapping[str, Any]) -> Any:
    """A validator for `schema` (checked once against its dialect's metaschema), cached."""
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _COMPILED.get(key)
    if validator is None:
        from jsonschema import validators

        base = validators.validator_for(schema, default=validators.Draft202012Validator)
        base.check_schema(schema)
        cls = validators.extend(base, {"x-ftc-json": _json_keyword, "x-ftc-distinct": _distinct_keyword})
        validator = cls(schema)
        _COMPILED[key] = validator
    return validator


def _json_keyword(validator: Any, inner: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match

    value = instance
    if isinstance(instance, str):
        try:
            value = json.loads(instance)
        except ValueError as e:
            yield ValidationError(f"is not valid JSON ({getattr(e, 'msg', str(e)).lower()})")
            return
    if inner:
        try:
            error = best_match(_compile(inner).iter_errors(value))
        except Exception as e:  # noqa: BLE001 (an unresolvable $ref and the like)
            yield ValidationError(f"cannot be checked: the output schema fails ({_short(str(e), 80)})")
            return
        if error is not None:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            yield ValidationError(f"does not match the output schema{(' at `' + where.lstrip('.') + '`') if where else ''}: "
                                  f"{_short(error.message)}")


def _distinct_keyword(validator: Any, names: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if isinstance(instance, dict) and len(names) == 2:
        a, b = instance.get(names[0]), instance.get(names[1])
        if a is not None and a == b:
            yield ValidationError(f"`{names[0]}` and `{names[1]}` are the same")


def validate_rows(table: Table, schema: Mapping[str, Any], *, max_problems: int = 5,
                  mapping: Mapping[str, str] | None = None) -> tuple[list[RowProblem], int]:
    """(problems, number of invalid rows) for a table's rows against a row schema.

    `mapping` (the spec's `fields`) is applied first, and named in messages. A required field
    that no row has is one file-level problem, not one per row. An output schema that is not
    valid JSON Schema is one problem too. (RowChecker does the same over rows fed in batches.)
    """
    checker = RowChecker(table.path, schema, max_problems=max_problems, mapping=mapping)
    checker.feed(table.rows, table.locations)
    return checker.finish(table.columns, lambda: iter([(table.rows, table.locations)]))


class RowChecker:
    """validate_rows over rows fed in batches (`feed(rows, locations)`, in file order), holding
    only the problems it describes and the first 100 rows' column names. When the file turns out
    to lack a required column altogether, `finish` checks the rows once more (from `replay`) to
    describe the rows that break something else, as validate_rows does."""

    def __init__(self, path: str, schema: Mapping[str, Any], *, max_problems: int = 5,
                 mapping: Mapping[str, str] | None = None, absent: frozenset[str] = frozenset()) -> None:
        self.path, self.schema, self.max_problems = path, schema, max_problems
        self.mapping = dict(mapping or {})
        self.absent = absent
        self.problems: list[RowProblem] = []
        self.invalid = self.rows = 0
        self.required = list(schema.get("required", []))
        self.present: set[str] = set()
        self.sample_keys: set[str] = set()
        self.broken: RowProblem | None = None
        try:
            self.validator = _compile(schema)
            for prop in schema.get("properties", {}).values():
                if prop.get("x-ftc-json"):
                    _compile(prop["x-ftc-json"])
        except Exception as e:  # noqa: BLE001 (jsonschema.SchemaError, or an unknown $schema)
            self.broken = RowProblem(path, None, None, f"the data contract is not a valid JSON Schema: "
                                     f"{_short(getattr(e, 'message', str(e)))}", "check the output schema file",
                                     kind="contract")
            return
        self.fast = _fast_check(schema)
        self.limit = max_problems + len(absent)

    def feed(self, rows: list[dict[str, Any]], locations: list[int] | Any) -> None:
        if self.broken is not None:
            return
        mapped = apply_mapping(rows, self.mapping)
        if self.rows < 100:
            self.sample_keys.update(k for row in mapped[: 100 - self.rows] for k in row)
        self.rows += len(mapped)
        missing = [n for n in self.required if n not in self.present]
        if missing:
            self.present.update(n for n in missing if any(n in row for row in mapped))
        if self.absent:
            self.invalid += len(mapped)
        for row, line in zip(mapped, locations):
            self._check(row, line)

    def _check(self, row: dict[str, Any], line: int) -> None:
        fast, absent, problems = self.fast, self.absent, self.problems
        if fast is not None and fast(row):
            return
        if len(problems) >= self.limit:
            if absent:
                return  # every row is invalid already; the first few are described
            if fast is not None:
                self.invalid += 1  # the predicate is exact for the blocks it knows: no message needed
                return
        errors = [e for e in self.validator.iter_errors(row)
                  if not (absent and e.validator == "required" and not e.path and _missing_name(e) in absent)]
        if not absent and errors:
            self.invalid += 1
        if errors and len(problems) < self.limit:
            field, message, help = _describe(errors[0], row, self.schema, self.mapping)
            more = len({_where(e) for e in errors}) - 1
            if more:
                message += f" (and {more} more field{'s' if more > 1 else ''} in this row)"
            problems.append(RowProblem(self.path, line, field, message, help, kind="contract"))

    def finish(self, columns: tuple[str, ...], replay: Callable[[], Iterator[tuple[list[dict[str, Any]], Any]]]
               ) -> tuple[list[RowProblem], int]:
        """(problems, invalid rows); `columns` the table's columns (for messages)."""
        if self.broken is not None:
            return [self.broken], 0
        absent = {n for n in self.required if self.rows and n not in self.present}
        if not absent or self.absent:
            return self.problems, self.invalid
        head = _absent_problems(self.path, absent, self.required, self.mapping,
                                list(columns) or sorted(self.sample_keys))
        again = RowChecker(self.path, self.schema, max_problems=self.max_problems, mapping=self.mapping,
                           absent=frozenset(absent))
        again.problems = head
        for rows, locations in replay():
            again.feed(rows, locations)
        return again.problems, again.invalid


def _absent_problems(path: str, absent: set[str], required: list[str], mapping: Mapping[str, str],
                     columns: list[str]) -> list[RowProblem]:
    """One file-level problem per required field that no row holds."""
    problems = []
    for name in sorted(absent, key=required.index):
        column = mapping.get(name)
        where = f"`{column}` (mapped to `{name}` by `fields`)" if column else f"`{name}`"
        hint = _suggest(column or name, columns)
        fix = hint or (f'map a column to it: `fields {{ {name} "COLUMN" }}`' if not column else "fix the mapping")
        problems.append(RowProblem(path, None, name, f"no row has a column {where}: the data has "
                                   f"{_names(columns, 8)}", fix, kind="contract"))
    return problems


def _where(error: Any) -> str:
    """The field an error is about: its top-level path, or the missing property."""
    if error.path:
        return str(error.path[0])
    return _missing_name(error) if error.validator == "required" else ""


def _missing_name(error: Any) -> str:
    """The property a `required` error is about (jsonschema yields one error per property)."""
    candidates = [n for n in error.validator_value if isinstance(error.instance, dict) and n not in error.instance]
    for name in candidates:
        if error.message.startswith(repr(name)):
            return str(name)
    return str(candidates[0]) if candidates else "?"


# ---------------------------------------------------------------------------------------------
# Messages


def _short(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _names(items: Iterable[Any], limit: int = 10) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else ""


_TYPE_WORDS = {"string": "a string", "array": "a list", "object": "an object", "number": "a number",
               "integer": "an integer", "boolean": "true/false", "null": "null"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    kinds: dict[type, str] = {str: "a string", list: "a list", dict: "an object", bytes: "bytes"}
    return kinds.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if not isinstance(value, bytes) else "<bytes>"
    return _short(text, 40)


def _location(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(error: Any, row: Mapping[str, Any], schema: Mapping[str, Any],
              mapping: Mapping[str, str]) -> tuple[str | None, str, str]:
    """(field, message, help) for the first error of a row."""
    path = list(error.path)
    kw = error.validator
    if not path:
        if kw == "required":
            name = _missing_name(error)
            column = mapping.get(name)
            if column:
                return name, f"missing column `{column}` (mapped to `{name}` by `fields`)", \
                    _suggest(column, [str(k) for k in row]) or f"the row has {_names(row, 8)}"
            return name, f"missing field `{name}`", \
                _suggest(name, [str(k) for k in row]) or f"the row has {_names(row, 8)}"
        if kw == "x-ftc-distinct":
            return error.validator_value[1], error.message, "a preference pair needs two different answers"
        return None, _short(error.message), "see the contract of the signal in `ftc explain`"
    field = str(path[0])
    loc = _location(path)
    prop = schema.get("properties", {}).get(field, {})
    title = prop.get("title", field)
    value = error.instance
    if kw == "enum" and len(path) == 1:
        labels = [str(v) for v in error.validator_value]
        hint = _suggest(str(value), labels)
        shown = f"`{_show(value)}`" if isinstance(value, str) else f"{_show(value)} ({_kind(value)})"
        return field, f"`{loc}` is {shown}, not one of the model's labels", \
            f"{title} {shown} is not one of {', '.join(labels)}" + (f" — {hint}" if hint else "")
    if kw == "enum":
        return field, f"`{loc}` is `{_show(value)}`, not one of {', '.join(map(str, error.validator_value))}", \
            "chat roles are system, user, assistant and tool"
    if kw in ("minLength", "pattern"):
        return field, f"`{loc}` ({title}) is blank", "fill it in, or drop the row"
    if kw == "minItems":
        return field, f"`{loc}` ({title}) is an empty list", "give at least one item, or drop the row"
    if kw == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        want = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        return field, f"`{loc}` ({title}) is {_kind(value)}, expected {want}", f"write the {title} as {want}"
    if kw == "contains":
        return field, f"`{loc}` has no assistant turn", \
            "a chat example needs at least one `assistant` message: the turn the model learns to write"
    if kw == "required":
        return field, f"`{loc}` is missing `{_missing_name(error)}`", \
            'each chat message is {"role": "user", "content": "..."}'
    if kw == "x-ftc-json":
        return field, f"`{loc}` ({title}) {error.message}", \
            "extraction targets must be JSON that the model's output_schema accepts"
    if kw == "anyOf" and title == "image":
        return field, f"`{loc}` is not an image path or an embedded image", \
            "give a path relative to image_root, or an object with `bytes` or `path`"
    return field, f"`{loc}` ({title}): {_short(error.message)}", "see the contract of the signal in `ftc explain`"


# ---------------------------------------------------------------------------------------------
# The fast path


def _fast_check(schema: Mapping[str, Any]) -> Any:
    """A plain-Python predicate equal to the schema, for the contracts this module builds: valid
    rows skip jsonschema (about 25 µs a row, 100 µs for chat messages), and once enough problems
    are described, invalid rows are only counted. None when a property is not one of the known
    blocks. (It is exact for plain dicts, lists and strs, which is what readers return; for
    subclasses it may refuse a valid value, which then goes through jsonschema.)"""
    checks: list[tuple[str, Any]] = []
    for name, prop in schema.get("properties", {}).items():
        shape = {k: v for k, v in prop.items() if k != "title"}
        if set(shape) == {"enum"} and all(isinstance(v, str) for v in shape["enum"]):
            checks.append((name, _one_of(frozenset(shape["enum"]))))
            continue
        if set(shape) == {"type", "x-ftc-json"} and shape["type"] == ["string", "object", "array"]:
            checks.append((name, _json_test(shape["x-ftc-json"])))
            continue
        for block, test in _FAST_BLOCKS:
            if shape == block:
                checks.append((name, test))
                break
        else:
            return None
    if set(schema) - {"$schema", "title", "type", "required", "properties", "x-ftc-distinct"}:
        return None
    if set(schema.get("required", [])) != {n for n, _ in checks}:
        return None
    distinct = schema.get("x-ftc-distinct")

    def check(row: Mapping[str, Any]) -> bool:
        for name, test in checks:
            if name not in row or not test(row[name]):
                return False
        return not distinct or row.get(distinct[0]) != row.get(distinct[1])

    return check


def _one_of(labels: frozenset[str]) -> Any:
    """Membership that holds for any cell value: a list or an object (`"label": ["billing"]`) is
    not a label, and must not be hashed to find that out."""

    def test(v: Any) -> bool:
        return type(v) is str and v in labels

    return test


def _json_test(inner: Mapping[str, Any]) -> Any:
    """The x-ftc-json check without the row's jsonschema pass: parse, then the output schema."""
    valid = _compile(inner).is_valid if inner else (lambda value: True)

    def test(v: Any) -> bool:
        if type(v) is str:
            try:
                v = json.loads(v)
            except (ValueError, RecursionError):
                return False
        elif type(v) not in (dict, list):
            return False
        return bool(valid(v))

    return test


def _is_text(v: Any) -> bool:
    return type(v) is str and bool(v) and not v.isspace()


def _is_message(m: Any) -> bool:
    return (type(m) is dict and m.get("role") in ROLES and "content" in m
            and (m["content"] is None or type(m["content"]) in (str, list)))


def _is_messages(v: Any) -> bool:
    if type(v) is not list or not v:
        return False
    assistant = False
    for m in v:
        if not _is_message(m):
            return False
        assistant = assistant or m["role"] == "assistant"
    return assistant


def _is_preference(v: Any) -> bool:
    if type(v) is list:
        return bool(v) and all(_is_message(m) for m in v)
    return _is_text(v)


def _is_image(v: Any) -> bool:
    if type(v) is dict:
        return "bytes" in v or "path" in v
    return _is_text(v)


def _untitled(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "title"}


_FAST_BLOCKS = (
    (_untitled(_text("")), _is_text),
    (_untitled(_messages("")), _is_messages),
    (_untitled(_preference("")), _is_preference),
    (_untitled(_image("")), _is_image),
)
