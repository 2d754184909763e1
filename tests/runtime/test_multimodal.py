"""Image-text contrastive fine-tuning of open_clip on CPU: a tiny CLIP built here (2 layers, width 32,
a word-level tokenizer over the test's captions, torch.manual_seed(0)) and icons drawn with Pillow."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from tests.runtime import _pref_fixtures as F

COLOURS = {"red": (210, 40, 40), "green": (40, 160, 70), "blue": (40, 80, 200), "yellow": (235, 210, 40),
           "black": (20, 20, 20), "purple": (130, 60, 170)}
SHAPES = ("circle", "square", "bar")
PLACES = {"left": 9, "right": 23}
ROWS = 120


def icon_rows(n: int) -> list[tuple[dict[str, Any], Any]]:
    """(row, image) pairs: a coloured shape on the left or right; captions say which (and a row id)."""
    from PIL import Image, ImageDraw

    rng = random.Random(3)
    out = []
    for i in range(n):
        colour, shape, place = rng.choice(sorted(COLOURS)), rng.choice(SHAPES), rng.choice(sorted(PLACES))
        img = Image.new("RGB", (32, 32), (250, 250, 250))
        d, x = ImageDraw.Draw(img), PLACES[place]
        box = [x - 6, 10 + i % 8, x + 6, 22 + i % 8]  # the row id moves the shape: no two images alike
        if shape == "circle":
            d.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            d.rectangle(box, fill=COLOURS[colour])
        else:
            d.rectangle([x - 2, 4 + i % 8, x + 2, 24 + i % 8], fill=COLOURS[colour])
        d.point((0, 0), fill=(i, i, i))  # every image distinct (the leakage check compares bytes)
        row = {"image": f"icon_{i:03d}.png", "caption": f"a {colour} {shape} on the {place} number {i}",
               "shade": "dark" if colour in ("black", "purple", "blue") else "light"}
        out.append((row, img))
    return out


def make_tiny_clip(out: Path, captions: list[str]) -> Path:
    """An open_clip folder (open_clip_config.json, open_clip_model.safetensors, tokenizer files)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in captions for w in c.lower().split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                               ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", model_max_length=16)
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16,
                          "mlp_ratio": 2.0},
           "text_cfg": {"context_length": 16, "vocab_size": len(vocab), "width": 32, "heads": 2, "layers": 2,
                        "mlp_ratio": 2.0, "hf_tokenizer_name": "tiny", "pool_type": "eos", "eos_id": 3,
                        "pad_id": 0}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    out.mkdir(parents=True)
    tok.save_pretrained(out)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("multimodal")
    (folder / "images").mkdir()
    pairs = icon_rows(ROWS)
    for row, img in pairs:
        img.save(folder / "images" / row["image"])
    F.write_jsonl(folder / "pairs.jsonl", [row for row, _ in pairs])
    make_tiny_clip(folder / "model", [row["caption"] for row, _ in pairs])
    return folder


METHODS = {"full": "method full {\n}\n", "lora": 'method lora {\n  rank 4\n  alpha 8\n  dropout 0.1\n}\n',
           "merge": 'method lora {\n  rank 4\n  alpha 8\n  merge true\n}\n'}


def spec(method: str = "lora", *, base: str = "model", gate: str = "recall_at_k >= 0.0 on test",
         train: str = "") -> str:
    return f"""spec "icons" {{
  intent {{ goal behavior; stability stable; owner "tests" }}
  model {{ modality multimodal; base "{base}"; task image_text_contrastive; params 60K }}
  {METHODS[method]}
  signal contrastive {{ image "image"; caption "caption"; temperature 0.07 }}
  data {{
    format image_table
    source "pairs.jsonl"
    image_root "images"
    split 80/10/10
    slice dark where shade == "dark"
  }}
  train {{
    epochs 2
    batch_size 16
    learning_rate 5e-3
    precision fp32
    seed 0
    checkpoints keep 1 every 2 steps
    early_stopping patience 3 on val.recall_at_k
    {train}
  }}
  eval {{
    metric recall_at_k 3
    metric zero_shot_accuracy
    metric loss
    gate {gate}
  }}
}}
"""


def context(root: Path, name: str, text: str, events: list[dict[str, Any]], **kw: Any) -> Any:
    work = F.fresh(root, name, ("pairs.jsonl", "images", "model"))
    return F.context(work, text, events, allow=("FT203",), **kw)


