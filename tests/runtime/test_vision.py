"""The vision backend (timm): full and LoRA training leave artifacts that timm and peft load without
ftc and that give the in-memory model's logits; the same seed gives the same weights and a resumed
run ends with the uninterrupted run's weights (BatchNorm statistics included); augmentations touch
training images only; an unreadable image is an error naming the file; the base's foreign head is
reported; a failing gate blocks promotion through a real `ftc run`.

Models are timm's test_* architectures (0.2M parameters or less) built here under
torch.manual_seed(0) with 32x32 inputs; images are drawn here with Pillow (a line, a blot, or
nothing on a noisy grey surface)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from ftc.compiler.check import CheckOptions, check_file
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import vision, vision_data, vision_loop

LABELS = ("clean", "scratch", "spot")
ROWS = {"train": 8, "val": 3, "test": 3}  # per class


def _image(kind: str, rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32))
    base = rng.randint(150, 210)
    img.putdata([(base + rng.randint(-6, 6),) * 3 for _ in range(32 * 32)])
    d = ImageDraw.Draw(img)
    x, y = rng.randint(8, 23), rng.randint(8, 23)
    if kind == "scratch":
        d.line([(x - 7, y - rng.randint(-6, 6)), (x + 7, y + rng.randint(-6, 6))], fill=(40, 40, 40), width=1)
    elif kind == "spot":
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(50, 45, 40))
    return img


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision_data")
    rng = random.Random(0)
    for split, n in ROWS.items():
        for label in LABELS:
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                _image(label, rng).save(root / split / label / f"{split}_{label}_{i}.png")
    return root


def _save_model(arch: str, folder: Path, num_classes: int, names: list[str] | None = None) -> Path:
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "pool_size": (1, 1), "crop_pct": 1.0}
    names = names or [f"class{i}" for i in range(num_classes)]
    save_for_hf(model, folder, model_config={"label_names": names}, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def convnext(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model("test_convnext", tmp_path_factory.mktemp("models") / "convnext", 3)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BatchNorm (buffers that change in training) and a 5-class head (not the spec's 3 labels)."""
    return _save_model("test_resnet", tmp_path_factory.mktemp("models") / "resnet", 5)


def _spec(base: Path, data: Path, *, method: str, train: str, eval_: str = "", header: str = "") -> str:
    eval_ = eval_ or "metric accuracy; metric f1 macro; metric auc; metric loss; gate accuracy >= 0.1 on test"
    return f"""{header}spec "vision-test" {{
  intent {{ goal behavior; stability stable; owner "tests" }}
  model {{ modality vision; base {json.dumps(str(base))}; task image_classification; labels ["clean", "scratch", "spot"]; params 300K }}
  method {method}
  signal sft {{ input "image"; target "label" }}
  data {{ format image_folder; train "{data}/train"; val "{data}/val"; test "{data}/test"; slice spots where label == "spot" }}
  train {{ {train} }}
  eval {{ {eval_} }}
}}
"""


def _ctx(where: Path, base: Path, data: Path, *, method: str = "full { }", run: str = "run",
         train: str = "epochs 2; batch_size 8; learning_rate 3e-3; precision fp32; seed 7",
         **kwargs: Any) -> TrainContext:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "spec.ftspec"
    path.write_text(_spec(base, data, method=method, train=train), encoding="utf-8")
    result = check_file(path, CheckOptions())  # conftest sets FTC_NO_CACHE: the rows are read
    errors = [(d.code, d.message) for d in result.diagnostics if d.severity.value == "error"
              and d.code not in ("FT202", "FT217")]  # a few dozen images, no early stopping: plumbing tests
    assert result.checked is not None and not errors, errors
    events: list[dict[str, Any]] = []
    ctx = TrainContext(result.checked, result.checked.data.parts, where / run, events.append, **kwargs)
    ctx.events = events  # type: ignore[attr-defined]
    return ctx


def _batch(folder: Path, model: Any) -> Any:
    from PIL import Image

    files = sorted(folder.rglob("*.png"))
    return torch.stack([vision_data.eval_transform(model)(Image.open(f).convert("RGB")) for f in files])


