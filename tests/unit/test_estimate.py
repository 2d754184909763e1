"""The static memory estimate: parameter counts from config.json / safetensors / declared params,
the parts of the estimate against hand-computed values, and the whole estimate against the peaks
measured on an H100 (bench/results/memory_estimate_h100.json, bench/memory_estimate.py)."""

from __future__ import annotations

import importlib.util
import json
import math
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


# ---------------------------------------------------------------------------------------------
# Full fine-tunes with freeze/unfreeze (issue 9): trainable parameters are what the patterns select

def _tiny_llama_header(folder: Path) -> dict[str, tuple[str, list[int]]]:
    """A 2-layer Llama-style checkpoint as transformers saves it (untied head)."""
    tensors: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": ("BF16", [100, 64]),
                                                 "model.norm.weight": ("BF16", [64]),
                                                 "lm_head.weight": ("BF16", [100, 64])}
    for i in range(2):
        p = f"model.layers.{i}"
        tensors.update({f"{p}.self_attn.q_proj.weight": ("BF16", [64, 64]),
                        f"{p}.self_attn.k_proj.weight": ("BF16", [32, 64]),
                        f"{p}.self_attn.v_proj.weight": ("BF16", [32, 64]),
                        f"{p}.self_attn.o_proj.weight": ("BF16", [64, 64]),
                        f"{p}.mlp.gate_proj.weight": ("BF16", [96, 64]), f"{p}.mlp.up_proj.weight": ("BF16", [96, 64]),
                        f"{p}.mlp.down_proj.weight": ("BF16", [64, 96]),
                        f"{p}.input_layernorm.weight": ("BF16", [64]),
                        f"{p}.post_attention_layernorm.weight": ("BF16", [64])})
    folder.mkdir(parents=True, exist_ok=True)
    _write_header(folder, tensors)
    return tensors


SMALL_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "hidden_act": "silu",
               "tie_word_embeddings": False}
FULL_TRAIN = "train { epochs 1; batch_size 1; gradient_checkpointing true; checkpoints keep 1 }"


def test_freeze_patterns_count_exactly_the_matched_tensors(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    tensors = _tiny_llama_header(tmp_path / "models" / "m")
    method = 'method full { unfreeze ["layers.1", "lm_head"]; freeze ["layers.1.mlp.gate_proj", "*norm*"] }'
    spec, shape = _local(check_text, tmp_path, SMALL_LLAMA, f"{method}\n{FULL_TRAIN}")
    chosen = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
              "model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.o_proj.weight",
              "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"]
    expected = sum(math.prod(tensors[n][1]) for n in chosen)
    e = est.estimate(spec, shape, 512)
    assert shape.params == sum(math.prod(s) for _, s in tensors.values())
    assert e.trainable == expected and e.gradients == expected * 2.0  # bf16 weights train in bf16
    assert e.trainable_note == "7 of 21 tensors selected by freeze/unfreeze, counted from the safetensors headers"
    whole = est.estimate(_local(check_text, tmp_path, SMALL_LLAMA, f"method full {{ }}\n{FULL_TRAIN}")[0], shape, 512)
    assert whole.trainable == shape.params and whole.trainable_note == ""


