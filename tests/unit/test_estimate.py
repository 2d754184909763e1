"""The static memory estimate: parameter counts from config.json / safetensors / declared params,
the parts of the estimate against hand-computed values, and the whole estimate against the peaks
measured on an H100 (bench/results/memory_estimate_h100.json, bench/memory_estimate.py)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import struct
import sys
from pathlib import Path

import pytest
from ftc.compiler import estimate as est
from ftc.compiler.docs import compose_example
from ftc.compiler.rules.resources import needed_examples

from tests.conftest import ROOT

LLAMA = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
         "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
         "hidden_act": "silu", "dtype": "bfloat16"}  # SmolLM-135M's shape


def _spec(check_text, snippet: str):  # type: ignore[no-untyped-def]
    result = check_text(compose_example(snippet))
    assert result.checked is not None, [d.message for d in result.diagnostics]
    return result


def _write_config(folder: Path, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
           "vocab_size": 1000, **extra}
    (folder / "config.json").write_text(json.dumps(cfg))


def _write_header(folder: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for name, (dtype, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)


def _local(check_text, tmp_path: Path, cfg: dict[str, object], snippet: str = "",  # type: ignore[no-untyped-def]
           task: str = "generation"):
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    labels = '; labels ["a", "b"]' if task == "classification" else ""
    r = _spec(check_text, f'model {{ modality text; base "models/m"; task {task}{labels} }}\n{snippet}')
    spec = r.checked.spec
    shape = est.model_shape(spec.model, r.checked.base_dir)
    assert shape is not None
    return spec, shape


def test_params_from_config_json(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    _write_config(tmp_path / "models" / "tiny")
    r = _spec(check_text, 'model { modality text; base "models/tiny"; task classification; labels ["a", "b"] }')
    shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
    assert shape is not None and shape.source == "config.json"
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == (2, 64, 2, 128)
    assert shape.params == 2 * (4 * 64 * 64 + 2 * 64 * 128) + 1000 * 64
    assert not shape.gated and shape.dtype_bytes is None


def test_grouped_query_attention_and_gated_mlp_count(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    check_text) -> None:
    _, shape = _local(check_text, tmp_path, LLAMA)
    assert shape.gated and shape.kv_dim == 3 * 64 and shape.dtype_bytes == 2.0
    # SmolLM-135M has 134,515,008 parameters; all but its norms (35,136) are counted from the config
    assert shape.params == 134_515_008 - 30 * 2 * 576 - 576


def test_plain_mlp_fp32_checkpoint_and_unfused_activation(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          check_text) -> None:
    gpt2 = {"model_type": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16, "n_inner": None,
            "vocab_size": 50257, "activation_function": "gelu_new", "torch_dtype": "float32"}
    spec, shape = _local(check_text, tmp_path, gpt2, "method lora { rank 8 }\ntrain { epochs 1; batch_size 4 }")
    assert (shape.ffn, shape.kv_dim, shape.gated, shape.unfused_act, shape.dtype_bytes) == (4096, 1024, False,
                                                                                          True, 4.0)
    fused, fused_shape = _local(check_text, tmp_path, {**gpt2, "activation_function": "gelu"},
                                "method lora { rank 8 }\ntrain { epochs 1; batch_size 4 }")
    assert not fused_shape.unfused_act
    per_token_layer = (est.estimate(spec, shape, 1024).activations
                       - est.estimate(fused, fused_shape, 1024).activations) / (4 * 1024 * 24)
    assert per_token_layer == pytest.approx(10.5 * 4096)


def test_params_from_safetensors_header(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "models" / "tiny"
    _write_config(folder)
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a.weight": {"dtype": "F32", "shape": [10, 20], "data_offsets": [0, 800]},
                         "b.bias": {"dtype": "F32", "shape": [7], "data_offsets": [800, 828]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 828)
    r = _spec(check_text, 'model { modality text; base "models/tiny"; task classification; labels ["a", "b"] }')
    shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
    assert shape is not None and shape.source == "safetensors" and shape.params == 207
    assert shape.dtype_bytes == 4.0  # no dtype in config.json: the checkpoint's own


def test_a_timm_folder_is_counted_from_its_weights(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    """timm's and open_clip's config files do not give a transformer's shape: the parameter count
    comes from the safetensors header, so the memory check needs no declared `params`."""
    folder = tmp_path / "models" / "cnn"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "convnext_atto", "num_classes": 3,
                                                    "pretrained_cfg": {"input_size": [3, 224, 224]}}))
    _write_header(folder, {"stem.weight": ("F32", [40, 3, 4, 4]), "head.fc.weight": ("F32", [3, 320]),
                           "head.fc.bias": ("F32", [3])})
    r = _spec(check_text, 'model { modality vision; base "models/cnn"; task image_classification; '
                          'labels ["clean", "scratch", "spot"] }\nbudget { gpu_memory 1GB }')
    shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
    assert shape is not None and shape.params == 40 * 3 * 16 + 3 * 320 + 3 and shape.dtype_bytes == 4.0
    assert shape.source.startswith("safetensors")
    assert "FT161" not in {d.code for d in r.diagnostics}  # the budget is checked
    (folder / "model.safetensors").unlink()  # no weights and no declared count: the budget cannot be checked
    r = _spec(check_text, 'model { modality vision; base "models/cnn"; task image_classification; '
                          'labels ["clean", "scratch", "spot"] }\nbudget { gpu_memory 1GB }')
    assert "FT161" in {d.code for d in r.diagnostics}


def test_weight_dtype_config_then_header_then_size(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    _write_header(folder, {"w": ("BF16", [1000, 1000])})
    _, shape = _local(check_text, tmp_path, {**LLAMA, "dtype": None, "torch_dtype": "float32"})
    assert shape.dtype_bytes == 4.0 and est.weight_bytes(shape) == 4.0  # config.json wins (transformers' "auto")
    _, shape = _local(check_text, tmp_path, {**LLAMA, "dtype": None})
    assert shape.dtype_bytes == 2.0  # else the first tensor of the checkpoint
    small = est.Shape(110e6, 12, 768, 12, 3072, "declared params")
    big = est.Shape(7e9, 32, 4096, 32, 11008, "declared params")
    assert est.weight_bytes(small) == 4.0 and est.weight_bytes(big) == 2.0  # unknown: by size


def test_declared_params_and_parts(check_text) -> None:  # type: ignore[no-untyped-def]
    r = _spec(check_text, "method full { }\n"
                          "train { epochs 1; learning_rate 2e-5; batch_size 1; precision fp32; "
                          "early_stopping patience 1 on val.loss; checkpoints keep 1 }")
    spec = r.checked.spec
    shape = est.model_shape(spec.model, r.checked.base_dir)
    assert shape is not None and shape.params == 110e6 and shape.source == "declared params"
    e = est.estimate(spec, shape, 512)
    # 110M declared: taken as fp32; AdamW keeps two fp32 moments and needs one more buffer in its step
    assert e.weights == pytest.approx(110e6 * 4)
    assert e.gradients == pytest.approx(110e6 * 4)
    assert e.optimizer == pytest.approx(110e6 * 12)
    allocated = e.weights + e.gradients + e.optimizer + e.activations
    assert e.overhead == pytest.approx(est.OVERHEAD + est.FRAGMENTATION * allocated)
    assert e.total == pytest.approx(allocated + e.overhead)


def test_full_bf16_checkpoint_trains_in_16_bits(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    spec, shape = _local(check_text, tmp_path, LLAMA, "method full { }\n"
                         "train { epochs 1; batch_size 1; gradient_checkpointing true; checkpoints keep 1 }")
    e = est.estimate(spec, shape, 512)
    p = shape.params
    assert (e.weights, e.gradients, e.optimizer) == (pytest.approx(2 * p), pytest.approx(2 * p), pytest.approx(6 * p))
    assert e.activations == 0  # short and checkpointed: the optimizer step is the peak
    longer = est.estimate(spec, shape, 16384)
    assert longer.activations > 0 and longer.total > e.total


def test_activations_grow_with_tokens_and_shrink_with_checkpointing(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    check_text) -> None:
    spec, shape = _local(check_text, tmp_path, LLAMA, "method lora { rank 8 }\ntrain { epochs 1; batch_size 4 }")
    a, b = est.estimate(spec, shape, 512), est.estimate(spec, shape, 2048)
    assert b.activations > 3.5 * a.activations
    spec_gc, _ = _local(check_text, tmp_path, LLAMA, "method lora { rank 8 }\n"
                        "train { epochs 1; batch_size 4; gradient_checkpointing true }")
    assert est.estimate(spec_gc, shape, 2048).activations < b.activations / 4


def test_qlora_quantises_the_linear_layers_only(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    spec, shape = _local(check_text, tmp_path, LLAMA, "method qlora { rank 8 }")
    e = est.estimate(spec, shape, 512)
    lora = e.trainable
    assert 0 < lora < 0.05 * shape.params
    embeddings = 49152 * 576  # tied: once; upcast to fp32 by prepare_model_for_kbit_training
    assert e.weights == pytest.approx((shape.params - embeddings) * 0.516 + embeddings * 4 + lora * 4)
    single, _ = _local(check_text, tmp_path, LLAMA, "method qlora { rank 8; double_quant false }")
    assert est.estimate(single, shape, 512).weights > e.weights


def test_qlora_with_declared_params_assumes_a_vocabulary(check_text) -> None:  # type: ignore[no-untyped-def]
    r = _spec(check_text, "method qlora { rank 8 }")
    spec = r.checked.spec
    shape = est.model_shape(spec.model, r.checked.base_dir)
    assert shape is not None and 0 < shape.vocab <= est.DECLARED_VOCAB
    embeddings = shape.vocab * shape.hidden
    assert embeddings <= 0.2 * 110e6
    e = est.estimate(spec, shape, 512)
    assert e.weights - e.trainable * 4 == pytest.approx((110e6 - embeddings) * 0.516 + embeddings * 4)


def test_fsdp_shards_weights_gradients_and_optimizer(check_text) -> None:  # type: ignore[no-untyped-def]
    one = _spec(check_text, "method full { }\nbudget { gpu_memory 80GB }").checked.spec
    four = _spec(check_text, "method full { }\nbudget { gpu_memory 80GB; gpus 4; strategy fsdp }").checked.spec
    shape = est.model_shape(one.model, Path("."))
    a, b = est.estimate(one, shape, 512), est.estimate(four, shape, 512)
    assert b.weights == pytest.approx(a.weights / 4)
    assert b.optimizer == pytest.approx(a.optimizer / 4)
    assert b.gradients == pytest.approx(a.gradients / 4)
    assert b.total < a.total


def test_over_budget_diagnostic_shows_parts(check_text) -> None:  # type: ignore[no-untyped-def]
    r = check_text(compose_example(
        'model { modality text; base "hf:org/big"; revision "3f2a9c1"; task classification; '
        'labels ["a", "b"]; params 7B }\nmethod full { }\n'
        "train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }\n"
        'eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "g.jsonl" }'))
    [d] = [d for d in r.diagnostics if d.code == "FT160"]
    assert "exceeds the budget of 24.0 GB" in d.message
    for part in ("weights", "gradients", "optimizer state", "activations", "overhead", "7.00B params"):
        assert part in d.detail
    assert "qlora" in d.help and d.span is not None and d.span.line > 1


def _bench() -> object:
    path = ROOT / "bench" / "memory_estimate.py"
    spec = importlib.util.spec_from_file_location("memory_estimate_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "cases"), [("memory_estimate_h100.json", 135),
                                             ("memory_estimate_h100_holdout.json", 54)])
def test_estimate_covers_every_peak_measured_on_an_h100(name: str, cases: int) -> None:
    """Each measured case rebuilt as a spec and checked the way FT160 checks it: the estimate is at
    least the measured footprint (peak reserved + CUDA context) and not wildly above it. The second
    file holds models kept out of the calibration of the coefficients (GPT-2's then led to
    _UNFUSED_ACTS)."""
    bench = _bench()
    result = json.loads((ROOT / "bench" / "results" / name).read_text())
    estimates = bench.estimates(result)  # type: ignore[attr-defined]
    ratios = {c["id"]: estimates[c["id"]]["total"] / c["footprint"] for c in result["cases"] if c["status"] == "ok"}
    assert len(ratios) == cases
    under = {k: round(v, 3) for k, v in ratios.items() if v < 1}
    assert not under, under
    assert statistics.median(ratios.values()) < 1.2
    assert max(ratios.values()) < 1.5
    big = [v for k, v in ratios.items() if next(c for c in result["cases"] if c["id"] == k)["footprint"] > 8e9]
    assert max(big) < 1.2  # the fixed overhead weighs on small runs only
    card = result["env"]["gpu_total"]
    for c in result["cases"]:
        if c["status"] == "oom":  # what did not fit is estimated over the card
            assert estimates[c["id"]]["total"] > card, c["id"]


def test_vision_estimate_covers_every_footprint_measured_on_an_h100() -> None:
    """timm classifiers (resnet18/50, convnext_tiny, vit_small; full and LoRA; batch 8 and 32) trained by
    ftc's vision backend on an H100, rebuilt as specs and estimated as FT160 does: never under the
    measured footprint (before _IMAGE_ACT, convnext_tiny at batch 32 and resnet50 LoRA were)."""
    path = ROOT / "bench" / "memory_vision.py"
    spec = importlib.util.spec_from_file_location("memory_vision_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    result = json.loads((ROOT / "bench" / "results" / "memory_vision_h100.json").read_text())
    estimates = bench.estimates(result)  # type: ignore[attr-defined]
    ratios = {c["id"]: estimates[c["id"]]["total"] / c["footprint"] for c in result["cases"] if c["status"] == "ok"}
    assert len(ratios) == 16
    under = {k: round(v, 3) for k, v in ratios.items() if v < 1}
    assert not under, under
    assert statistics.median(ratios.values()) < 1.4 and max(ratios.values()) < 1.7


def test_needed_examples_rule_of_three() -> None:
    assert needed_examples(0.99) == 299
    assert needed_examples(0.95) == 59
    assert needed_examples(0.5) == 5
