"""The conformance corpus (issue 9): specs generated from the compiler itself, each of which
`ftc check` must either refuse with a code or `ftc run --max-steps 1` must complete.

Three parts, all deterministic:

  combinations  every modality × task × signal × method that `ftc check --no-data` does not refuse
                by a compatibility rule (the rules of compiler/rules/compat.py), found by checking a
                minimal spec per combination with the method and signal blocks of test_matrix.py;
                each is then written in full against the shipped examples' tiny local models
                (specs/*/models/) with data written here: MIN_ROWS training rows, MIN_ROWS_FULL
                for a full fine-tune (the thresholds of FT202/FT203), small val/test splits, a
                loss or accuracy gate. A combination the compiler newly allows and FAMILIES does
                not know fails `test_every_allowed_combination_has_a_family`.
  examples      each shipped example (specs/*/*.ftspec), as it is.
  mutations     seeded edits of the examples (tests/runtime/mutate.py): 1-3 keys set to another
                legal value, optional settings added or removed, the method switched.

`combinations()`, `examples()` and `mutations()` read only the repository (collection time);
`build(root)` copies specs/ into root and writes the combination specs and their data;
`write_mutation(root, m)` writes a mutated spec beside its example (extends and relative paths
resolve as the example's).
"""

from __future__ import annotations

import functools
import io
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler import schema
from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.rules.data import MIN_ROWS, MIN_ROWS_FULL

from tests.conftest import ROOT
from tests.runtime import _pref_fixtures as F
from tests.runtime import conftest as C
from tests.runtime import test_matrix as M

EVAL_ROWS = 20  # per val/test split: enough for a gate to be computed, few enough to be quick

# The signal block of a minimal spec: test_matrix's text blocks, the image fields elsewhere.
SIGNAL_BLOCKS = {**M.MINIMAL_SIGNAL,
                 "vision.sft": 'sft { input "image"; target "label" }',
                 "multimodal.contrastive": 'contrastive { image "image"; caption "caption" }'}


@dataclass(frozen=True)
class Combination:
    modality: str
    task: str
    signal: str
    method: str

    @property
    def id(self) -> str:
        return f"{self.modality}-{self.task}-{self.signal}-{self.method}"

    @property
    def family(self) -> str | None:
        """The data, base and signal this combination trains with (FAMILIES), if there is one."""
        return FAMILY_OF.get((self.modality, self.task, self.signal))


def signal_block(modality: str, signal: str) -> str:
    return SIGNAL_BLOCKS.get(f"{modality}.{signal}", M.MINIMAL_SIGNAL[signal])


def minimal_spec(c: Combination) -> str:
    """A spec with nothing but the combination (what the compatibility rules judge)."""
    extra = ' labels ["a", "b"];' if "classification" in c.task else ""
    extra += ' output_schema "schema.json";' if c.task == "extraction" else ""
    return f"""spec "matrix" {{
  intent {{ goal behavior; stability stable; owner "tests" }}
  model {{ modality {c.modality}; base "model"; task {c.task};{extra} params 1M }}
  method {M.MINIMAL_METHOD[c.method]}
  signal {signal_block(c.modality, c.signal)}
  data {{ train "train.jsonl"; val "val.jsonl"; test "test.jsonl" }}
  train {{ epochs 1; early_stopping patience 2 on val.loss; checkpoints keep 1 }}
  eval {{ metric loss; gate loss <= 5.0 on test }}
}}
"""


