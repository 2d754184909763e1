"""How much does `ftc run` cost over a hand-written transformers + peft script doing the same training?

    .venv/bin/python bench/run_overhead.py                  # 3 interleaved repetitions, 1 torch thread
    .venv/bin/python bench/run_overhead.py --threads 2      # torch.set_num_threads(2) in both
    .venv/bin/python bench/run_overhead.py --profile        # also cProfile one more ftc run
    .venv/bin/python bench/run_overhead.py --max-steps 40   # a quick smoke run (both capped alike)

The run: the bundled ticket-triage example (a tiny local BERT, LoRA r=8 on query/value, 168/40/40
rows, 40 epochs with early stopping on val.loss), on the CPU in fp32, in a temporary copy of specs/.

(a) ftc: `ftc run SPEC` in-process (`ftc.compiler.cli.main(["run", SPEC])`, exactly what the
    command does: it checks the spec, then `ftc.runtime.run.run` checks it again with its data,
    plans, evaluates the base, trains, measures latency, evaluates the tuned model, judges the gates
    and records the run), with FTC_HOME and FTC_CACHE_DIR in a fresh folder per repetition (a first
    run: no cached data check, no cached base evaluation, no cached tokens: ftc tokenises and
    stores the tokens, which the ratio counts).
(b) the script: `hand_written()` below, plain transformers + peft, configured the way ftc's backend
    configures the Trainer for this spec (runtime/backends/hf.py, text.py, loading.py): it loads
    the base and tokenizer from the local folder, attaches LoRA, tokenises at max_length 128,
    trains with the same TrainingArguments and early stopping, saves the adapter, and evaluates on
    test (accuracy, F1 macro).

Each runs in its own subprocess (`--worker ftc|script`), which first runs the same `prelude()`:
`torch.set_num_threads(--threads)` (default 1: this tiny model gains nothing from more, and one
thread keeps timings steadier on a shared machine), imports of the same libraries (torch,
transformers' Trainer and BERT classes, peft, datasets), and one throwaway load of the base with
LoRA (the first load in a process costs ~0.1 s of one-time set-up, which ftc would otherwise pay in
its base evaluation and the script inside its window). Only then does the clock start. ftc's clock
is the CLI call; the script times itself from its first line of work to its last. ftc's own modules
are imported inside the timed call, as a user's `ftc run` would. Repetitions are interleaved (ftc
first, then the script first, ...) and medians are reported.

Same work: ftc also checks the data (twice through the CLI), plans, evaluates the base model,
measures latency (5 + 50 requests), judges gates and writes the registry; the script does none of
that. The target ratio therefore compares the script with ftc's `train` + `eval.tuned.test` nodes
(load, attach, tokenise, train, save the adapter; reload it and evaluate on test), timed by wrapping
the executor's node calls; "ftc total" is reported beside it.

Where the time goes: both workers wrap the same Trainer methods (train, evaluate,
_save_checkpoint) with a wall + CPU clock pair; the ftc worker also wraps the CLI's check,
check_file, build_plan, lineage, the registry, each executor node, the token cache, ftc's atomic
checkpoint save, the training thread's waits for a checkpoint being finished, and the finishing
itself (marker, fsync, move, retention), which runs on a background thread overlapped with
training. The output has a tree of ftc's time, a side-by-side of what happens inside
trainer.train(), and the script's phases; the process CPU time of the same work is printed beside
the wall time (less sensitive to other load). `--profile` (or a missed ratio) adds a cProfile of
one more ftc run.

Same loss: ftc's per-step losses (run_dir/events.jsonl "step" events) against the script's
Trainer log history, step by step, at the same seed; the max absolute difference is reported.

Targets: ftc (same work) <= 1.05x the script's wall time; the same loss sequence (max |diff| 0).
Prints a table with PASS/MISS and exits 1 when a target is missed. Not a test: timings depend on
the machine and its load (printed). Run it with the virtualenv's python.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "ticket-triage"
RATIO = 1.05
LOSS_TOLERANCE = 0.0

# Users' interpreters cache bytecode; see check_speed.py. Both workers run offline alike (ftc's
# backends set these too, with setdefault).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"})


# ---------------------------------------------------------------------------------------------
# Both workers: the same imports and thread count before the clock starts


def prelude(threads: int, base: Path) -> None:
    """Imports, the thread count, and one throwaway load of the base + LoRA: the first
    `from_pretrained` in a process costs ~0.1 s more (lazy imports, one-time set-up), which ftc pays
    in its base evaluation, before the nodes that the ratio times, and the script in its window."""
    import torch

    torch.set_num_threads(threads)
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers.models.bert.modeling_bert  # resolved lazily by the Auto classes otherwise
    import transformers.models.bert.tokenization_bert  # noqa: F401
    from peft import LoraConfig, PeftModel, get_peft_model  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=4)
    get_peft_model(model, LoraConfig(r=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    tok("warm up", truncation=True, max_length=128)


# ---------------------------------------------------------------------------------------------
# Instruments: wrappers that add up the wall and CPU time of a call (a clock pair each)


class Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # process CPU time (torch runs on --threads threads)
        self.each: dict[str, list[float]] = {}  # per call, in order

    def wrap(self, owner: Any, attr: str, label: str | None = None, *, per_node: bool = False) -> None:
        original = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            key = label or attr
            if per_node:  # LocalExecutor.run(self, node, state)
                key = f"node {a[1].id}"
            t, c = time.perf_counter(), time.process_time()
            try:
                return original(*a, **kw)
            finally:
                took = time.perf_counter() - t
                self.seconds[key] = self.seconds.get(key, 0.0) + took
                self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c
                self.each.setdefault(key, []).append(took)

        setattr(owner, attr, timed)


def trainer_clock(clock: Clock) -> None:
    """The same wrappers on transformers' Trainer in both workers: training, per-epoch evaluation,
    checkpoint saves (ftc's atomic saves call this one inside theirs)."""
    from transformers import Trainer

    clock.wrap(Trainer, "train", "trainer.train")
    clock.wrap(Trainer, "evaluate", "trainer.evaluate")
    clock.wrap(Trainer, "_save_checkpoint", "transformers _save_checkpoint")


# ---------------------------------------------------------------------------------------------
# (b) The hand-written script


def hand_written(example: Path, out: Path, max_steps: int | None = None) -> dict[str, Any]:
    """What someone would write by hand for this spec with transformers + peft, every setting
    spelled out (values from specs/team-defaults.ftspec and specs/ticket-triage/ticket-triage.ftspec,
    the Trainer options as ftc's backend sets them). Returns timings, log history and test metrics."""
    import json
    import math
    import time

    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    start, cpu_start = time.perf_counter(), time.process_time()
    stamps: dict[str, float] = {}
    base = str((example / "models" / "tiny-bert").resolve())
    labels = ["billing", "bug", "account", "shipping"]
    label2id = {name: i for i, name in enumerate(labels)}

    set_seed(42)  # before the model: LoRA's initialisation draws from it
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=4, id2label=dict(enumerate(labels)), label2id=label2id, ignore_mismatched_sizes=True)
    # task_type SEQ_CLS: peft adds the classifier head to modules_to_save (trained, saved)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"], bias="none", task_type="SEQ_CLS"))
    stamps["load"] = time.perf_counter()

    def dataset(name: str) -> Dataset:
        rows = [json.loads(line) for line in (example / "data" / f"{name}.jsonl").read_text("utf-8").splitlines()
                if line.strip()]
        rows = [r for r in rows if r.get("text") is not None and str(r.get("label")) in label2id]
        enc = tok([str(r["text"]) for r in rows], truncation=True, max_length=128)
        return Dataset.from_dict({**{k: list(v) for k, v in enc.items()},
                                  "labels": [label2id[str(r["label"])] for r in rows]})

    train, val, test = dataset("train"), dataset("val"), dataset("test")
    stamps["data"] = time.perf_counter()

    def compute_metrics(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        y, p = np.asarray(pred.label_ids), np.asarray(logits).argmax(axis=-1)
        f1s = []
        for c in np.union1d(y, p):
            tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
            prec, rec = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
            f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        return {"accuracy": float(np.mean(y == p)), "f1": float(np.mean(f1s))}

    capped = max_steps is not None
    steps = max_steps if max_steps is not None else math.ceil(len(train) / 16) * 40  # 40 epochs of 16
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=steps if capped else -1,
        num_train_epochs=40.0,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(steps * 0.05) if capped else 0.05,  # a float < 1: a fraction of the run
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        bf16=False,
        fp16=False,  # fp32 on the CPU
        seed=42,
        data_seed=42,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=max(1, round(steps / 100)),
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        restore_callback_states_from_checkpoint=True,
        save_strategy="epoch",
        eval_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=False,
        activation_checkpointing=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=6, early_stopping_threshold=0.0)])
    trainer.remove_callback(PrinterCallback)
    stamps["trainer"] = time.perf_counter()
    trainer.train()
    stamps["train"] = time.perf_counter()
    model.save_pretrained(str(out / "adapter"))  # the best epoch's weights (load_best_model_at_end)
    tok.save_pretrained(str(out / "adapter"))
    stamps["save"] = time.perf_counter()
    test_metrics = trainer.predict(test).metrics or {}
    stamps["eval"] = time.perf_counter()
    cpu = time.process_time() - cpu_start

    phases, last = {}, start
    for name, at in stamps.items():
        phases[name] = at - last
        last = at
    return {"seconds": last - start, "cpu_seconds": cpu, "phases": phases, "log_history": trainer.state.log_history,
            "global_step": trainer.state.global_step, "best_checkpoint": trainer.state.best_model_checkpoint,
            "test": {"accuracy": test_metrics["test_accuracy"], "f1.macro": test_metrics["test_f1"]}}


