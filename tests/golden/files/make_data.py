"""Write the data of the data-rule golden cases (tests/golden/files/data_*/): run once, commit the output.

    .venv/bin/python tests/golden/files/make_data.py

Each case has its own folder, so that cases stay independent. The rows are deterministic (a
seeded random.Random), short, and as few as the rule allows: 100 training rows where fewer would
trip FT202 (too little data), 10 val and 15 test rows (enough for `gate f1 >= 0.8`, FT170). The
PNGs of data_vision/ are a few tiny images drawn with Pillow. `data/` (the older cases' data) is not
written here.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LABELS = ("billing", "bug", "account")
WORDS = ("invoice", "refund", "charge", "card", "login", "password", "reset", "crash", "error",
         "page", "slow", "account", "email", "update", "profile", "address", "payment", "plan",
         "upgrade", "cancel", "renew", "export", "report", "button", "screen", "mobile", "app",
         "order", "delivery", "ticket", "urgent", "please", "help", "thanks", "since", "yesterday",
         "again", "still", "broken")
TRAIN, VAL, TEST = 100, 10, 15


def text(rng: random.Random, i: int, words: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + f" #{i}"


Row = dict[str, Any]


def rows(n: int, seed: int, start: int = 0, **extra: Any) -> list[Row]:
    """n support tickets numbered from `start`: text, label (cycling), and any extra fields
    (a value, or a function of the ticket number)."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        row: Row = {"text": text(rng, i), "label": LABELS[i % 3]}
        row.update({k: (v(i) if callable(v) else v) for k, v in extra.items()})
        out.append(row)
    return out


def splits(**extra: Any) -> tuple[list[Row], list[Row], list[Row]]:
    return rows(TRAIN, 1, **extra), rows(VAL, 2, 1000, **extra), rows(TEST, 3, 2000, **extra)