@functools.cache
def combinations() -> tuple[Combination, ...]:
    """Every modality × task × signal × method that no compatibility rule refuses (`--no-data`)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in (Combination(m, t, s, k) for m in schema.MODALITIES for t in schema.TASKS
                  for s in schema.SIGNALS for k in schema.METHODS):
            path = Path(tmp) / f"{c.id}.ftspec"
            path.write_text(minimal_spec(c), encoding="utf-8")
            result = check_file(path, CheckOptions(no_data=True))
            if not any(d.code in M.COMPAT_CODES for d in result.diagnostics if d.severity.value == "error"):
                out.append(c)
    return tuple(out)


def examples() -> tuple[str, ...]:
    """The shipped examples, as paths relative to the repository (and to a corpus root)."""
    return tuple(sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("specs/*/*.ftspec")
                        if p.name != "team-defaults.ftspec"))


# ---------------------------------------------------------------------------------------------
# Families: the base, data, signal and gate of a combination (the method is the combination's)


@dataclass(frozen=True)
class Family:
    base: str  # a shipped tiny model, relative to the corpus root
    write: Callable[[Path, int], None]  # (folder, training rows) -> data files in folder
    data: str  # the data block's statements; `{d}` stands for the data folder (in signal, model_extra too)
    signal: str
    metric: str
    gate: str
    model_extra: str = ""


def _split_rows(folder: Path, rows: list[dict[str, Any]], prefix: str = "") -> None:
    """rows -> {prefix}train/val/test.jsonl: the last 2 × EVAL_ROWS rows are val and test."""
    n = len(rows) - 2 * EVAL_ROWS
    parts = {"train": rows[:n], "val": rows[n:n + EVAL_ROWS], "test": rows[n + EVAL_ROWS:]}
    for name, part in parts.items():
        F.write_jsonl(folder / f"{prefix}{name}.jsonl", part)


def _tickets(folder: Path, n: int) -> None:
    for name, (size, seed) in {"train": (n, 1), "val": (EVAL_ROWS, 2), "test": (EVAL_ROWS, 3)}.items():
        C.write_jsonl(folder / f"{name}.jsonl", C.ticket_rows(size, seed))


def _answers(folder: Path, n: int) -> None:
    for name, (size, seed) in {"train": (n, 1), "val": (EVAL_ROWS, 2), "test": (EVAL_ROWS, 3)}.items():
        C.write_jsonl(folder / f"{name}.jsonl", C.gen_rows(size, seed))
    (folder / "schema.json").write_text(json.dumps(C.SCHEMA), encoding="utf-8")


def _pairs(folder: Path, n: int) -> None:
    _split_rows(folder, F.preference_rows(n + 2 * EVAL_ROWS))


def _rlhf(folder: Path, n: int) -> None:
    _split_rows(folder, F.preference_rows(n + 2 * EVAL_ROWS), "pairs_")
    _split_rows(folder, F.prompt_rows(n + 2 * EVAL_ROWS))


def _retrieval(folder: Path, n: int) -> None:
    _split_rows(folder, F.contrastive_rows(n + 2 * EVAL_ROWS))


IMAGE_LABELS = ("clean", "scratch", "spot")
COLOURS = {"red": (210, 40, 40), "green": (40, 160, 70), "blue": (40, 80, 200)}
SHAPES = ("circle", "square")


def _png(rng: random.Random, colour: tuple[int, int, int] | None, shape: str) -> bytes:
    """A 32x32 noisy grey surface (every image distinct) with a coloured mark, as PNG bytes."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32))
    img.putdata([(rng.randint(150, 210),) * 3 for _ in range(32 * 32)])
    x, y = rng.randint(8, 23), rng.randint(8, 23)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour or (40, 40, 40))
    elif shape == "square":
        draw.rectangle([x - 5, y - 5, x + 5, y + 5], fill=colour or (40, 40, 40))
    elif shape == "line":
        draw.line([(x - 7, y - 3), (x + 7, y + 3)], fill=colour or (40, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _images(folder: Path, n: int) -> None:
    """An image folder: split/<label>/*.png, n training images (the labels take turns)."""
    rng = random.Random(0)
    marks = {"clean": "none", "scratch": "line", "spot": "circle"}
    for split, size in {"train": n, "val": EVAL_ROWS, "test": EVAL_ROWS}.items():
        for i in range(size):
            label = IMAGE_LABELS[i % len(IMAGE_LABELS)]
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            (folder / split / label / f"{split}_{i:04d}.png").write_bytes(_png(rng, None, marks[label]))


def _captions(folder: Path, n: int) -> None:
    """Image/caption pairs: images/*.png and train/val/test.jsonl naming them."""
    rng = random.Random(1)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n + 2 * EVAL_ROWS):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        (folder / "images" / f"icon_{i:04d}.png").write_bytes(_png(rng, COLOURS[colour], shape))
        rows.append({"image": f"icon_{i:04d}.png", "caption": f"a {colour} {shape} number {i}"})
    _split_rows(folder, rows)


PRE_SPLIT = 'train "{d}/train.jsonl"; val "{d}/val.jsonl"; test "{d}/test.jsonl"'
GPT2 = "specs/reply-tone/models/tiny-gpt2"
BERT = "specs/ticket-triage/models/tiny-bert"
RLHF_SIGNAL = ('rlhf { reward { data { train "{d}/pairs_train.jsonl"; val "{d}/pairs_val.jsonl"; '
               'test "{d}/pairs_test.jsonl" } }; policy { algorithm rloo; generations 2; train { batch_size 2 } } }')
LOSS = ("loss", "loss <= 100 on test")

FAMILIES: dict[str, Family] = {
    "tickets": Family(BERT, _tickets, PRE_SPLIT, 'sft { input "text"; target "label" }', "accuracy",
                      "accuracy >= 0.0 on test",
                      f"labels [{', '.join(json.dumps(x) for x in C.LABELS)}]"),
    "answers": Family(GPT2, _answers, PRE_SPLIT + "; max_length 64 truncate",
                      'sft { input "prompt"; target "answer" }', *LOSS),
    "extraction": Family(GPT2, _answers, PRE_SPLIT + "; max_length 64 truncate",
                         'sft { input "prompt"; target "answer" }', *LOSS, 'output_schema "{d}/schema.json"'),
    "pairs": Family(GPT2, _pairs, PRE_SPLIT + "; max_length 64 truncate", "dpo { beta 0.1 }", *LOSS),
    "rlhf": Family(GPT2, _rlhf, PRE_SPLIT + "; max_length 48 truncate", RLHF_SIGNAL, *LOSS),
    "retrieval": Family(BERT, _retrieval, PRE_SPLIT + "; max_length 32 truncate",
                        'contrastive { anchor "query"; positive "positive" }', *LOSS),
    "images": Family("specs/defect-inspection/models/tiny-convnext", _images,
                     'format image_folder; train "{d}/train"; val "{d}/val"; test "{d}/test"',
                     'sft { input "image"; target "label" }', "accuracy", "accuracy >= 0.0 on test",
                     f"labels [{', '.join(json.dumps(x) for x in IMAGE_LABELS)}]"),
    "captions": Family("specs/icon-search/models/tiny-clip", _captions,
                       'format image_table; ' + PRE_SPLIT + '; image_root "{d}/images"',
                       'contrastive { image "image"; caption "caption" }', *LOSS),
}
FAMILY_OF = {
    ("text", "classification", "sft"): "tickets",
    ("text", "generation", "sft"): "answers",
    ("text", "extraction", "sft"): "extraction",
    ("text", "generation", "dpo"): "pairs",
    ("text", "preference", "dpo"): "pairs",
    ("text", "generation", "rlhf"): "rlhf",
    ("text", "preference", "rlhf"): "rlhf",
    ("text", "embedding", "contrastive"): "retrieval",
    ("vision", "image_classification", "sft"): "images",
    ("multimodal", "image_text_contrastive", "contrastive"): "captions",
}

TRAIN = ("epochs 1; batch_size 4; learning_rate 1e-3; precision fp32; seed 0; "
         "early_stopping patience 1 on val.loss; checkpoints keep 1")


def train_rows(c: Combination) -> int:
    return MIN_ROWS_FULL if c.method == "full" else MIN_ROWS


def data_folder(c: Combination) -> str:
    """Where a combination's data lies, relative to the corpus root (shared by its family and size)."""
    data_of = {"extraction": "answers"}  # extraction reads the answers' files and their schema
    assert c.family is not None
    return f"data/{data_of.get(c.family, c.family)}-{train_rows(c)}"


def combination_spec(c: Combination) -> str:
    """The combination in full, as a spec under root/combinations/ (paths relative to it)."""
    assert c.family is not None, f"no data family for {c}"
    fam, d = FAMILIES[c.family], f"../{data_folder(c)}"
    return f"""spec "{c.id}" {{
  intent {{ goal behavior; stability stable; owner "conformance" }}
  model {{ modality {c.modality}; base "../{fam.base}"; task {c.task}; {fam.model_extra.replace("{d}", d)} }}
  method {M.MINIMAL_METHOD[c.method]}
  signal {fam.signal.replace("{d}", d)}
  data {{ {fam.data.replace("{d}", d)} }}
  train {{ {TRAIN} }}
  eval {{ metric {fam.metric}; gate {fam.gate} }}
}}
"""


def combination_path(c: Combination) -> str:
    return f"combinations/{c.id}.ftspec"


def build(root: Path) -> None:
    """specs/ copied into root; every combination's spec and data written under it."""
    shutil.copytree(ROOT / "specs", root / "specs", ignore=shutil.ignore_patterns(".ftc", "__pycache__"))
    (root / "combinations").mkdir()
    for c in combinations():
        folder = root / data_folder(c)
        if not folder.exists():
            folder.mkdir(parents=True)
            FAMILIES[c.family or ""].write(folder, train_rows(c))
        (root / combination_path(c)).write_text(combination_spec(c), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Counts of a corpus run (FTC_CONFORMANCE_LOG, written by test_conformance.py)


def summarize(lines: list[dict[str, Any]]) -> str:
    """Specs, refused by check (by code), completed, failed (each with what it is and its error)."""
    from collections import Counter

    latest = {e["id"]: e for e in lines}  # a rerun replaces an earlier line
    verdicts = Counter(e["verdict"] for e in latest.values())
    codes = Counter(c for e in latest.values() if e["verdict"] == "refused" for c in e["codes"])
    kinds = Counter(e["id"].split("-")[0] if e["id"].startswith("example") else
                    "mutation" if e["id"][:1] == "m" and e["id"][1:4].isdigit() else "combination"
                    for e in latest.values())
    out = [f"specs: {len(latest)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
           f"refused by ftc check: {verdicts['refused']} (specs per error code: "
           + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) + ")",
           f"completed ftc run --max-steps 1: {verdicts['completed']}", f"failed: {verdicts['failed']}"]
    for e in sorted((e for e in latest.values() if e["verdict"] == "failed"), key=lambda e: e["id"]):
        out.append(f"  {e['what']}\n    {e['message']}")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    log = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
    print(summarize([json.loads(line) for line in log if line.strip()]))
