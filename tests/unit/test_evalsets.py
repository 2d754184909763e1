"""Files that gates evaluate on (`gate regression <= 0.02 vs base on "data/general.jsonl"`) are
read by `ftc check` as `ftc run` reads them: the signal's contract, `fields`, leakage against
train, enough rows; a changed file is not served from the cache; `--no-data` reads none."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.compiler.check import CheckOptions, check_file
from tests.unit.test_data_rules import codes, rows, run, the, write

GATE = 'eval {{ metric f1 macro; gate f1 >= 0.8 on test; gate regression <= 0.02 vs base on "{path}" }}'


def gate_on(path: str = "data/general.jsonl") -> str:
    return GATE.format(path=path)


def test_clean_general_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/general.jsonl", rows(50, 9, start=50_000))
    result = run(tmp_path, monkeypatch, gate_on())
    assert codes(result) == []
    ev = result.checked.data.evalsets["data/general.jsonl"]
    assert ev.usable == 50 and len(ev.part) == 50


def test_missing_contract_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    general = [{"body": r["text"], "label": r["label"]} for r in rows(50, 9, start=50_000)]
    write(tmp_path / "data/general.jsonl", general)
    d = the(run(tmp_path, monkeypatch, gate_on()), "FT200")
    assert d.span.path == "data/general.jsonl" and "no row has a column `text`" in d.message
    assert "FT221" not in {x.code for x in run(tmp_path, monkeypatch, gate_on()).diagnostics}  # no usable row


def test_malformed_rows_first_five_and_a_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    general = rows(50, 9, start=50_000)
    for i in range(0, 16, 2):  # 8 bad labels on lines 1, 3, ..., 15
        general[i]["label"] = "refunds"
    write(tmp_path / "data/general.jsonl", general)
    result = run(tmp_path, monkeypatch, gate_on())
    found = [d for d in result.diagnostics if d.code == "FT201"]
    assert [d.span.line for d in found] == [1, 3, 5, 7, 9]
    assert all(d.span.path == "data/general.jsonl" for d in found)
    assert "8 row(s) of data/general.jsonl are unusable; 3 more not shown" in found[0].detail


def test_fields_mapping_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(data: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{"body": r["text"], "label": r["label"]} for r in data]

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data/general.jsonl", renamed(rows(50, 9, start=50_000)))
    snippet = ('data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl"; '
               'fields { text "body" } }\n' + gate_on())
    result = run(tmp_path, monkeypatch, snippet, train=renamed(rows(300, 1)),
                 val=renamed(rows(60, 2, start=10_000)), test=renamed(rows(60, 3, start=20_000)))
    assert codes(result) == []
    assert "text" in result.checked.data.evalsets["data/general.jsonl"].part.rows[0]


def test_overlap_with_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    general = rows(50, 9, start=50_000)
    general[4] = dict(train[7])
    write(tmp_path / "data/general.jsonl", general)
    result = run(tmp_path, monkeypatch, gate_on(), train=train)
    d = the(result, "FT205")
    assert "1 row(s) of `data/general.jsonl`" in d.message
    assert d.span.path == "spec.ftspec"
    assert result.sources["spec.ftspec"].text[d.span.start:d.span.end] == '"data/general.jsonl"'
    assert [(r.span.path, r.span.line) for r in d.related] == [("data/general.jsonl", 5)]


def test_too_few_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/general.jsonl", rows(12, 9, start=50_000))
    d = the(run(tmp_path, monkeypatch, gate_on()), "FT221")
    assert "12 usable row(s)" in d.message and d.severity.value == "warning"
    write(tmp_path / "data/general.jsonl", rows(30, 9, start=50_000))
    assert "FT221" not in codes(check_file(Path("spec.ftspec"), CheckOptions()))


def test_missing_file_is_file_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, gate_on())
    assert codes(result) == ["FT180"]


def test_gate_on_a_split_file_is_not_reported_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test = rows(60, 3, start=20_000)
    test[3]["label"] = "refunds"
    result = run(tmp_path, monkeypatch, gate_on("data/test.jsonl"), test=test)
    assert [(d.code, d.span.path, d.span.line) for d in result.diagnostics] == [("FT201", "data/test.jsonl", 4)]


def test_changed_general_set_is_not_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/general.jsonl", rows(50, 9, start=50_000))
    assert codes(run(tmp_path, monkeypatch, gate_on())) == []
    import ftc.compiler.data.analyze as analyze_mod

    calls: list[int] = []
    real = analyze_mod.analyze

    def counted(c):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(c)

    monkeypatch.setattr(analyze_mod, "analyze", counted)
    assert codes(check_file(Path("spec.ftspec"), CheckOptions())) == [] and calls == []  # a cache hit
    bad = rows(50, 9, start=50_000)
    bad[2]["label"] = "refunds"
    write(tmp_path / "data/general.jsonl", bad)
    assert codes(check_file(Path("spec.ftspec"), CheckOptions())) == ["FT201"] and calls == [1]


def test_no_data_reads_no_gate_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data/general.jsonl", [{"body": "x"}] * 3)
    run(tmp_path, monkeypatch, gate_on())
    import ftc.compiler.data.readers as readers

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a data file was read under --no-data")

    monkeypatch.setattr(readers, "read_table", boom)
    result = check_file(Path("spec.ftspec"), CheckOptions(no_data=True))
    assert codes(result) == [] and result.checked is not None and result.checked.data is None