def script_worker(args: argparse.Namespace) -> dict[str, Any]:
    prelude(args.threads, Path(args.example) / "models" / "tiny-bert")
    clock = Clock()
    trainer_clock(clock)
    result = hand_written(Path(args.example), Path(args.out), args.max_steps)
    result["parts"], result["cpu"], result["each"] = clock.seconds, clock.cpu, clock.each
    history = result.pop("log_history")
    result["losses"] = [[h["step"], h["loss"]] for h in history if "loss" in h]
    result["val_losses"] = [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h]
    return result


# ---------------------------------------------------------------------------------------------
# (a) ftc, instrumented


def ftc_worker(args: argparse.Namespace) -> dict[str, Any]:
    prelude(args.threads, Path(args.spec).parent / "models" / "tiny-bert")
    from ftc.compiler import check, cli, plan
    from ftc.runtime import checkpoints, executor, registry
    from ftc.runtime import run as run_mod
    from ftc.runtime.backends import tokcache

    clock = Clock()
    clock.wrap(cli, "_checked_or_exit", "cli: check before run")
    clock.wrap(run_mod, "run", "run()")
    clock.wrap(check, "check_file", "check_file (spec + data)")
    clock.wrap(check, "with_rows", "with_rows (read rows)")
    clock.wrap(plan, "build_plan", "build_plan")
    clock.wrap(run_mod, "lineage", "lineage (versions, git)")
    for name in ("__init__", "start", "finish"):
        clock.wrap(registry.Registry, name, "registry")
    clock.wrap(executor, "execute", "execute (all nodes)")
    clock.wrap(executor.LocalExecutor, "run", per_node=True)
    trainer_clock(clock)
    clock.wrap(checkpoints.AtomicCheckpoints, "_save_checkpoint", "ftc atomic _save_checkpoint")
    clock.wrap(checkpoints.AtomicCheckpoints, "ftc_wait", "wait for a finish")
    clock.wrap(checkpoints, "finish", "finish (background)")  # on its thread: its CPU clock is the process's
    clock.wrap(checkpoints, "_fsync_tree", "fsync")
    clock.wrap(executor, "sha256_tree", "sha256 of the artifact")
    for name in ("tokenizer_fingerprint", "content_digest", "key", "load", "store"):
        clock.wrap(tokcache, name, "token cache")

    argv = ["run", args.spec] + (["--max-steps", str(args.max_steps)] if args.max_steps else [])
    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    code = 0
    try:
        cli.main(argv)
    except SystemExit as done:
        code = int(done.code or 0)
    total = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile_out)
    if code not in (0, 4):  # 4: the run completed and a gate failed; still a finished run
        raise RuntimeError(f"ftc run exited {code}")
    runs = sorted((Path(os.environ["FTC_HOME"]) / "runs").iterdir())
    events = [json.loads(line) for line in (runs[-1] / "events.jsonl").read_text("utf-8").splitlines()]
    tuned = next(e for e in events if e.get("event") == "eval" and e.get("id") == "eval.tuned.test")
    end = next(e for e in events if e.get("event") == "end")
    return {"seconds": total, "exit_code": code, "parts": clock.seconds, "cpu": clock.cpu, "each": clock.each,
            "losses": [[e["step"], e["loss"]] for e in events if e.get("event") == "step"],
            "val_losses": [[e["step"], e["loss"]] for e in events
                           if e.get("event") == "eval" and e.get("split") == "val"],
            "global_step": end["step"], "best_checkpoint": end.get("best_checkpoint"),
            "notes": [e["message"] for e in events if e.get("event") == "note"],
            "test": {"accuracy": tuned["accuracy"], "f1.macro": tuned["f1.macro"]}}