def test_a_pattern_that_matches_no_tensor_is_noted(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    _tiny_llama_header(tmp_path / "models" / "m")
    spec, shape = _local(check_text, tmp_path, SMALL_LLAMA, f'method full {{ unfreeze ["layers.1", "h.0"] }}\n{FULL_TRAIN}')
    e = est.estimate(spec, shape, 512)
    assert e.trainable == 2 * 64 * 64 + 2 * 32 * 64 + 3 * 96 * 64 + 2 * 64
    assert "`h.0` matches no tensor (the run stops on it)" in e.trainable_note


def _mixtral_header(folder: Path, layers: int = 2, experts: int = 3) -> None:
    """A Mixtral checkpoint as saved: one tensor per expert under `block_sparse_moe`."""
    tensors: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": ("BF16", [100, 64])}
    for i in range(layers):
        p = f"model.layers.{i}"
        tensors[f"{p}.self_attn.q_proj.weight"] = ("BF16", [64, 64])
        tensors[f"{p}.block_sparse_moe.gate.weight"] = ("BF16", [experts, 64])
        for j in range(experts):
            for w, shape in (("w1", [96, 64]), ("w2", [64, 96]), ("w3", [96, 64])):
                tensors[f"{p}.block_sparse_moe.experts.{j}.{w}.weight"] = ("BF16", shape)
    folder.mkdir(parents=True, exist_ok=True)
    _write_header(folder, tensors)


MIXTRAL_SMALL = {**SMALL_LLAMA, "model_type": "mixtral", "num_local_experts": 3, "num_experts_per_tok": 2}


def test_moe_checkpoint_patterns_match_the_loaded_names_and_the_saved_ones(  # type: ignore[no-untyped-def]
        tmp_path: Path, check_text) -> None:
    """Transformers 5 loads a Mixtral checkpoint's experts fused (`mlp.experts.gate_up_proj`): a
    pattern on the names the runtime matches selects them, and so does one on the saved names."""
    _mixtral_header(tmp_path / "models" / "m")
    expert = 3 * 96 * 64
    for pattern, expected in (("layers.1.mlp.experts", 3 * expert), ("layers.1.mlp", 3 * expert + 3 * 64),
                              ("layers.1.block_sparse_moe.experts.0", expert)):
        spec, shape = _local(check_text, tmp_path, MIXTRAL_SMALL, f'method full {{ unfreeze ["{pattern}"] }}\n{FULL_TRAIN}')
        assert est.estimate(spec, shape, 512).trainable == expected, pattern


MIXTRAL_8X22B = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 6144,
                 "intermediate_size": 16384, "num_hidden_layers": 56, "num_attention_heads": 48,
                 "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32768,
                 "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
ZERO3 = "budget { gpu_memory 80GB; gpus 8; strategy deepspeed; deepspeed_stage 3 }"


def test_freeze_tuning_a_141b_moe_under_zero3_fits(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    """The issue's case: four MoE layers' experts of a Mixtral-8x22B-shaped model (config.json
    only, no weights) on 8 x 80 GB under ZeRO-3. Counting all 141B parameters as trainable
    refused it; the experts of four layers are 9.66B."""
    folder = tmp_path / "models" / "mixtral"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(MIXTRAL_8X22B))
    layers = ", ".join(f'"layers.{i}.mlp.experts"' for i in (52, 53, 54, 55))

    def check(method: str):  # type: ignore[no-untyped-def]
        r = _spec(check_text, f'model {{ modality text; base "models/mixtral"; task generation }}\n{method}\n'
                              f"{FULL_TRAIN}\n{ZERO3}")
        shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
        assert shape is not None
        return r, est.estimate(r.checked.spec, shape, 512)

    everything, e_all = check("method full { }")
    assert "FT160" in {d.code for d in everything.diagnostics} and e_all.trainable > 140e9
    tuned, e = check(f"method full {{ unfreeze [{layers}] }}")
    assert "FT160" not in {d.code for d in tuned.diagnostics}, [d.message for d in tuned.diagnostics]
    assert e.trainable == 4 * 8 * 3 * 6144 * 16384  # 4 layers x 8 experts x (w1, w2, w3)
    assert e.trainable_note.startswith("approximate: freeze/unfreeze matched against the Llama-style module names")
    assert e.total < 80e9 < e_all.total


def test_declared_params_freeze_is_approximate_or_says_it_counts_everything(check_text) -> None:  # type: ignore[no-untyped-def]
    def estimate(method: str) -> est.Estimate:
        r = _spec(check_text, 'model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; task generation; '
                              f"params 7B }}\n{method}\n{FULL_TRAIN}")
        shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
        assert shape is not None and shape.layout == "params"
        return est.estimate(r.checked.spec, shape, 512)

    one = estimate('method full { unfreeze ["layers.0"] }')
    layers = est.model_shape(_spec(check_text, 'model { modality text; base "hf:org/decoder"; revision "3f2a9c1"; '
                                               "task generation; params 7B }").checked.spec.model, Path(".")).layers
    assert 0 < one.trainable < 7e9 / layers and one.trainable_note.startswith("approximate:")
    unknown = estimate('method full { unfreeze ["transformer.h.0"] }')
    assert unknown.trainable == 7e9
    assert unknown.trainable_note.startswith("every parameter counted as trainable: `transformer.h.0` names no module")
