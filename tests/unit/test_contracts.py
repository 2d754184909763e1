"""Data contracts: for each signal and task, a good row passes and a bad row is a located problem
naming the field, with a help line; the mapping is applied first; validation is fast."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from ftc.compiler import schema as s
from ftc.compiler.data.contracts import DIALECT, apply_mapping, row_schema, validate_rows
from ftc.compiler.data.readers import read_table
from ftc.compiler.data.table import RowProblem, Table
from ftc.compiler.docs import compose_example

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD, BAD = DATA / "good", DATA / "bad"
LABELS = ("billing", "bug", "account")


def spec(task: str, signal: Any, *, modality: str = "text", labels: tuple[str, ...] | None = None) -> s.Spec:
    return s.Spec(model=s.Model(modality=modality, base="hf:org/m", task=task, labels=labels), signal=signal)


CLASSIFY = spec("classification", s.SftSignal(input="text", target="label"), labels=LABELS)
GENERATE = spec("generation", s.SftSignal(input="prompt", target="answer"))
EXTRACT = spec("extraction", s.SftSignal(input="text", target="target"))
CHAT = spec("generation", s.SftSignal(messages="messages"))
DPO = spec("generation", s.DpoSignal())
RLHF = spec("generation", s.RlhfSignal(reward=s.RewardStage(), policy=s.PolicyStage()))
PAIRS = spec("embedding", s.ContrastiveSignal(anchor="query", positive="positive"))
TRIPLETS = spec("embedding", s.ContrastiveSignal(anchor="query", positive="positive", negative="negative"))
IMAGES = spec("image_classification", s.SftSignal(input="image", target="label"), modality="vision",
              labels=("cat", "dog"))
CAPTIONS = spec("image_text_contrastive", s.ContrastiveSignal(image="image", caption="caption"),
                modality="multimodal")
INVOICE = json.loads((GOOD / "invoice.schema.json").read_text())


def table(*rows: dict[str, Any], path: str = "data.jsonl") -> Table:
    cols = tuple(dict.fromkeys(k for r in rows for k in r))
    return Table(path, "jsonl", rows=list(rows), locations=list(range(1, len(rows) + 1)), columns=cols)


def check(sp: s.Spec, *rows: dict[str, Any], **kw: Any) -> tuple[list[RowProblem], int]:
    stage = kw.pop("stage", None)
    return validate_rows(table(*rows), row_schema(sp, stage, output_schema=kw.pop("output_schema", None)), **kw)


def one(sp: s.Spec, row: dict[str, Any], *, after: dict[str, Any] | None = None, **kw: Any) -> RowProblem:
    """The one problem of `row`; `after` is a good row put first (a field missing from every row
    is one file-level problem instead)."""
    rows = (after, row) if after is not None else (row,)
    problems, invalid = check(sp, *rows, **kw)
    assert invalid == 1 and len(problems) == 1, problems
    p = problems[0]
    assert (p.path, p.line, p.kind) == ("data.jsonl", len(rows), "contract") and p.help
    return p


# ---------------------------------------------------------------------------------------------
# The schemas themselves


@pytest.mark.parametrize("sp", [CLASSIFY, GENERATE, EXTRACT, CHAT, DPO, RLHF, PAIRS, TRIPLETS, IMAGES, CAPTIONS])
def test_schemas_are_valid_draft_2020_12(sp: s.Spec) -> None:
    from jsonschema import Draft202012Validator

    for stage in (None, "reward", "policy"):
        schema = row_schema(sp, stage, output_schema=INVOICE)
        assert schema["$schema"] == DIALECT
        Draft202012Validator.check_schema(schema)


def test_schema_uses_the_spec_field_names() -> None:
    schema = row_schema(CLASSIFY)
    assert schema["required"] == ["text", "label"] and schema["properties"]["label"]["enum"] == list(LABELS)
    assert row_schema(TRIPLETS)["required"] == ["query", "positive", "negative"]
    assert row_schema(RLHF, "policy")["required"] == ["prompt"]
    assert row_schema(RLHF, "reward")["required"] == ["prompt", "chosen", "rejected"]


# ---------------------------------------------------------------------------------------------
# SFT


def test_classification() -> None:
    assert check(CLASSIFY, {"text": "My invoice", "label": "billing"}) == ([], 0)
    p = one(CLASSIFY, {"text": "Charged twice", "label": "bilingg"})
    assert p.field == "label" and p.message == "`label` is `bilingg`, not one of the model's labels"
    assert p.help == "label `bilingg` is not one of billing, bug, account — did you mean `billing`?"


def test_classification_number_label_and_blank_input() -> None:
    p = one(CLASSIFY, {"text": "x", "label": 3})
    assert p.field == "label" and "3 (a number)" in p.message
    p = one(CLASSIFY, {"text": "   ", "label": "bug"})
    assert (p.field, p.message) == ("text", "`text` (sft input) is blank")


def test_generation_pairs() -> None:
    assert check(GENERATE, {"prompt": "Say hi", "answer": "Hi!"}) == ([], 0)
    p = one(GENERATE, {"prompt": "Say hi", "answer": ""})
    assert p.field == "answer" and "blank" in p.message
    p = one(GENERATE, {"prompt": ["Say hi"], "answer": "Hi"})
    assert p.message == "`prompt` (sft input) is a list, expected a string"


def test_extraction_against_output_schema() -> None:
    good = [{"text": "Invoice 17", "target": json.dumps({"number": "17", "vendor": "ACME", "total": 1.5})},
            {"text": "Invoice 18", "target": {"number": "18", "vendor": "Initech", "total": 2}}]
    assert check(EXTRACT, *good, output_schema=INVOICE) == ([], 0)
    p = one(EXTRACT, {"text": "x", "target": "{not json"}, output_schema=INVOICE)
    assert p.field == "target" and "is not valid JSON" in p.message
    p = one(EXTRACT, {"text": "x", "target": '{"number": 17, "vendor": "A", "total": 1}'}, output_schema=INVOICE)
    assert "does not match the output schema at `number`" in p.message and "output_schema" in p.help
    # without an output schema, the target need only be JSON
    assert check(EXTRACT, {"text": "x", "target": '{"any": 1}'}) == ([], 0)


def test_extraction_with_broken_output_schema() -> None:
    problems, invalid = check(EXTRACT, {"text": "x", "target": "{}"}, output_schema={"type": "objekt"})
    assert invalid == 0 and len(problems) == 1 and problems[0].line is None
    assert "not a valid JSON Schema" in problems[0].message


def test_chat_messages() -> None:
    good = {"messages": [{"role": "system", "content": "Route."}, {"role": "user", "content": "Bill?"},
                         {"role": "assistant", "content": "billing"}]}
    assert check(CHAT, good) == ([], 0)
    p = one(CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    assert (p.field, p.message) == ("messages", "`messages` has no assistant turn")
    p = one(CHAT, {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]})
    assert p.message == "`messages[0].role` is `bot`, not one of system, user, assistant, tool"
    p = one(CHAT, {"messages": [{"role": "assistant"}]})
    assert p.message == "`messages[0]` is missing `content`"


def test_image_classification_rows_from_an_image_folder() -> None:
    t = read_table(GOOD / "images", "images")
    assert validate_rows(t, row_schema(IMAGES)) == ([], 0)
    p = one(IMAGES, {"image": "cat/x.png", "label": "cow"})
    assert p.field == "label" and "cat, dog" in p.help


# ---------------------------------------------------------------------------------------------
# Preferences


def test_dpo() -> None:
    assert check(DPO, {"prompt": "p", "chosen": "good", "rejected": "bad"}) == ([], 0)
    conversational = {"prompt": [{"role": "user", "content": "p"}],
                      "chosen": [{"role": "assistant", "content": "good"}],
                      "rejected": [{"role": "assistant", "content": "bad"}]}
    assert check(DPO, conversational) == ([], 0)
    # identical pairs are valid rows here: FT212 (preference-identical) counts them
    assert check(DPO, {"prompt": "p", "chosen": "same", "rejected": "same"}) == ([], 0)
    p = one(DPO, {"prompt": "p", "chosen": "good"}, after={"prompt": "p", "chosen": "a", "rejected": "b"})
    assert (p.field, p.message) == ("rejected", "missing field `rejected`")


def test_rlhf_stages() -> None:
    pair = {"prompt": "p", "chosen": "good", "rejected": "bad"}
    assert check(RLHF, pair, stage="reward") == ([], 0)
    assert one(RLHF, {"prompt": "p", "chosen": "good"}, after=pair, stage="reward").field == "rejected"
    assert check(RLHF, {"prompt": "Write a haiku"}, stage="policy") == ([], 0)
    assert one(RLHF, {"prompt": ""}, stage="policy").field == "prompt"
    # top-level data, no stage data of its own: it feeds both stages
    assert row_schema(RLHF)["required"] == ["prompt", "chosen", "rejected"]


# ---------------------------------------------------------------------------------------------
# Contrastive


def test_contrastive_pairs_and_triplets() -> None:
    assert check(PAIRS, {"query": "reset password", "positive": "How to reset"}) == ([], 0)
    assert one(PAIRS, {"query": "reset password", "positive": " "}).field == "positive"
    assert check(TRIPLETS, {"query": "q", "positive": "p", "negative": "n"}) == ([], 0)
    p = one(TRIPLETS, {"query": "q", "positive": "p"}, after={"query": "q", "positive": "p", "negative": "n"})
    assert (p.field, p.message) == ("negative", "missing field `negative`")


def test_image_captions() -> None:
    t = read_table(GOOD / "captions.jsonl", "captions.jsonl", "image_table")
    assert validate_rows(t, row_schema(CAPTIONS)) == ([], 0)
    embedded = {"image": {"bytes": b"\x89PNG", "path": None}, "caption": "a cat"}
    assert check(CAPTIONS, embedded) == ([], 0)
    assert one(CAPTIONS, {"image": "a.png", "caption": ""}).field == "caption"
    assert one(CAPTIONS, {"image": {"size": 3}, "caption": "x"}).message == \
        "`image` is not an image path or an embedded image"


# ---------------------------------------------------------------------------------------------
# Mapping, missing columns, limits


def test_apply_mapping() -> None:
    rows = [{"body": "hello", "label": "bug"}]
    assert apply_mapping(rows, {"text": "body"}) == [{"label": "bug", "text": "hello"}]
    assert rows == [{"body": "hello", "label": "bug"}]  # the input is not changed
    assert apply_mapping(rows, {}) is rows
    assert apply_mapping(rows, {"text": "body", "body": "label"}) == [{"body": "bug", "text": "hello"}]


def test_mapping_applied_before_validation() -> None:
    t = table({"body": "hello", "label": "bug"})
    assert validate_rows(t, row_schema(CLASSIFY), mapping={"text": "body"}) == ([], 0)
    problems, invalid = validate_rows(t, row_schema(CLASSIFY))
    assert invalid == 1 and len(problems) == 1
    p = problems[0]
    assert (p.line, p.field) == (None, "text") and "no row has a column `text`" in p.message
    assert 'fields { text "COLUMN" }' in p.help
    p = validate_rows(t, row_schema(CLASSIFY), mapping={"text": "bdy"})[0][0]
    assert "`bdy` (mapped to `text` by `fields`)" in p.message and p.help == "did you mean `body`?"


def test_parquet_with_the_wrong_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"body": "hi", "category": "bug"}] * 3), tmp_path / "wrong.parquet")
    t = read_table(tmp_path / "wrong.parquet", "wrong.parquet")
    problems, invalid = validate_rows(t, row_schema(CLASSIFY))
    assert invalid == 3 and [p.field for p in problems] == ["text", "label"]
    assert all(p.line is None and p.path == "wrong.parquet" for p in problems)


def test_bad_labels_file_located() -> None:
    t = read_table(BAD / "labels.jsonl", "bad/labels.jsonl")
    problems, invalid = validate_rows(t, row_schema(CLASSIFY))
    assert invalid == 4
    assert [(p.line, p.field) for p in problems] == [(2, "label"), (3, "text"), (4, "text"), (5, "label")]
    assert problems[2].message == "missing field `text`" and problems[2].help == "the row has body, label"


def test_several_fields_wrong_in_one_row() -> None:
    p = one(CLASSIFY, {"text": "", "label": "nope"})
    assert p.field == "text" and p.message.endswith("(and 1 more field in this row)")


def test_max_problems_and_count() -> None:
    rows = [{"text": "x", "label": "nope"}] * 50
    problems, invalid = check(CLASSIFY, *rows, max_problems=3)
    assert invalid == 50 and [p.line for p in problems] == [1, 2, 3]
    chat_rows = [{"messages": [{"role": "user", "content": "hi"}]}] * 20
    problems, invalid = check(CHAT, *chat_rows, max_problems=2)
    assert (invalid, len(problems)) == (20, 2)


def test_contract_from_a_parsed_spec(check_text) -> None:  # type: ignore[no-untyped-def]
    text = compose_example('signal sft { input "text"; target "label" }\n'
                           'data { train "data/train.jsonl" rows 2000; val "data/val.jsonl" rows 300; '
                           'test "data/test.jsonl" rows 300; fields { text "body" } }')
    result = check_text(text)
    assert result.checked is not None, [d.message for d in result.diagnostics]
    sp = result.checked.spec
    mapping = dict(sp.data.fields.mapping)
    assert mapping == {"text": "body"}
    t = table({"body": "My invoice", "label": "billing"}, {"body": "Crash", "label": "bgu"})
    problems, invalid = validate_rows(t, row_schema(sp), mapping=mapping)
    assert invalid == 1 and problems[0].line == 2 and "did you mean `bug`?" in problems[0].help


# ---------------------------------------------------------------------------------------------
# Speed


@pytest.mark.parametrize(("sp", "row"), [
    (CLASSIFY, {"text": "hello there, my invoice is wrong", "label": "billing"}),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
    (DPO, {"prompt": "p", "chosen": "a", "rejected": "b"}),
])
def test_validates_100k_rows_fast(sp: s.Spec, row: dict[str, Any]) -> None:
    t = Table("big.jsonl", "jsonl", rows=[dict(row) for _ in range(100_000)],
              locations=list(range(1, 100_001)), columns=tuple(row))
    schema = row_schema(sp)
    start = time.perf_counter()
    assert validate_rows(t, schema) == ([], 0)
    bad = Table("bad.jsonl", "jsonl", rows=[{**row, next(iter(row)): ""} for _ in range(100_000)],
                locations=list(range(1, 100_001)), columns=tuple(row))
    problems, invalid = validate_rows(bad, schema)
    assert (len(problems), invalid) == (5, 100_000)
    assert time.perf_counter() - start < 3.0  # about 0.3 s on a developer machine
