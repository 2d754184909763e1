"""How close is ftc's static memory estimate (compiler/estimate.py, rule FT160) to the GPU memory that
ftc's *vision* training (timm image classifiers, runtime/backends/vision*.py, loop.py) really takes?

    python bench/memory_vision.py measure --out mv.json             # on a CUDA machine (torch, timm, peft, ftc)
    .venv/bin/python bench/memory_vision.py report mv.json          # here: ftc's estimate beside each case
    .venv/bin/python bench/memory_vision.py measure --device cpu --models resnet18 --batches 2 --out /tmp/mv.json

The text bench's little sibling (bench/memory_estimate.py): the same measure, much smaller grid.

`measure` builds each timm architecture of --models with `pretrained=False` under torch.manual_seed(0)
(random weights, no hub), saves it as a local timm folder (config.json + model.safetensors, the
1000-class ImageNet head kept: ftc replaces it with a 2-class one, as for a real base), writes one tiny
image folder (data/{train,val,test}/{a,b}/*.png, random 224x224 RGB; train holds steps x the largest
batch, so each case is one epoch) and, per case, a spec (method full or lora rank 8, batch size,
`steps 3`, precision bf16 on CUDA, fp32 on the CPU), checks it with ftc (data included) and trains it
in-process through ftc's own backend, `vision.fit(TrainContext(..., max_steps=steps))`: load, head,
LoRA, the loop's 3 optimizer steps, the validation pass, the checkpoint and the artifacts.
ftc's step events call `torch.cuda.reset_peak_memory_stats` (monitor.gpu_mb), so the bench wraps that
function during fit to keep the peak of every interval: peak allocated = the largest of them; peak
reserved = the largest of them (the allocator only grows between empty_cache calls, which ftc does not
make). The CUDA context is `mem_get_info` used - `memory_reserved` at the end of the case, and the
footprint compared with the estimate is peak reserved + context: what has to fit in the card
(`budget.gpu_memory`). On the CPU (`--device cpu`, for testing the script) it records the process's
peak RSS during fit minus its RSS before (VmHWM, reset through /proc/self/clear_refs) as the
"footprint": not comparable with a GPU estimate. Results are written after every case, and the cases
run in rounds (every model and method at the largest batch, then the smaller one, resnet50 last),
so a run cut short by --deadline keeps the most informative ones.

`report` rebuilds each model folder here (config.json and a header-only model.safetensors with the
saved tensor shapes: all that the estimate reads), writes each case's spec again, checks it with
`no_data`, computes the estimate exactly as FT160 does (model_shape, estimate, default_seq_len) and
prints measured vs estimated; UNDER marks a case whose estimate is below the measured footprint: the
dangerous direction, a budget check that passes a run that cannot fit.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9
DEFAULT_MODELS = ("resnet18", "convnext_tiny", "vit_small_patch16_224", "resnet50")
LATE = ("resnet50",)  # "if time allows": after every round of the others
METHODS = ("full", "lora")
BATCHES = (32, 8)  # the largest first
IMAGE = 224
LABELS = ("a", "b")
LORA = {"rank": 8, "alpha": 16}
EVAL_IMAGES = 4  # per split (val, test)

SPEC = """spec "mem-vision" {{
  intent {{ goal behavior; stability stable; owner "bench" }}
  model {{ modality vision; base "models/{model}"; task image_classification; labels ["a", "b"] }}
  method {method}
  signal sft {{ input "image"; target "label" }}
  data {{ format image_folder; train "data/train" rows {n_train}; val "data/val" rows {n_val}; test "data/test" rows {n_test} }}
  train {{ steps {steps}; learning_rate 1e-4; batch_size {batch}; precision {precision}; seed 42 }}
  eval {{ metric accuracy; gate accuracy >= 0.0 on test }}
  budget {{ gpu_memory 80GB }}
}}
"""


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    batch: int

    @property
    def id(self) -> str:
        return f"{self.model}/{self.method}/b{self.batch}"


def grid(models: list[str], methods: list[str], batches: list[int]) -> list[Case]:
    """Rounds: every model and method at the largest batch, then the next batch; LATE models last."""
    cases = [Case(m, method, b) for m in models for method in methods for b in batches]
    return sorted(cases, key=lambda c: (c.model in LATE, batches.index(c.batch), models.index(c.model),
                                        methods.index(c.method)))


def spec_text(case: Case, data: dict[str, int], steps: int, precision: str) -> str:
    method = "full { }" if case.method == "full" else f"lora {{ rank {LORA['rank']}; alpha {LORA['alpha']} }}"
    return SPEC.format(model=case.model, method=method, batch=case.batch, steps=steps, precision=precision,
                       n_train=data["train"], n_val=data["val"], n_test=data["test"])


def _estimate_bench() -> Any:
    """bench/memory_estimate.py: its safetensors-header helpers serve this bench too."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import memory_estimate
    finally:
        sys.path.pop(0)
    return memory_estimate