def test_full_fine_tune_leaves_a_timm_folder_that_loads_without_ftc(tmp_path: Path, convnext: Path,
                                                                    images: Path) -> None:
    ctx = _ctx(tmp_path, convnext, images, method="full { freeze [\"stem\"] }")
    fitted = vision.fit(ctx)
    out = fitted.result.model_dir
    assert fitted.result.kind == "full" and out.name == "model" and fitted.result.steps == 6
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "ftc_artifact.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 3 and config["label_names"] == list(LABELS)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = _batch(images / "test", loaded)
    with torch.no_grad():
        assert torch.allclose(loaded(x), fitted.model(x), atol=1e-6)
    base = timm.create_model(f"local-dir:{convnext}", pretrained=True)
    assert torch.equal(base.stem[0].weight, loaded.stem[0].weight)  # frozen
    assert not torch.equal(base.head.fc.weight, loaded.head.fc.weight)
    steps = [e for e in ctx.events if e["event"] == "step"]  # type: ignore[attr-defined]
    assert len(steps) == 6 and all({"loss", "lr", "grad_norm", "samples_per_s", "rss_mb"} <= e.keys() for e in steps)
    evals = [e for e in ctx.events if e["event"] == "eval"]  # type: ignore[attr-defined]
    assert len(evals) == 2 and {"accuracy", "f1.macro", "loss", "auc"} <= evals[0].keys()
    result = vision.evaluate(ctx, out, "test")
    assert result.n == 9 and {"accuracy", "f1", "f1.macro", "f1.micro", "f1.weighted", "precision.macro",
                               "recall.weighted", "auc", "loss"} <= result.metrics.keys()
    assert result.slices["spots"]["n"] == 3.0 and sum(map(sum, result.extra["confusion_matrix"]["matrix"])) == 9
    latency = vision.measure_latency(ctx, out, "test", warmup=1, n=3)
    assert latency["n"] == 3 and latency["p50"] <= latency["p95"] <= latency["p99"] and latency["unit"] == "s"


def test_lora_adapter_and_merged_model_load_without_ftc(tmp_path: Path, convnext: Path, images: Path) -> None:
    from peft import PeftModel

    ctx = _ctx(tmp_path, convnext, images, method="lora { rank 4; alpha 8; merge true }")
    fitted = vision.fit(ctx)
    adapter, merged = fitted.result.model_dir, fitted.result.merged_dir
    assert fitted.result.kind == "adapter" and adapter.name == "adapter" and merged is not None
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == ["head.fc"] and "stem.0" in cfg["target_modules"]
    assert not any("conv_dw" in t for t in cfg["target_modules"])  # depthwise: peft cannot merge them
    plain = PeftModel.from_pretrained(timm.create_model(f"local-dir:{cfg['base_model_name_or_path']}",
                                                        pretrained=True), adapter).eval()
    flat = timm.create_model(f"local-dir:{merged}", pretrained=True).eval()
    x = _batch(images / "test", flat)
    with torch.no_grad():
        want = fitted.model(x)
        assert torch.allclose(plain(x), want, atol=1e-6)
        assert torch.allclose(flat(x), want, atol=1e-4)
    assert json.loads((merged / "config.json").read_text())["label_names"] == list(LABELS)


