"""The static memory estimate: parameter counts from config.json / safetensors / declared params,
and the parts of the estimate, checked against hand-computed values."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from ftc.compiler import estimate as est
from ftc.compiler.docs import compose_example
from ftc.compiler.rules.resources import needed_examples


def _spec(check_text, snippet: str):  # type: ignore[no-untyped-def]
    result = check_text(compose_example(snippet))
    assert result.checked is not None, [d.message for d in result.diagnostics]
    return result


def _write_config(folder: Path, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
           "vocab_size": 1000, **extra}
    (folder / "config.json").write_text(json.dumps(cfg))


def test_params_from_config_json(tmp_path: Path, check_text) -> None:  # type: ignore[no-untyped-def]
    _write_config(tmp_path / "models" / "tiny")
    r = _spec(check_text, 'model { modality text; base "models/tiny"; task classification; labels ["a", "b"] }')
    shape = est.model_shape(r.checked.spec.model, r.checked.base_dir)
    assert shape is not None and shape.source == "config.json"
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == (2, 64, 2, 128)
    assert shape.params == 2 * (4 * 64 * 64 + 2 * 64 * 128) + 1000 * 64


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


def test_declared_params_and_parts(check_text) -> None:  # type: ignore[no-untyped-def]
    r = _spec(check_text, "method full { }\n"
                          "train { epochs 1; learning_rate 2e-5; batch_size 1; precision fp32; "
                          "early_stopping patience 1 on val.loss; checkpoints keep 1 }")
    spec = r.checked.spec
    shape = est.model_shape(spec.model, r.checked.base_dir)
    assert shape is not None and shape.params == 110e6 and shape.source == "declared params"
    e = est.estimate(spec, shape, 512)
    assert e.weights == pytest.approx(110e6 * 4)
    assert e.gradients == pytest.approx(110e6 * 4)
    assert e.optimizer == pytest.approx(110e6 * 8)
    assert e.total == pytest.approx(e.weights + e.gradients + e.optimizer + e.activations + est.OVERHEAD)


def test_qlora_base_is_about_half_a_byte_per_param(check_text) -> None:  # type: ignore[no-untyped-def]
    r = _spec(check_text, "method qlora { rank 8 }")
    spec = r.checked.spec
    shape = est.model_shape(spec.model, r.checked.base_dir)
    e = est.estimate(spec, shape, 512)
    lora = e.trainable
    assert 0 < lora < 0.05 * shape.params
    assert e.weights == pytest.approx(110e6 * 0.52 + lora * 4)


def test_fsdp_shards_weights_gradients_and_optimizer(check_text) -> None:  # type: ignore[no-untyped-def]
    one = _spec(check_text, "method full { }\nbudget { gpu_memory 80GB }").checked.spec
    four = _spec(check_text, "method full { }\nbudget { gpu_memory 80GB; gpus 4; strategy fsdp }").checked.spec
    shape = est.model_shape(one.model, Path("."))
    a, b = est.estimate(one, shape, 512), est.estimate(four, shape, 512)
    assert b.weights == pytest.approx(a.weights / 4)
    assert b.optimizer == pytest.approx(a.optimizer / 4)
    assert b.activations == a.activations


def test_over_budget_diagnostic_shows_parts(check_text) -> None:  # type: ignore[no-untyped-def]
    r = check_text(compose_example(
        'model { modality text; base "hf:org/big"; revision "3f2a9c1"; task classification; '
        'labels ["a", "b"]; params 7B }\nmethod full { }\n'
        "train { epochs 3; learning_rate 2e-5; early_stopping patience 2 on val.loss; checkpoints keep 2 }\n"
        'eval { metric f1 macro; gate f1 >= 0.85 on test; gate regression <= 0.02 vs base on "g.jsonl" }'))
    [d] = [d for d in r.diagnostics if d.code == "FT160"]
    assert "exceeds the budget of 24.0 GB" in d.message
    for part in ("weights", "gradients", "optimizer state", "activations", "7.00B params"):
        assert part in d.detail
    assert "qlora" in d.help and d.span is not None and d.span.line > 1


def test_needed_examples_rule_of_three() -> None:
    assert needed_examples(0.99) == 299
    assert needed_examples(0.95) == 59
    assert needed_examples(0.5) == 5