def _safetensors_header(folder: Path) -> dict[str, list[Any]]:
    """name -> [dtype, shape] of every tensor in the folder's safetensors files (from their headers)."""
    out: dict[str, list[Any]] = _estimate_bench()._safetensors_header(folder)
    return out


# ---------------------------------------------------------------------------------------------
# measure (on the GPU machine)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "peft", "safetensors", "pillow", "ftc"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def build_model(arch: str, folder: Path) -> dict[str, Any]:
    """Random weights (seed 0, no hub) saved as a local timm folder; returns what `report` needs."""
    import timm
    import torch
    from timm.models import save_for_hf

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    save_for_hf(model, str(folder), safe_serialization=True)
    del model
    header = _safetensors_header(folder)
    return {"config": json.loads((folder / "config.json").read_text()), "safetensors": header,
            "params": sum(math.prod(shape) for _, shape in header.values()),
            "build_s": round(time.perf_counter() - t0, 2)}


def make_data(root: Path, n_train: int) -> dict[str, int]:
    """data/{train,val,test}/{a,b}/*.png: random 224x224 RGB images (blurred noise, seed 0)."""
    from PIL import Image

    rng = random.Random(0)
    counts = {"train": n_train, "val": EVAL_IMAGES, "test": EVAL_IMAGES}
    for split, n in counts.items():
        for label in LABELS:
            (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            small = Image.frombytes("RGB", (IMAGE // 8, IMAGE // 8), rng.randbytes((IMAGE // 8) ** 2 * 3))
            small.resize((IMAGE, IMAGE), Image.Resampling.BILINEAR).save(root / split / label / f"{split}_{i}.png")
    return counts


def _proc_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_case(case: Case, root: Path, data: dict[str, int], device: str, steps: int) -> dict[str, Any]:
    import torch
    from ftc.compiler.check import CheckOptions, check_file
    from ftc.runtime.api import TrainContext
    from ftc.runtime.backends import vision

    cuda = device.startswith("cuda")
    rec: dict[str, Any] = {}
    precision = "bf16" if cuda else "fp32"
    spec = root / "spec.ftspec"
    spec.write_text(spec_text(case, data, steps, precision), encoding="utf-8")
    t0 = time.perf_counter()
    res = check_file(spec, CheckOptions())
    rec["check_s"] = round(time.perf_counter() - t0, 2)
    rec["check_errors"] = sorted({d.code for d in res.diagnostics if d.severity.value == "error"})
    if res.checked is None or res.checked.data is None:
        raise RuntimeError(f"the spec does not check: {[d.message for d in res.diagnostics][:3]}")
    events: list[dict[str, Any]] = []
    run_dir = root / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    ctx = TrainContext(res.checked, res.checked.data.parts, run_dir, events.append, device=device, max_steps=steps)

    intervals: list[tuple[int, int]] = []  # (peak allocated, peak reserved) between ftc's resets
    real_reset = torch.cuda.reset_peak_memory_stats

    def tracked_reset(dev: Any = None) -> None:
        intervals.append((torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev)))
        real_reset(dev)

    if cuda:
        torch.cuda.synchronize()
        real_reset()
        rec["start_allocated"] = torch.cuda.memory_allocated()
        rec["start_reserved"] = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats = tracked_reset  # type: ignore[assignment]
    else:
        rec["rss_before"] = _proc_kb("VmRSS")
        rec["hwm_reset"] = _reset_hwm()
    t1 = time.perf_counter()
    try:
        fitted = vision.fit(ctx)
        if cuda:
            torch.cuda.synchronize()
    finally:
        torch.cuda.reset_peak_memory_stats = real_reset
    rec["fit_s"] = round(time.perf_counter() - t1, 2)
    if cuda:
        intervals.append((torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()))
        free, total = torch.cuda.mem_get_info()
        rec["intervals"] = intervals
        rec["peak_allocated"] = max(a for a, _ in intervals)
        rec["peak_reserved"] = max(r for _, r in intervals)
        rec["end_allocated"] = torch.cuda.memory_allocated()
        rec["end_reserved"] = torch.cuda.memory_reserved()
        rec["device_used_end"] = total - free
        rec["context"] = total - free - torch.cuda.memory_reserved()
        rec["footprint"] = rec["peak_reserved"] + rec["context"]
    else:
        rec["rss_peak"] = _proc_kb("VmHWM")
        rec["footprint"] = rec["rss_peak"] - rec["rss_before"]
    start = next((e for e in events if e["event"] == "start"), {})
    rec.update({k: start.get(k) for k in ("precision", "trainable_params", "total_params")})
    step_events = [e for e in events if e["event"] == "step"]
    rec["steps_done"] = fitted.result.steps
    rec["losses"] = [round(float(e["loss"]), 4) for e in step_events]
    rec["step_gpu_mb"] = [e.get("gpu_mb") for e in step_events]
    rec["step_rss_mb"] = [e.get("rss_mb") for e in step_events]
    rec["notes"] = [str(e.get("message", ""))[:160] for e in events if e["event"] == "note"]
    del fitted, ctx
    shutil.rmtree(run_dir, ignore_errors=True)
    return rec


def _free(cuda: bool) -> None:
    gc.collect()
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def measure(args: argparse.Namespace, start: float) -> int:
    import torch

    cuda = args.device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)
    models, methods = args.models.split(","), args.methods.split(",")
    batches = sorted({int(b) for b in args.batches.split(",")}, reverse=True)
    cases = grid(models, methods, batches)
    if args.only:
        cases = [c for c in cases if any(part in c.id for part in args.only.split(","))]
    out_path = Path(args.out)
    env: dict[str, Any] = {"versions": _versions(), "device": args.device, "steps": args.steps, "image": IMAGE,
                           "threads": torch.get_num_threads()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_total=p.total_memory)
    print(json.dumps(env), flush=True)
    result: dict[str, Any] = {"env": env, "lora": LORA, "models": {}, "data": {}, "cases": []}

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

    root = Path(tempfile.mkdtemp(prefix="ftc_mem_vision_"))
    os.environ["FTC_CACHE_DIR"] = str(root / "cache")  # the data check's cache: here, not in the repo
    try:
        result["data"] = make_data(root / "data", args.steps * max(batches))
        save()
        for case in cases:
            entry: dict[str, Any] = {"id": case.id, "model": case.model, "method": case.method, "batch": case.batch}
            if time.perf_counter() - start > args.deadline:
                entry["status"] = "skipped (deadline)"
                result["cases"].append(entry)
                save()
                continue
            t0 = time.perf_counter()
            try:
                if case.model not in result["models"]:
                    result["models"][case.model] = build_model(case.model, root / "models" / case.model)
                entry.update(run_case(case, root, result["data"], args.device, args.steps))
                entry["status"] = "ok"
            except torch.OutOfMemoryError as err:
                entry.update(status="oom", error=str(err).splitlines()[0][:300])
                entry["peak_reserved"] = torch.cuda.max_memory_reserved()
                del err
            except Exception as err:  # noqa: BLE001 - record it and go on with the next case
                entry.update(status="error", error=f"{type(err).__name__}: {str(err)[:400]}")
                del err
            _free(cuda)
            entry["case_s"] = round(time.perf_counter() - t0, 2)
            result["cases"].append(entry)
            save()
            print(f"{time.perf_counter() - start:6.1f}s {case.id:34} {entry['status']:6} "
                  f"footprint {entry.get('footprint', 0) / GB:6.3f} GB  alloc {entry.get('peak_allocated', 0) / GB:6.3f}"
                  f" GB  fit {entry.get('fit_s', '')}s {entry.get('error', '')[:160]}", flush=True)
    finally:
        save()
        shutil.rmtree(root, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------------
# report (here, with ftc installed)


def _write_model(folder: Path, info: dict[str, Any]) -> None:
    """config.json and a header-only model.safetensors: what the estimate reads of a local base."""
    _estimate_bench()._write_model(folder, info)


def estimates(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """case id -> ftc's estimate (total, parts, shape), computed the way rule FT160 computes it."""
    from ftc.compiler import estimate as est
    from ftc.compiler.check import CheckOptions, check_file

    out: dict[str, dict[str, Any]] = {}
    cuda = str(result["env"]["device"]).startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="ftc_mem_vision_report_") as tmp:
        root = Path(tmp)
        for name, info in result["models"].items():
            _write_model(root / "models" / name, info)
        for c in result["cases"]:
            if c["model"] not in result["models"]:
                continue
            path = root / "spec.ftspec"
            path.write_text(spec_text(Case(c["model"], c["method"], c["batch"]), result["data"],
                                      result["env"]["steps"], "bf16" if cuda else "fp32"), encoding="utf-8")
            res = check_file(path, CheckOptions(no_data=True))
            assert res.checked is not None, [d.message for d in res.diagnostics]
            spec, checked = res.checked.spec, res.checked
            shape = est.model_shape(spec.model, checked.dir_of(spec.model.at("base")))  # as FT160
            assert shape is not None, c["id"]
            e = est.estimate(spec, shape, est.default_seq_len(spec))
            out[c["id"]] = {"total": e.total, **dict(e.parts()), "trainable": e.trainable, "params": shape.params,
                            "source": shape.source, "layers": shape.layers, "hidden": shape.hidden,
                            "seq": est.default_seq_len(spec)}
    return out


def report(args: argparse.Namespace) -> int:
    result = json.loads(Path(args.results).read_text())
    env = result["env"]
    cuda = str(env["device"]).startswith("cuda")
    est_now = estimates(result)
    print(f"{env.get('gpu', env['device'])}, {env['versions']}, {env['steps']} steps, {env['image']} px")
    if cuda:
        print("measured = peak reserved + CUDA context outside the allocator (what must fit in the card); "
              "ratio = estimate / measured (< 1: UNDER-estimate)\n")
    else:
        print("CPU run: measured = peak RSS during fit - RSS before (not comparable with a GPU estimate: "
              "the table only shows that the script works)\n")
    print(f"{'case':32} {'measured':>9} {'alloc':>7} {'context':>7} {'estimate':>9} {'ratio':>6}  "
          f"{'weights':>7} {'grads':>6} {'optim':>6} {'acts':>6} {'overhd':>6}  {'trainable est/real':>19}")
    ratios: list[tuple[str, float]] = []
    for c in result["cases"]:
        e = est_now.get(c["id"])
        if c.get("status") != "ok" or e is None:
            print(f"{c['id']:32} {c.get('status', '?')}: {c.get('error', '')[:100]}")
            continue
        m = float(c["footprint"])
        ratio = e["total"] / m if m > 0 else math.inf
        ratios.append((c["id"], ratio))
        real = c.get("trainable_params") or 0
        print(f"{c['id']:32} {m / GB:9.3f} {c.get('peak_allocated', 0) / GB:7.3f} {c.get('context', 0) / GB:7.3f} "
              f"{e['total'] / GB:9.3f} {ratio:6.2f}  {e['weights'] / GB:7.3f} {e['gradients'] / GB:6.3f} "
              f"{e['optimizer state'] / GB:6.3f} {e['activations'] / GB:6.3f} {e['overhead'] / GB:6.3f}  "
              f"{e['trainable'] / 1e6:8.2f}M/{real / 1e6:.2f}M" + ("  UNDER" if ratio < 1 else ""))
    print("\nestimated shapes (FT160 reads config.json and the safetensors header; seq = tokens per image):")
    for name in result["models"]:
        e = next((v for k, v in est_now.items() if k.startswith(name + "/")), None)
        if e:
            print(f"  {name:24} {e['params'] / 1e6:7.2f}M params from {e['source']}; guessed {e['layers']} layers x "
                  f"hidden {e['hidden']}, seq {e['seq']}")
    if not ratios:
        print("\nno measured case")
        return 0
    values = [r for _, r in ratios]
    under = [k for k, r in ratios if r < 1]
    print(f"\n{len(ratios)} cases: ratio min {min(values):.2f}, median {statistics.median(values):.2f}, "
          f"max {max(values):.2f}; UNDER-estimated: {len(under)}" + (f" ({', '.join(under)})" if under else ""))
    skipped = [c["id"] for c in result["cases"] if c.get("status") != "ok"]
    if skipped:
        print(f"not measured: {', '.join(skipped)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="train each case through ftc's vision backend; write the measurements")
    m.add_argument("--out", required=True)
    m.add_argument("--device", default="cuda", help="cuda (default) or cpu (RSS instead of GPU memory)")
    m.add_argument("--models", default=",".join(DEFAULT_MODELS), help="timm architecture names, comma-separated")
    m.add_argument("--methods", default=",".join(METHODS))
    m.add_argument("--batches", default=",".join(map(str, BATCHES)))
    m.add_argument("--only", default="", help="comma-separated substrings of case ids to keep")
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--deadline", type=float, default=90.0, help="seconds after start after which no case starts")
    r = sub.add_parser("report", help="ftc's estimate beside each measurement")
    r.add_argument("results")
    args = ap.parse_args(argv)
    return measure(args, start) if args.cmd == "measure" else report(args)


if __name__ == "__main__":
    sys.exit(main())