# ---------------------------------------------------------------------------------------------
# Driver


def launch(kind: str, args: argparse.Namespace, work: Path, rep: str, profile_out: Path | None = None) -> dict[str, Any]:
    folder = work / f"{kind}-{rep}"
    folder.mkdir(parents=True)
    result_file = folder / "result.json"
    example = work / "specs" / EXAMPLE
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--threads", str(args.threads),
           "--result", str(result_file)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    env = dict(ENV)
    if kind == "ftc":
        cmd += ["--spec", str(example / f"{EXAMPLE}.ftspec")]
        if profile_out is not None:
            cmd += ["--profile-out", str(profile_out)]
        env.update(FTC_HOME=str(folder / "home"), FTC_CACHE_DIR=str(folder / "cache"))
    else:
        cmd += ["--example", str(example), "--out", str(folder)]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not result_file.is_file():
        sys.exit(f"{kind} worker failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text("utf-8"))
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    shutil.rmtree(folder / "home" / "runs", ignore_errors=True)
    return result


def loss_diff(a: list[list[float]], b: list[list[float]]) -> tuple[float, str]:
    """Max |loss difference| over the steps both logged; a note when the steps differ."""
    da, db = {int(s): v for s, v in a}, {int(s): v for s, v in b}
    common = sorted(set(da) & set(db))
    worst = max((abs(da[s] - db[s]) for s in common), default=math.inf)
    note = "" if set(da) == set(db) else f" (steps differ: ftc {len(da)}, script {len(db)}, common {len(common)})"
    return worst, note


def fair(r: dict[str, Any], what: str = "parts") -> float:
    """ftc's share that does the script's work: the train and eval.tuned.test nodes."""
    p = r[what]
    return float(p.get("node train", 0.0) + p.get("node eval.tuned.test", 0.0))


def profile_summary(path: Path, top: int) -> str:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("cumulative").print_stats(r"/(runtime|compiler)/", top)
    buf.write("\n")
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines()
             if ln.strip() and str(path) not in ln and not ln.lstrip().startswith(("Ordered by", "List reduced"))]
    return "\n".join(lines)


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="interleaved repetitions of each (medians)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in both workers")
    ap.add_argument("--max-steps", type=int, help="cap training (ftc run --max-steps; the script alike)")
    ap.add_argument("--profile", action="store_true", help="cProfile one more ftc run even when the target is met")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    ap.add_argument("--worker", choices=["ftc", "script"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--example", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        result = ftc_worker(args) if args.worker == "ftc" else script_worker(args)
        Path(args.result).write_text(json.dumps(result, default=str), encoding="utf-8")
        return 0

    if args.runs < 1 or args.threads < 1:
        ap.error("--runs and --threads must be at least 1")
    ftc_runs: list[dict[str, Any]] = []
    script_runs: list[dict[str, Any]] = []
    profile_text = ""
    with tempfile.TemporaryDirectory(prefix="ftc-run-bench-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "specs", work / "specs", ignore=shutil.ignore_patterns("__pycache__", ".ftc"))
        for i in range(args.runs):
            order = ("ftc", "script") if i % 2 == 0 else ("script", "ftc")
            for kind in order:
                r = launch(kind, args, work, str(i))
                (ftc_runs if kind == "ftc" else script_runs).append(r)
                print(f"  run {i + 1}/{args.runs} {kind:<6} {r['seconds']:7.2f} s"
                      + (f"  (train + tuned eval {fair(r):.2f} s)" if kind == "ftc" else ""),
                      file=sys.stderr, flush=True)
        ratio = statistics.median(fair(r) for r in ftc_runs) / statistics.median(r["seconds"] for r in script_runs)
        if args.profile or ratio > RATIO:
            prof = work / "ftc.prof"
            launch("ftc", args, work, "profile", profile_out=prof)
            profile_text = profile_summary(prof, 25)

    script_s = statistics.median(r["seconds"] for r in script_runs)
    ftc_total = statistics.median(r["seconds"] for r in ftc_runs)
    ftc_fair = statistics.median(fair(r) for r in ftc_runs)
    ftc_train = statistics.median(r["parts"].get("trainer.train", 0.0) for r in ftc_runs)
    script_train = statistics.median(r["phases"]["train"] for r in script_runs)
    extra_saves = statistics.median(r["parts"].get("ftc atomic _save_checkpoint", 0.0) for r in ftc_runs) - \
        statistics.median(r["parts"].get("transformers _save_checkpoint", 0.0) for r in script_runs)
    ftc_cpu = statistics.median(fair(r, "cpu") for r in ftc_runs)
    script_cpu = statistics.median(r["cpu_seconds"] for r in script_runs)
    diffs = [loss_diff(f["losses"], s["losses"]) for f in ftc_runs for s in script_runs]
    worst, note = max(diffs, key=lambda d: d[0])
    val_worst = max(loss_diff(f["val_losses"], s["val_losses"])[0] for f in ftc_runs for s in script_runs)
    n_steps = len(ftc_runs[0]["losses"])
    same_loss = worst <= LOSS_TOLERANCE and not note
    ratio = ftc_fair / script_s
    f0, s0 = ftc_runs[0], script_runs[0]

    rows = [
        ("hand-written script: load, train, save, evaluate test (median)", fmt_s(script_s), "", ""),
        ("  of which trainer.train()", fmt_s(script_train), "", ""),
        ("ftc run, total (median)", fmt_s(ftc_total), "", ""),
        ("ftc train + eval.tuned.test nodes: the same work (median)", fmt_s(ftc_fair), "", ""),
        ("  of which trainer.train()", fmt_s(ftc_train), "", ""),
        ("  ratio ftc (same work) / script", f"{ratio:.3f}x", f"<= {RATIO:g}x", "PASS" if ratio <= RATIO else "MISS"),
        ("  ratio ftc total / script (ftc does more: see below)", f"{ftc_total / script_s:.2f}x", "", ""),
        ("  ratio trainer.train() ftc / script", f"{ftc_train / script_train:.3f}x", "", ""),
        ("  ftc's atomic checkpoint saves minus the script's plain ones",
         f"{extra_saves:+.2f} s = {extra_saves / script_s:+.1%}", "", ""),
        ("  CPU time, same work: ftc / script (less sensitive to load)",
         f"{ftc_cpu:.2f} / {script_cpu:.2f} s = {ftc_cpu / script_cpu:.3f}x", "", ""),
        (f"per-step loss, max |ftc - script| ({n_steps} logged steps){note}", f"{worst:.3g}",
         f"<= {LOSS_TOLERANCE:g}", "PASS" if same_loss else "MISS"),
        ("validation loss per epoch, max |ftc - script|", f"{val_worst:.3g}", "", ""),
        ("stopped at step / best checkpoint (ftc | script)",
         (f"{f0['global_step']}/{Path(str(f0['best_checkpoint'])).name.split('-')[-1]} | "
          f"{s0['global_step']}/{Path(str(s0['best_checkpoint'])).name.split('-')[-1]}"), "", ""),
        ("test accuracy, F1 macro (ftc | script)",
         (f"{f0['test']['accuracy']:.3f} {f0['test']['f1.macro']:.3f} | "
          f"{s0['test']['accuracy']:.3f} {s0['test']['f1.macro']:.3f}"), "", ""),
    ]
    print(f"ftc run overhead: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, torch threads {args.threads}, load {os.getloadavg()[0]:.2f}, "
          f"{args.runs} interleaved runs; script: " + ", ".join(fmt_s(r["seconds"]) for r in script_runs)
          + "; ftc same work: " + ", ".join(fmt_s(fair(r)) for r in ftc_runs)
          + "; ftc total: " + ", ".join(fmt_s(r["seconds"]) for r in ftc_runs))
    width = max(len(r[0]) for r in rows)
    vwidth = max(10, *(len(r[1]) for r in rows))
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  {'target':>8}  result")
    for name, value, target, verdict in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target:>8}  {verdict}")

    # Where ftc's time goes: medians of the wrapped calls, as a tree
    def med(key: str) -> float:
        return float(statistics.median(r["parts"].get(key, 0.0) for r in ftc_runs))

    def med_of(fn: Any) -> float:
        return float(statistics.median(fn(r) for r in ftc_runs))

    nodes = sorted((k for k in ftc_runs[0]["parts"] if k.startswith("node ")), key=lambda k: -med(k))
    accounted = ("with_rows (read rows)", "build_plan", "lineage (versions, git)", "registry",
                 "execute (all nodes)", "sha256 of the artifact")
    tree = [
        (0, "ftc run, total", med_of(lambda r: r["seconds"])),
        (1, "cli: check before run (spec + data)", med("cli: check before run")),
        (1, "run()", med("run()")),
        (2, "check_file (spec + data), in run()", med_of(lambda r: r["each"]["check_file (spec + data)"][-1])),
        (2, "with_rows (rows read for the run)", med("with_rows (read rows)")),
        (2, "build_plan", med("build_plan")),
        (2, "lineage (package versions, git)", med("lineage (versions, git)")),
        (2, "registry (open, start, finish)", med("registry")),
        (2, "execute (all nodes)", med("execute (all nodes)")),
        *[row for k in nodes if med(k) >= 0.0005 for row in
          [(3, k, med(k))] + ([(4, "trainer.train()", med("trainer.train")),
                               (4, "token cache: key, look-up, store", med("token cache"))]
                              if k == "node train" else [])],
        (2, "sha256 of the artifact", med("sha256 of the artifact")),
        (2, "rest of run() (progress, printing...)",
         med_of(lambda r: r["parts"]["run()"] - r["each"]["check_file (spec + data)"][-1]
                - sum(r["parts"].get(k, 0.0) for k in accounted))),
    ]
    print("\nwhere ftc's time goes (median s of each part; nodes under 0.5 ms left out)")
    for depth, label, secs in tree:
        print(f"{'  ' * (depth + 1)}{label:<{46 - 2 * depth}} {secs:8.3f}")

    def both(key: str) -> tuple[float, float]:
        return med(key), float(statistics.median(r["parts"].get(key, 0.0) for r in script_runs))

    saves = len(ftc_runs[0]["each"].get("transformers _save_checkpoint", []))
    evals = len(ftc_runs[0]["each"].get("trainer.evaluate", []))
    train_f, train_s = both("trainer.train")
    tsave_f, tsave_s = both("transformers _save_checkpoint")
    atomic_f, wait_f = med("ftc atomic _save_checkpoint"), med("wait for a finish")
    finish_f, fsync_f = med("finish (background)"), med("fsync")
    eval_f, eval_s = both("trainer.evaluate")
    inside = [
        ("trainer.train()", train_f, train_s),
        (f"checkpoint saves ({saves}; ftc: atomic)", atomic_f, tsave_s),
        ("  transformers' _save_checkpoint", tsave_f, tsave_s),
        ("  ftc's part (staging folder, wait, start the finish)", atomic_f - tsave_f, 0.0),
        (f"per-epoch validation (trainer.evaluate, {evals})", eval_f, eval_s),
        ("training steps, callbacks, the rest", train_f - atomic_f - eval_f, train_s - tsave_s - eval_s),
    ]
    print(f"\n{'inside trainer.train() (median s)':<58} {'ftc':>7}  {'script':>7}")
    for label, f, sc in inside:
        print(f"  {label:<56} {f:7.3f}  {sc:7.3f}")
    print(f"  {'waits for a background finish (in saves, at the end)':<56} {wait_f:7.3f}")
    print(f"  {'on the background thread, overlapped with training:':<56}")
    print(f"  {'  finishing (marker, fsync, move, keep 2)':<56} {finish_f:7.3f}")
    print(f"  {'    of which fsync of every file and folder':<56} {fsync_f:7.3f}")
    print("\nwhere the script's time goes (median s)")
    for k in script_runs[0]["phases"]:
        print(f"  {k:<40} {statistics.median(r['phases'][k] for r in script_runs):8.3f}")
    if profile_text:
        print("\ncProfile of one more ftc run (ftc's functions by cumulative time, then everything by own time)")
        print(profile_text)
    if args.json:
        args.json.write_text(json.dumps({"ftc": ftc_runs, "script": script_runs, "ratio": ratio,
                                         "max_loss_diff": worst}, indent=1, default=str), encoding="utf-8")
    return 0 if ratio <= RATIO and same_loss else 1


if __name__ == "__main__":
    sys.exit(main())