def _weights(model: Any) -> dict[str, Any]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights_and_resume_ends_identical(tmp_path: Path, resnet: Path, images: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    train = ("epochs 3; batch_size 8; learning_rate 3e-3; precision fp32; seed 3; checkpoints keep 2 every 2 steps; "
             'augment ["flip", "crop", "mixup"]')
    straight = vision.fit(_ctx(tmp_path / "a", resnet, images, train=train))
    again = vision.fit(_ctx(tmp_path / "b", resnet, images, train=train))
    a, b = _weights(straight.model), _weights(again.model)
    assert any("running_mean" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)

    real = vision_loop.Loop._step

    def step_or_die(self: Any, group: Any, first: int) -> float:
        if self.state.step + 1 == 6:
            raise RuntimeError("killed")
        return float(real(self, group, first))

    with monkeypatch.context() as m:
        m.setattr(vision_loop.Loop, "_step", step_or_die)
        with pytest.raises(RuntimeError, match="killed"):
            vision.fit(_ctx(tmp_path / "c", resnet, images, train=train))
    ckpt = tmp_path / "c" / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2",
                                                                                         "checkpoint-4"]
    assert (ckpt / "checkpoint-4" / vision_loop.BUFFERS).is_file()
    ctx = _ctx(tmp_path / "c", resnet, images, train=train, resume=True)
    resumed = vision.fit(ctx)
    c = _weights(resumed.model)
    assert resumed.result.steps == straight.result.steps == 9
    assert [e["step"] for e in ctx.events if e["event"] == "step"] == [5, 6, 7, 8, 9]  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_augmentations_touch_training_images_only(tmp_path: Path, convnext: Path, images: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    train = ('epochs 1; batch_size 8; learning_rate 1e-3; precision fp32; seed 1; augment ["flip", "crop", '
             '"rotate", "color_jitter", "randaugment", "mixup", "cutmix"]')
    ctx = _ctx(tmp_path, convnext, images, train=train)
    seen: list[bytes] = []
    real = vision_data.seeded

    def spy(transform: Any, image: Any, seed: int) -> Any:
        seen.append(image.tobytes())
        return real(transform, image, seed)

    monkeypatch.setattr(vision_data, "seeded", spy)
    fitted = vision.fit(ctx)
    from PIL import Image

    def pixels(split: str) -> set[bytes]:
        return {Image.open(f).convert("RGB").tobytes() for f in (images / split).rglob("*.png")}

    assert len(seen) == 24 and set(seen) == pixels("train") and not set(seen) & (pixels("val") | pixels("test"))
    model = fitted.model
    augment = vision_data.train_transform(model, tuple(ctx.spec.train.augment))
    image = Image.open(next((images / "train").rglob("*.png"))).convert("RGB")
    plain = vision_data.eval_transform(model)(image)
    assert torch.equal(real(augment, image, 5), real(augment, image, 5))  # seeded: reproducible
    assert not torch.equal(real(augment, image, 5), plain)
    assert torch.equal(vision_data.eval_transform(model)(image), plain)
    first = vision.evaluate(ctx, fitted.result.model_dir, "val").metrics
    assert vision.evaluate(ctx, fitted.result.model_dir, "val").metrics == first


def test_an_unreadable_image_is_an_error_naming_the_file(tmp_path: Path, convnext: Path, images: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(images, data)
    ctx = _ctx(tmp_path, convnext, data)
    broken = min((data / "train" / "spot").iterdir())
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # corrupted after the check read it
    with pytest.raises(ValueError, match=f"cannot decode image `.*{broken.name}`"):
        vision.train(ctx)


def test_the_base_with_a_foreign_head_is_scored_and_reported(tmp_path: Path, resnet: Path, images: Path) -> None:
    ctx = _ctx(tmp_path, resnet, images)
    result = vision.evaluate(ctx, None, "test")
    assert "5 classes" in result.extra["head"] and "untrained head" in result.extra["head"]
    assert result.n == 9 and 0.0 <= result.metrics["accuracy"] <= 1.0
    same = vision.evaluate_file(ctx, None, str(images / "test"))  # an image folder a gate names
    assert same.metrics == result.metrics and same.split == str(images / "test")


def test_progressive_unfreezing_trains_groups_in_turn(tmp_path: Path, convnext: Path, images: Path) -> None:
    method = 'full { progressive ["head", "stages.3"]; unfreeze_every 2 }'
    base = timm.create_model(f"local-dir:{convnext}", pretrained=True)
    one = vision.fit(_ctx(tmp_path / "one", convnext, images, method=method)).model  # 2 epochs: the head only
    assert torch.equal(one.stages[3].blocks[0].mlp.fc1.weight, base.stages[3].blocks[0].mlp.fc1.weight)
    assert not torch.equal(one.head.fc.weight, base.head.fc.weight)
    train = "epochs 3; batch_size 8; learning_rate 3e-3; precision fp32; seed 7"
    three = vision.fit(_ctx(tmp_path / "three", convnext, images, method=method, train=train)).model
    assert not torch.equal(three.stages[3].blocks[0].mlp.fc1.weight, base.stages[3].blocks[0].mlp.fc1.weight)
    assert torch.equal(three.stages[0].blocks[0].mlp.fc1.weight, base.stages[0].blocks[0].mlp.fc1.weight)


def test_a_failing_gate_blocks_promotion_end_to_end(tmp_path: Path, convnext: Path, images: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.registry import Registry
    from ftc.runtime.run import EXIT_GATES, run

    spec = tmp_path / "spec.ftspec"
    spec.write_text(_spec(convnext, images, method="lora { rank 4; alpha 8 }",
                          train="epochs 1; batch_size 8; learning_rate 1e-3; precision fp32; "
                                "early_stopping patience 2 on val.accuracy",
                          eval_="metric accuracy; gate accuracy >= 0.999 on test",
                          header="# ftc: ignore-file[FT202] a few dozen images: the test checks plumbing\n"),
                    encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    outcome = run(str(spec), max_steps=2)
    assert outcome.exit_code == EXIT_GATES and "NOT promoted" in outcome.message
    reg = Registry()
    [rec] = reg.runs("vision-test")
    assert rec["status"] == "rejected" and reg.active("vision-test") is None
    assert rec["record"].extra["tuned:test"]["confusion_matrix"]["labels"] == list(LABELS)


def test_a_head_naming_the_labels_in_another_order_is_reordered(tmp_path: Path, images: Path) -> None:
    from ftc.runtime.backends import vision_model

    base = _save_model("test_convnext", tmp_path / "model", 3, ["spot", "clean", "scratch"])
    ctx = _ctx(tmp_path, base, images)
    model, note = vision_model.load_base(ctx)
    raw = timm.create_model(f"local-dir:{base}", pretrained=True)
    assert note is None and torch.equal(model.head.fc.weight, raw.head.fc.weight[[1, 2, 0]])


def test_an_image_table_resolves_paths_against_image_root(tmp_path: Path, convnext: Path, images: Path) -> None:
    for split in ROWS:
        rows = [{"image": p.relative_to(images).as_posix(), "label": p.parent.name}
                for p in sorted((images / split).rglob("*.png"))]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = _spec(convnext, images, method="full { }", train="epochs 1; batch_size 8; precision fp32")
    data = f'format image_table; image_root {json.dumps(str(images))}; train "train.jsonl"; val "val.jsonl"; ' \
           'test "test.jsonl"'
    text = text.replace(text[text.index("data {"):text.index("}", text.index("data {")) + 1], f"data {{ {data} }}")
    (tmp_path / "spec.ftspec").write_text(text, encoding="utf-8")
    result = check_file(tmp_path / "spec.ftspec", CheckOptions())
    assert result.checked is not None and result.checked.data is not None
    ctx = TrainContext(result.checked, result.checked.data.parts, tmp_path / "run", lambda e: None)
    assert vision.evaluate(ctx, None, "test").n == 9


def test_an_8bit_optimizer_off_cuda_is_adamw_and_said(tmp_path: Path, resnet: Path, images: Path) -> None:
    ctx = _ctx(tmp_path, resnet, images, train="steps 2; batch_size 8; learning_rate 3e-3; precision fp32; seed 7; "
                                               "optimizer paged_adamw_8bit")
    vision.fit(ctx)
    notes = [e["message"] for e in ctx.events if e["event"] == "note"]  # type: ignore[attr-defined]
    assert "optimizer paged_adamw_8bit needs CUDA; using adamw on cpu" in notes


def test_a_hub_base_is_refused_with_how_to_save_it_locally(tmp_path: Path, images: Path) -> None:
    """`ftc check` refuses a timm hub name (FT155) with the runtime's own words, before any run."""
    path = tmp_path / "spec.ftspec"
    path.write_text(_spec(Path("timm:resnet18"), images, method="full { }",
                          train="epochs 2; batch_size 8; learning_rate 3e-3; precision fp32; seed 7"), encoding="utf-8")
    [hub] = [d for d in check_file(path, CheckOptions()).diagnostics if d.code == "FT155"]
    assert "timm.models.save_for_hf" in hub.help


def test_images_are_decoded_when_a_batch_needs_them_and_broken_files_stop_the_run_first(tmp_path: Path,
                                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A split is never held decoded in memory: loading reads each file's header only, and every
    read of an image decodes it afresh; a missing or broken file is refused when the split is
    loaded (before training), naming the file."""
    from types import SimpleNamespace

    from PIL import Image

    from ftc.runtime.backends import vision_data as vd

    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    ctx = SimpleNamespace(spec=SimpleNamespace(signal=SimpleNamespace(input="image", target="label")))
    rows = [{"image": "a.png", "label": "x"}, {"image": "b.png", "label": "y"}, {"image": "c.png", "label": "z"}]
    decoded: list[str] = []
    real_open = vd.open_image

    def counting_open(value: object, root: Path) -> object:
        decoded.append(str(value))
        return real_open(value, root)

    monkeypatch.setattr(vd, "open_image", counting_open)
    found = vd.load_images(ctx, rows, tmp_path, ["x", "y"])  # type: ignore[arg-type]
    assert decoded == [] and len(found.images) == 2 and found.skipped == 1 and found.labels == [0, 1]
    first, again = found.images[1], found.images[1]
    assert first is not again and first.getpixel((0, 0)) == (0, 0, 255) and decoded == ["b.png", "b.png"]
    assert [im.getpixel((0, 0)) for im in found.images] == [(255, 0, 0), (0, 0, 255)]
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot decode image `.*b\.png`"):
        vd.load_images(ctx, rows, tmp_path, ["x", "y"])  # type: ignore[arg-type]
    (tmp_path / "b.png").unlink()
    with pytest.raises(ValueError, match=r"cannot read image `.*b\.png`: no such file.*ftc check"):
        vd.load_images(ctx, rows, tmp_path, ["x", "y"])  # type: ignore[arg-type]