def write_jsonl(path: Path, data: Iterable[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(json.dumps(r) + "\n" for r in data).encode("utf-8"))


def write_csv(path: Path, data: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(data[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(data)
    path.write_bytes(out.getvalue().encode("utf-8"))


def case(name: str, train: list[Row], val: list[Row], test: list[Row], writer: Callable[[Path, list[Row]], None],
         suffix: str) -> None:
    folder = HERE / f"data_{name}"
    for split, data in (("train", train), ("val", val), ("test", test)):
        writer(folder / f"{split}.{suffix}", data)


def csv_case(name: str, train: list[Row], val: list[Row], test: list[Row]) -> None:
    case(name, train, val, test, write_csv, "csv")


def jsonl_case(name: str, train: list[Row], val: list[Row], test: list[Row]) -> None:
    case(name, train, val, test, write_jsonl, "jsonl")


def unreadable() -> None:
    """FT200: val.jsonl is Latin-1, not UTF-8 (line 4)."""
    train, val, test = splits()
    jsonl_case("unreadable", train, val, test)
    lines = (HERE / "data_unreadable/val.jsonl").read_bytes().split(b"\n")
    lines[3] = json.dumps({"text": "caf\u00e9 order refund still broken #1003", "label": "billing"},
                          ensure_ascii=False).encode("latin-1")
    (HERE / "data_unreadable/val.jsonl").write_bytes(b"\n".join(lines))


def malformed_rows() -> None:
    """FT201: an undeclared label (line 5), a row without `text` (line 10), a line that is not JSON (line 17)."""
    train, val, test = splits()
    train[4]["label"] = "bilingg"
    del train[9]["text"]
    jsonl_case("malformed_rows", train, val, test)
    path = HERE / "data_malformed_rows/train.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(16, '{"text": "export report crash again #9999", "label": "bug"\n')
    path.write_text("".join(lines), encoding="utf-8")


def too_little_data() -> None:
    """FT202: 40 training rows."""
    _, val, test = splits()
    csv_case("too_little_data", rows(40, 1), val, test)


def full_finetune() -> None:
    """FT203: 100 training rows for a full fine-tune; general.csv is the regression set."""
    csv_case("full_finetune", *splits())
    write_csv(HERE / "data_full_finetune/general.csv", rows(40, 4, 3000))  # 30+ rows: FT221


def leakage_exact() -> None:
    """FT205: test rows 4 and 9 are train rows 11 and 31 (re-cased, re-spaced, with punctuation)."""
    train, val, test = splits()
    test[3] = dict(train[10], text="  " + train[10]["text"].upper() + " !!")
    test[8] = dict(train[30])
    csv_case("leakage_exact", train, val, test)


def leakage_near() -> None:
    """FT206: test row 6 is train row 21 with its last word changed (Jaccard 0.89 on word 3-shingles)."""
    train, val, test = splits()
    rng = random.Random(5)
    long = " ".join(rng.choice(WORDS) for _ in range(19))
    train[20]["text"] = long + " #20"
    test[5] = dict(test[5], text=long + " #2005")
    csv_case("leakage_near", train, val, test)


def leakage_group() -> None:
    """FT207: customers c7 and c42 have rows in train and in test (test rows 3 and 12)."""
    train, val, test = splits(customer_id=lambda i: f"c{i}")
    test[2]["customer_id"] = "c7"
    test[11]["customer_id"] = "c42"
    csv_case("leakage_group", train, val, test)


def leakage_time() -> None:
    """FT208: training runs through March 2024; two test rows (2 and 7) are from February and March."""
    train = rows(TRAIN, 1, created_at=lambda i: f"2024-03-{1 + i % 28:02d}T09:00:00Z")
    val = rows(VAL, 2, 1000, created_at=lambda i: f"2024-04-{1 + i % 28:02d}T09:00:00Z")
    test = rows(TEST, 3, 2000, created_at=lambda i: f"2024-05-{1 + i % 28:02d}T09:00:00Z")
    test[1]["created_at"] = "2024-02-14T09:00:00Z"
    test[6]["created_at"] = "2024-03-28T09:00:00Z"
    csv_case("leakage_time", train, val, test)


def duplicates() -> None:
    """FT209: train rows 51 and 52 repeat row 11."""
    train, val, test = splits()
    train[50] = dict(train[10])
    train[51] = dict(train[10])
    csv_case("duplicates", train, val, test)


def class_imbalance() -> None:
    """FT210: 90% of training rows are `billing`."""
    train, val, test = splits()
    for i, row in enumerate(train):
        row["label"] = "billing" if i % 10 else LABELS[1 + i // 10 % 2]
    csv_case("class_imbalance", train, val, test)


def degenerate() -> None:
    """FT211: every training answer is the same canned reply."""
    def qa(n: int, seed: int, start: int, answer: Callable[[int], str]) -> list[Row]:
        return [{"prompt": r["text"], "answer": answer(i)} for i, r in enumerate(rows(n, seed, start))]
    train = qa(TRAIN, 1, 0, lambda i: "Thanks, we will get back to you.")
    val = qa(VAL, 2, 1000, lambda i: f"Reply {i}: please check your {WORDS[i % len(WORDS)]} settings.")
    test = qa(TEST, 3, 2000, lambda i: f"Reply {i}: please check your {WORDS[i % len(WORDS)]} settings.")
    csv_case("degenerate", train, val, test)


def prefs(n: int, seed: int, start: int, longer: bool = False) -> list[Row]:
    """Preference pairs; chosen and rejected have random lengths unless `longer` (chosen always longer)."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        a, b = text(rng, i, rng.randint(2, 5)), text(rng, i, rng.randint(2, 5))
        if longer:
            a += " and how to fix it"
        out.append({"prompt": "why " + text(rng, i, 2), "chosen": a, "rejected": b})
    return out


def preference_identical() -> None:
    """FT212: pairs 5 and 9 have the same chosen and rejected answer."""
    train = prefs(TRAIN, 1, 0)
    for i in (4, 8):
        train[i]["rejected"] = train[i]["chosen"]
    csv_case("preference_identical", train, prefs(VAL, 2, 1000), prefs(TEST, 3, 2000))


def preference_length() -> None:
    """FT213: every chosen answer is longer than its rejected one."""
    csv_case("preference_length", prefs(TRAIN, 1, 0, longer=True), prefs(VAL, 2, 1000), prefs(TEST, 3, 2000))


def private_data() -> None:
    """FT214: an e-mail address and a phone number (row 4), an IP address (row 60)."""
    train, val, test = splits()
    train[3]["text"] += " contact jane.roe@example.org or +1 415-555-0132"
    train[59]["text"] += " from 203.0.113.42"
    csv_case("private_data", train, val, test)


def over_length() -> None:
    """FT215: train row 8 is a 300-character ticket, over `max_length 64` (~4 characters a token)."""
    train, val, test = splits()
    rng = random.Random(6)
    train[7]["text"] = " ".join(rng.choice(WORDS) for _ in range(50))[:300] + " #7"
    csv_case("over_length", train, val, test)


def vision() -> None:
    """FT216: an image table; `dog` has 3 training rows, and training images have two sizes."""
    from PIL import Image

    folder = HERE / "data_vision"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    drawn = {"cat_a": ((8, 8), (200, 120, 40)), "cat_b": ((12, 8), (190, 110, 60)), "dog_a": ((8, 8), (60, 60, 200)),
             "cat_val": ((8, 8), (210, 130, 30)), "dog_val": ((8, 8), (50, 70, 210)),
             "cat_test": ((8, 8), (220, 140, 20)), "dog_test": ((8, 8), (40, 80, 220))}
    for name, (size, colour) in drawn.items():
        Image.new("RGB", size, colour).save(images / f"{name}.png", optimize=True)
    train = [{"image": f"images/cat_{'ab'[i % 2]}.png", "label": "cat"} for i in range(97)]
    for i in (20, 50, 80):
        train.insert(i, {"image": "images/dog_a.png", "label": "dog"})

    def held_out(n: int, split: str) -> list[Row]:
        return [{"image": f"images/{'cat' if i % 2 else 'dog'}_{split}.png", "label": "cat" if i % 2 else "dog"}
                for i in range(n)]
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "val.jsonl", held_out(VAL, "val"))
    write_jsonl(folder / "test.jsonl", held_out(TEST, "test"))


def no_early_stopping() -> None:
    """FT217: clean data; the spec trains without early stopping."""
    csv_case("no_early_stopping", *splits())


def slice_empty() -> None:
    """FT218: the `channel` column holds email and chat, never fax."""
    csv_case("slice_empty", *splits(channel=lambda i: "email" if i % 4 == 0 else "chat"))


def label_unseen() -> None:
    """FT219: training rows are billing or bug, never account."""
    train, val, test = splits()
    for i, row in enumerate(train):
        row["label"] = LABELS[i % 2]
    csv_case("label_unseen", train, val, test)


def empty_split() -> None:
    """FT220: one source whose rows all have the same timestamp, split by time."""
    write_csv(HERE / "data_empty_split/all.csv", rows(TRAIN + VAL + TEST, 7, created_at="2024-01-01T00:00:00Z"))


def main() -> None:
    for make in (unreadable, malformed_rows, too_little_data, full_finetune, leakage_exact, leakage_near,
                 leakage_group, leakage_time, duplicates, class_imbalance, degenerate, preference_identical,
                 preference_length, private_data, over_length, vision, no_early_stopping, slice_empty,
                 label_unseen, empty_split):
        make()


if __name__ == "__main__":
    main()