def _embeddings(model: Any, tok: Any, preprocess: Any, root: Path) -> tuple[Any, Any]:
    from ftc.runtime.backends import multimodal_data as D

    files = [root / "images" / f"icon_{i:03d}.png" for i in range(6)]
    captions = [f"a red circle on the left number {i}" for i in range(6)]
    return D.encode(model.eval(), tok, D.load_pixels(files, preprocess), captions)


def _same(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    return all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def test_full_fine_tune_leaves_an_open_clip_folder(root: Path) -> None:
    from ftc.runtime.backends import multimodal

    events: list[dict[str, Any]] = []
    ctx = context(root, "full", spec("full"), events, max_steps=4)
    fitted = multimodal.fit(ctx)
    result = fitted.result
    assert result.kind == "full" and result.steps == 4 and result.model_dir.name == "model"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all({"loss", "lr", "grad_norm", "samples_per_s", "rss_mb"} <= e.keys() for e in steps)
    assert [e for e in events if e["event"] == "eval" and "recall_at_k" in e and "zero_shot_accuracy" in e]
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    # plain open_clip, no ftc: the same embeddings as the model in memory
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{result.model_dir}")
    tok = open_clip.get_tokenizer(f"local-dir:{result.model_dir}")
    assert _same(_embeddings(model, tok, preprocess, root), _embeddings(fitted.model, fitted.tokenizer, preprocess, root))
    assert float(model.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-5)  # the spec's temperature
    base, _, _ = open_clip.create_model_and_transforms(f"local-dir:{root / 'model'}")
    assert not _same(_embeddings(base, tok, preprocess, root), _embeddings(model, tok, preprocess, root))


def test_lora_leaves_a_peft_adapter_and_a_merged_folder(root: Path) -> None:
    from ftc.runtime.backends import multimodal
    from peft import PeftModel

    events: list[dict[str, Any]] = []
    ctx = context(root, "lora", spec("merge"), events, max_steps=4)
    fitted = multimodal.fit(ctx)
    adapter, merged = fitted.result.model_dir, fitted.result.merged_dir
    assert fitted.result.kind == "adapter" and adapter.name == "adapter" and merged is not None
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == (root / "model").resolve()
    # only Linear layers that run through their own forward: never a MultiheadAttention's out_proj
    assert cfg["target_modules"] and not [t for t in cfg["target_modules"] if t.endswith("attn.out_proj")]
    assert any(t.startswith("visual.") for t in cfg["target_modules"]) and any(
        t.startswith("transformer.") for t in cfg["target_modules"])  # both towers
    base, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{cfg['base_model_name_or_path']}")
    tok = open_clip.get_tokenizer(f"local-dir:{cfg['base_model_name_or_path']}")
    want = _embeddings(fitted.model, fitted.tokenizer, preprocess, root)
    assert _same(_embeddings(PeftModel.from_pretrained(base, str(adapter)), tok, preprocess, root), want)
    plain, _, _ = open_clip.create_model_and_transforms(f"local-dir:{merged}")
    assert _same(_embeddings(plain, tok, preprocess, root), want)
    assert not list(adapter.rglob("*.bin")) and not list(merged.rglob("*.pt"))


def test_evaluate_base_and_tuned_with_slices_and_latency(root: Path) -> None:
    from ftc.runtime.backends import multimodal

    events: list[dict[str, Any]] = []
    ctx = context(root, "eval", spec("lora"), events, max_steps=2)
    tuned = multimodal.train(ctx).model_dir
    for model_dir in (None, tuned):
        res = multimodal.evaluate(ctx, model_dir, "test")
        assert res.n == len(ctx.parts["test"].rows) and res.extra["recall_at_k"] == "text-to-image"
        m = res.metrics
        assert m["recall_at_k"] == m["recall_at_3"] == m["text_to_image_recall_at_k"]
        assert 0 <= m["zero_shot_accuracy"] <= 1 and m["loss"] > 0 and 0 <= m["image_to_text_recall_at_k"] <= 1
        assert res.slices["dark"]["n"] == sum(r["shade"] == "dark" for r in ctx.parts["test"].rows)
    timing = multimodal.measure_latency(ctx, tuned, "test", warmup=2, n=5)
    assert timing["p50"] <= timing["p95"] <= timing["p99"] and timing["gallery"] == res.n


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.backends import embedding_loop, multimodal
    from safetensors.torch import load_file

    straight = multimodal.train(context(root, "straight", spec("lora"), [], max_steps=6))
    real = embedding_loop.Loop._step

    def step_or_die(self: Any, group: Any, first: int) -> float:
        if self.state.step + 1 == 4:
            raise RuntimeError("killed")
        return float(real(self, group, first))

    with monkeypatch.context() as m:
        m.setattr(embedding_loop.Loop, "_step", step_or_die)
        with pytest.raises(RuntimeError, match="killed"):
            multimodal.train(context(root, "killed", spec("lora"), [], max_steps=6))
    events: list[dict[str, Any]] = []
    resumed = multimodal.train(context(root, "killed", spec("lora"), events, max_steps=6, resume=True))
    assert [e["step"] for e in events if e["event"] == "step"] == [3, 4, 5, 6]  # from checkpoint-2
    a = load_file(str(straight.model_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.model_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_hub_base_is_refused(root: Path) -> None:
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions

    text = spec("lora", base="open_clip:ViT-B-32").replace("task image_text_contrastive",
                                                            'pretrained "laion2b_s34b_b79k"; task image_text_contrastive')
    folder = root / "hub"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.ftspec").write_text(text, encoding="utf-8")
    [hub] = [d for d in check_file(folder / "spec.ftspec", CheckOptions()).diagnostics if d.code == "FT155"]
    assert "create_model_and_transforms" in hub.help  # ftc check refuses it, in the runtime's words


def test_a_missing_image_is_an_error_naming_it(root: Path) -> None:
    from ftc.runtime.backends import multimodal

    work = root / "missing"
    work.mkdir()
    shutil.copytree(root / "images", work / "images")
    ctx = context(root, "missing", spec("lora"), [], max_steps=1)
    gone = work / "images" / ctx.parts["train"].rows[0]["image"]
    gone.unlink()  # deleted after `ftc check` read the data
    with pytest.raises(ValueError, match=f"image file {gone} does not exist"):
        multimodal.train(ctx)


def test_lora_on_a_multihead_attention_out_proj_is_refused(root: Path) -> None:
    from ftc.runtime.backends.multimodal_model import lora_targets

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{root / 'model'}")
    with pytest.raises(ValueError, match="out_proj of nn.MultiheadAttention"):
        lora_targets(model, ("out_proj",))
    with pytest.raises(ValueError, match="'attn' is not a Linear layer"):
        lora_targets(model, ("attn",))
    assert lora_targets(model, ("c_fc",)) == sorted(n for n, _ in model.named_modules() if n.endswith(".c_fc"))


def test_a_failing_gate_blocks_promotion_in_ftc_run(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.registry import Registry
    from ftc.runtime.run import EXIT_GATES, run

    for item in ("pairs.jsonl", "images", "model"):
        (tmp_path / item).symlink_to(root / item)
    (tmp_path / "icons.ftspec").write_text(spec("lora", gate="zero_shot_accuracy >= 0.99 on test"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    monkeypatch.setitem(os.environ, "FTC_NO_CACHE", "1")
    outcome = run("icons.ftspec", max_steps=2)
    assert outcome.exit_code == EXIT_GATES and "NOT promoted" in outcome.message, outcome.message
    [rec] = Registry().runs("icons")
    assert rec["status"] == "rejected" and Registry().active("icons") is None
    gate = next(g for g in rec["record"].gates if g.gate.startswith("zero_shot_accuracy"))
    assert not gate.passed and gate.value is not None and gate.value < 0.99


def test_pixels_are_decoded_a_batch_at_a_time_and_a_broken_file_is_refused_first(tmp_path: Path) -> None:
    """A split's images are not held preprocessed: reading one decodes it afresh; a batch is a
    stacked tensor; a missing or unreadable file is refused when the split is loaded, named."""
    from PIL import Image

    from ftc.runtime.backends import multimodal_data as D

    files = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for f, colour in zip(files, ((255, 0, 0), (0, 255, 0), (0, 0, 255)), strict=True):
        Image.new("RGB", (4, 4), colour).save(f)
    calls: list[tuple[int, int]] = []

    def preprocess(im: Any) -> Any:
        import torch

        calls.append(im.getpixel((0, 0))[:2])
        return torch.tensor(im.getpixel((0, 0)), dtype=torch.float32)

    pixels = D.load_pixels(files, preprocess)
    assert calls == [] and len(pixels) == 3  # only the headers were read
    assert pixels[1].tolist() == [0.0, 255.0, 0.0] and pixels[0:2].shape == (2, 3) and len(calls) == 3
    files[2].write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"c\.png cannot be read as an image"):
        D.load_pixels(files, preprocess)
    files[2].unlink()
    with pytest.raises(ValueError, match=r"c\.png does not exist"):
        D.load_pixels(files, preprocess)
