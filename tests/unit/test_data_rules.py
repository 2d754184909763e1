"""Data-aware rules on small data files written by the tests: each rule fires on data built to
break it, with counts and located examples, and stays quiet on clean data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.docs import compose_example

LABELS = ["billing", "bug", "account"]
WORDS = ("invoice refund charge card login password reset crash error page slow account email update "
         "profile address payment plan upgrade cancel renew export report button screen mobile app "
         "order delivery ticket urgent please help thanks since yesterday again still broken").split()


def ticket(rng: random.Random, i: int) -> str:
    return f"ticket {i}: " + " ".join(rng.choice(WORDS) for _ in range(12))


def rows(n: int, seed: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        row = {"text": ticket(rng, i), "label": LABELS[i % 3], "channel": "email" if i % 4 == 0 else "chat",
               "customer_id": f"c{i}", "created_at": f"2024-01-01T00:00:00Z"}
        row.update({k: (v(i) if callable(v) else v) for k, v in extra.items()})
        out.append(row)
    return out


def write(path: Path, data: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snippet: str = "", train: list[Any] | None = None,
        val: list[Any] | None = None, test: list[Any] | None = None):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data/train.jsonl", train if train is not None else rows(300, 1))
    write(tmp_path / "data/val.jsonl", val if val is not None else rows(60, 2, start=10_000))
    write(tmp_path / "data/test.jsonl", test if test is not None else rows(60, 3, start=20_000))
    base = 'data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl" }\n'
    (tmp_path / "spec.ftspec").write_text(compose_example(base + snippet), encoding="utf-8")
    return check_file(Path("spec.ftspec"), CheckOptions())


def codes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted({d.code for d in result.diagnostics if d.suppressed_reason is None})


def the(result, code: str):  # type: ignore[no-untyped-def]
    found = [d for d in result.diagnostics if d.code == code]
    assert found, [(d.code, d.message) for d in result.diagnostics]
    return found[0]


def test_clean_data_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch)
    assert codes(result) == []
    assert result.checked is not None
    assert result.checked.sizes == {"train": 300, "val": 60, "test": 60}
    assert all(len(h) == 64 for h in result.checked.data.hashes.values())


def test_too_little_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, train=rows(40, 1))
    d = the(result, "FT202")
    assert "40 training examples" in d.message and d.span is not None and d.span.path == "spec.ftspec"


def test_full_finetune_on_hundreds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = ("method full { }\ntrain { epochs 1; learning_rate 2e-5; early_stopping patience 1 on val.loss; "
               "checkpoints keep 1 }\neval { metric f1 macro; gate f1 >= 0.8 on test; "
               'gate regression <= 0.02 vs base on "data/test.jsonl" }')
    assert "FT203" in codes(run(tmp_path, monkeypatch, snippet))


def test_malformed_rows_are_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[4]["label"] = "bilingg"
    del train[9]["text"]
    result = run(tmp_path, monkeypatch, train=train)
    bad = [d for d in result.diagnostics if d.code == "FT201"]
    assert {(d.span.path, d.span.line) for d in bad} == {("data/train.jsonl", 5), ("data/train.jsonl", 10)}
    assert any("billing" in d.help for d in bad)


def test_exact_leakage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    test = rows(60, 3, start=20_000)
    for i in range(5):
        test[i * 7] = dict(train[i * 11], text=train[i * 11]["text"].upper() + "  !!")
    d = the(run(tmp_path, monkeypatch, train=train, test=test), "FT205")
    assert d.message.startswith("5 test row(s)")
    assert "data/test.jsonl:1 ~ data/train.jsonl:1" in d.detail
    assert [r.span.path for r in d.related] == ["data/test.jsonl"] * 3


def test_near_leakage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    test = rows(60, 3, start=20_000)
    words = train[20]["text"].split()
    words[-1] = "changed"
    test[3] = dict(train[20], text=" ".join(words))
    result = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                         'test "data/test.jsonl"; dedup near 0.7 }', train=train, test=test)
    d = the(result, "FT206")
    assert d.message.startswith("1 test row(s)") and "Jaccard" in d.detail
    assert "FT205" not in codes(result)


def test_group_leakage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test = rows(60, 3, start=20_000, customer_id=lambda i: "c7" if i % 20 == 0 else f"c{i}")
    result = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                         'test "data/test.jsonl"; group "customer_id" }', test=test)
    assert "1 `customer_id` group(s)" in the(result, "FT207").message


def test_time_leakage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1, created_at=lambda i: f"2024-03-{1 + i % 28:02d}T00:00:00Z")
    test = rows(60, 3, start=20_000, created_at=lambda i: "2024-02-01T00:00:00Z" if i % 10 == 0 else "2024-06-01T00:00:00Z")
    val = rows(60, 2, start=10_000, created_at="2024-05-01T00:00:00Z")
    result = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                         'test "data/test.jsonl"; time "created_at" }', train=train, val=val, test=test)
    [d] = [d for d in result.diagnostics if d.code == "FT208"]
    assert d.message.startswith("6 test row(s)") and d.span is not None and d.span.column == 63  # `test "..."`


def test_group_split_keeps_groups_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = rows(600, 5, customer_id=lambda i: f"c{i // 6}")
    write(tmp_path / "data/all.jsonl", data)
    spec = compose_example('data { source "data/all.jsonl"; split 80/10/10 by group "customer_id"; seed 3 }')
    (tmp_path / "spec.ftspec").write_text(spec)
    result = check_file(Path("spec.ftspec"), CheckOptions())
    assert codes(result) == []
    parts = result.checked.data.parts
    groups = [{r["customer_id"] for r in parts[n].rows} for n in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(len(parts[n]) for n in parts) == 600
    assert 400 < len(parts["train"]) < 560


def test_random_split_is_stable_under_row_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = rows(500, 6)
    spec = compose_example('data { source "data/all.jsonl"; split 80/10/10; seed 11 }')
    (tmp_path / "spec.ftspec").write_text(spec)
    write(tmp_path / "data/all.jsonl", data)
    first = check_file(Path("spec.ftspec"), CheckOptions(no_data=False)).checked.data
    write(tmp_path / "data/all.jsonl", list(reversed(data)))
    second = check_file(Path("spec.ftspec"), CheckOptions(no_data=False)).checked.data
    for name in ("train", "val", "test"):
        assert sorted(r["text"] for r in first.parts[name].rows) == sorted(r["text"] for r in second.parts[name].rows)


def test_time_split_puts_test_after_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = rows(300, 7, created_at=lambda i: f"2024-01-{1 + (i * 7) % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z")
    write(tmp_path / "data/all.jsonl", data)
    (tmp_path / "spec.ftspec").write_text(compose_example(
        'data { source "data/all.jsonl"; split 80/10/10 by time "created_at" }'))
    result = check_file(Path("spec.ftspec"), CheckOptions())
    assert "FT208" not in codes(result)
    parts = result.checked.data.parts
    assert max(r["created_at"] for r in parts["train"].rows) < min(r["created_at"] for r in parts["test"].rows)


def test_stratified_split_keeps_class_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = rows(900, 8, label=lambda i: "billing" if i % 10 < 8 else ("bug" if i % 10 == 8 else "account"))
    write(tmp_path / "data/all.jsonl", data)
    (tmp_path / "spec.ftspec").write_text(compose_example(
        'data { source "data/all.jsonl"; split 80/10/10; stratify "label" }'))
    parts = check_file(Path("spec.ftspec"), CheckOptions()).checked.data.parts
    assert sum(r["label"] == "bug" for r in parts["test"].rows) == 9
    assert len(parts["test"]) == 90


def test_duplicates_in_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[50] = dict(train[10])
    train[51] = dict(train[10])
    result = run(tmp_path, monkeypatch, train=train)
    assert the(result, "FT209").message.startswith("2 training row(s)")
    quiet = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                        'test "data/test.jsonl"; dedup exact }', train=train)
    assert "FT209" not in codes(quiet)


def test_class_imbalance_with_accuracy_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1, label=lambda i: "billing" if i % 10 else "bug")
    train[1]["label"] = "account"
    result = run(tmp_path, monkeypatch, "eval { metric accuracy; gate accuracy >= 0.8 on test }", train=train)
    assert "90%" in the(result, "FT210").message


def test_degenerate_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, train=rows(300, 1, label="bug"))
    assert "every training target is the same" in the(result, "FT211").message


def test_private_data_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[3]["text"] += " contact jane.roe@example.org or +1 415-555-0132"
    d = the(run(tmp_path, monkeypatch, train=train), "FT214")
    assert "1 email" in d.message and "1 phone" in d.message
    assert "jane.roe" not in d.detail and "j***@example.org" in d.detail


def test_over_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[0]["text"] = "word " * 400
    result = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                         'test "data/test.jsonl"; max_length 64 drop }', train=train)
    d = the(result, "FT215")
    assert "1 train row(s)" in d.message and "dropped" in d.message


def test_no_early_stopping_on_small_data_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, "train { epochs 3; learning_rate 2e-4; checkpoints keep 2 }")
    assert "FT217" in codes(result) and "FT142" not in codes(result)


def test_empty_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, 'data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl"\n'
                                         'slice fax where channel == "fax" }\n'
                                         "eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.fax }")
    assert "slice `fax` matches no test rows" in the(result, "FT218").message


def test_label_unseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, train=rows(300, 1, label=lambda i: LABELS[i % 2]))
    assert "account" in the(result, "FT219").message


def test_gate_resolution_uses_real_test_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, "eval { metric accuracy; gate accuracy >= 0.99 on test }")
    assert the(result, "FT170").message.startswith("60 test examples")


def test_preference_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def prefs(n: int, seed: int, same: set[int]) -> list[dict[str, str]]:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            chosen = ticket(rng, i) + " and a longer, more helpful answer"
            out.append({"prompt": f"question {seed}-{i} " + ticket(rng, i), "chosen": chosen,
                        "rejected": chosen if i in same else ticket(rng, i)})
        return out
    snippet = ('model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }\n'
               'signal dpo { prompt "prompt"; chosen "chosen"; rejected "rejected" }\n'
               "eval { metric loss; gate loss <= 2.0 on test }")
    result = run(tmp_path, monkeypatch, snippet, train=prefs(300, 1, {4, 8}), val=prefs(60, 2, set()),
                 test=prefs(60, 3, set()))
    assert "FT213" in codes(result)
    assert any(d.code in ("FT212", "FT201") and d.span.line == 5 for d in result.diagnostics)


def test_second_check_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[50] = dict(train[10])
    first = run(tmp_path, monkeypatch, train=train)
    import ftc.compiler.data.analyze as analyze_mod

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("data read again although nothing changed")

    monkeypatch.setattr(analyze_mod, "analyze", boom)
    again = check_file(Path("spec.ftspec"), CheckOptions())
    assert [(d.code, d.message) for d in again.diagnostics] == [(d.code, d.message) for d in first.diagnostics]
    assert again.checked.sizes == first.checked.sizes
    write(tmp_path / "data/train.jsonl", rows(300, 1))  # changed data: read again
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert "FT209" not in codes(check_file(Path("spec.ftspec"), CheckOptions()))


def test_empty_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data/all.jsonl", rows(300, 7, created_at="2024-01-01T00:00:00Z"))
    (tmp_path / "spec.ftspec").write_text(compose_example(
        'data { source "data/all.jsonl"; split 80/10/10 by time "created_at" }'))
    result = check_file(Path("spec.ftspec"), CheckOptions())
    assert {"the val split is empty", "the test split is empty"} <= {d.message for d in result.diagnostics}


def test_unreadable_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch)
    (tmp_path / "data/val.jsonl").write_bytes(b"\x00\x01\x02 binary \xff\xfe")
    again = check_file(Path("spec.ftspec"), CheckOptions())
    d = the(again, "FT200")
    assert d.span is not None and d.span.path == "data/val.jsonl" and "FT200" not in codes(result)


def test_exact_token_lengths_with_the_local_tokenizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    from tokenizers import Tokenizer

    from tests.conftest import ROOT

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "specs/ticket-triage/ticket-triage.ftspec"
    spec.write_text(spec.read_text().replace("max_length 128 truncate", "max_length 24 drop"))
    estimated = the(check_file(spec.relative_to(tmp_path), CheckOptions()), "FT215")
    exact = the(check_file(spec.relative_to(tmp_path), CheckOptions(tokenize=True)), "FT215")
    assert "estimated" in estimated.message and "counted with models/tiny-bert's tokenizer" in exact.message
    tok = Tokenizer.from_file(str(tmp_path / "specs/ticket-triage/models/tiny-bert/tokenizer.json"))
    rows = [json.loads(line) for line in (tmp_path / "specs/ticket-triage/data/train.jsonl").read_text().splitlines()]
    want = sum(len(tok.encode(" ".join(str(v) for v in r.values())).ids) > 24 for r in rows)
    assert [d for d in check_file(spec.relative_to(tmp_path), CheckOptions(tokenize=True)).diagnostics
            if d.code == "FT215" and f"{want} train row(s)" in d.message]


def test_vision_data_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for split, per_class in (("train", {"cat": 60, "dog": 3}), ("val", {"cat": 5, "dog": 5}),
                             ("test", {"cat": 5, "dog": 5})):
        for label, n in per_class.items():
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                size = (16, 16) if i % 2 else (20, 12)
                Image.new("RGB", size, (i * 3 % 255, 10 + len(split), 40 if label == "cat" else 200)).save(
                    folder / f"{split}-{label}-{i}.png")
    spec = compose_example(
        'model { modality vision; base "timm:resnet18"; revision "5f8b7d3"; task image_classification; '
        'labels ["cat", "dog"]; params 11M }\n'
        'signal sft { input "image"; target "label" }\n'
        "method lora { rank 8 }\n"
        'data { format image_folder; train "images/train"; val "images/val"; test "images/test" }\n'
        "eval { metric accuracy; gate accuracy >= 0.8 on test }")
    (tmp_path / "spec.ftspec").write_text(spec)
    result = check_file(Path("spec.ftspec"), CheckOptions())
    messages = [d.message for d in result.diagnostics if d.code == "FT216"]
    assert any("fewer than 5 training images: dog" in m for m in messages)
    assert any("2 sizes" in m for m in messages)


RLHF_RENAMED = ('model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; params 125M }\n'
                'signal rlhf { reward { prompt "question"; chosen "good"; rejected "bad" }; '
                'policy { prompt "question" } }\n'
                "eval { metric loss; gate loss <= 2.0 on test }")


def renamed_pairs(n: int, seed: int, same: frozenset[int] = frozenset()) -> list[dict[str, str]]:
    """RLHF rows under non-default names: `question` (both stages' prompt), `good` and `bad`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        good = f"steps {i}: " + " ".join(rng.choice(WORDS) for _ in range(6))
        out.append({"question": f"question {seed}-{i} " + ticket(rng, i), "good": good,
                    "bad": good if i in same else "no idea, " + " ".join(rng.choice(WORDS) for _ in range(6))})
    return out


def test_rlhf_reads_the_field_names_of_its_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9: rules read a `prompt` column for RLHF although the stages name `question`: every
    input was '' (FT211), every eval row an exact duplicate (FT205), every train row too (FT209)."""
    result = run(tmp_path, monkeypatch, RLHF_RENAMED, train=renamed_pairs(300, 1), val=renamed_pairs(60, 2),
                 test=renamed_pairs(60, 3))
    assert codes(result) == [], [(d.code, d.message) for d in result.diagnostics]


def test_rlhf_duplicates_under_renamed_fields_are_still_found(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = renamed_pairs(300, 1), renamed_pairs(60, 3)
    test[5] = dict(test[5], question=train[17]["question"].upper())  # the same prompt, other answers
    train[40] = dict(train[9])
    result = run(tmp_path, monkeypatch, RLHF_RENAMED, train=train, val=renamed_pairs(60, 2), test=test)
    leak = the(result, "FT205")
    assert leak.message.startswith("1 test row(s)") and "data/test.jsonl:6 ~ data/train.jsonl:18" in leak.detail
    assert the(result, "FT209").message.startswith("1 training row(s)")
    assert "FT211" not in codes(result)


def test_rlhf_pairs_in_the_spec_data_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reward stage without `data` trains on the spec's data: its pairs there are FT212's."""
    result = run(tmp_path, monkeypatch, RLHF_RENAMED, train=renamed_pairs(300, 1, frozenset({4, 8})),
                 val=renamed_pairs(60, 2), test=renamed_pairs(60, 3))
    d = the(result, "FT212")
    assert d.message.startswith("2 train pair(s) have identical `good` and `bad`") and d.span.line == 5


def test_rlhf_degenerate_prompts_name_the_policy_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = [dict(r, question="the same question") for r in renamed_pairs(300, 1)]
    d = the(run(tmp_path, monkeypatch, RLHF_RENAMED, train=train, val=renamed_pairs(60, 2),
                test=renamed_pairs(60, 3)), "FT211")
    assert "`question`" in d.message and "'the same question'" in d.message


def test_input_fields_of_rlhf_stages() -> None:
    from ftc.compiler import schema as s
    from ftc.compiler.data.fields import input_fields

    def spec(reward: s.RewardStage) -> s.Spec:
        return s.Spec(signal=s.RlhfSignal(reward=reward, policy=s.PolicyStage(prompt="ask")))

    shared = spec(s.RewardStage(prompt="question", chosen="good", rejected="bad"))
    assert input_fields(shared) == ("ask", "question")  # both stages read the spec's data
    own = spec(s.RewardStage(prompt="question", data=s.Data()))
    assert input_fields(own) == ("ask",) and input_fields(own, "reward") == ("question",)
