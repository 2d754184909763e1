"""The memory estimate's freeze/unfreeze count (compiler/estimate.py, compiler/weights.py) against
what the runtime trains: tiny Llama and Mixtral models built from configs and saved as a shipped
checkpoint, then loaded as `ftc run` loads them and frozen by the text backend's own rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftc.compiler import estimate as est
from ftc.compiler import schema as s
from ftc.compiler import weights as wt

torch = pytest.importorskip("torch")

DIMS = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "tie_word_embeddings": False}
PATTERNS = [((), ("layers.1",)), ((), ("layers.2.mlp", "lm_head")), (("self_attn", "norm"), ()),
            (("layers.0",), ("layers.0", "layers.2.self_attn")), (("q_proj",), ("embed_tokens", "layers.1"))]
MOE_PATTERNS = [*PATTERNS, ((), ("layers.1.mlp.experts",)), (("mlp.gate",), ("mlp",))]


def _save(kind: str, folder: Path) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**DIMS))
    else:
        model = MixtralForCausalLM(MixtralConfig(**DIMS, num_local_experts=3, num_experts_per_tok=2))
    model.save_pretrained(folder)
    return folder


def _runtime_trainable(folder: Path, method: s.FullMethod) -> int:
    from ftc.runtime.backends import text
    from transformers import AutoModelForCausalLM

    model = text._full(AutoModelForCausalLM.from_pretrained(folder), method)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _shape(folder: Path) -> est.Shape:
    shape = est.model_shape(s.Model(base=str(folder)), folder.parent)
    assert shape is not None
    return shape


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_estimate_counts_what_the_runtime_trains(tmp_path: Path, kind: str) -> None:
    folder = _save(kind, tmp_path / kind)
    shape = _shape(folder)
    assert shape.layout == "safetensors"
    for freeze, unfreeze in MOE_PATTERNS if kind == "mixtral" else PATTERNS:
        method = s.FullMethod(kind="full", freeze=freeze, unfreeze=unfreeze)
        counted, note = est.trainable_params(method, shape)
        assert counted == _runtime_trainable(folder, method), (freeze, unfreeze)
        assert "counted from the safetensors headers" in note


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_the_layout_from_config_names_the_runtime_parameters(tmp_path: Path, kind: str) -> None:
    """Without weights the layout laid out from config.json carries the loaded model's parameter
    names and sizes (norms included), so patterns select there what they select at run time."""
    from transformers import AutoModelForCausalLM

    folder = _save(kind, tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    shape = _shape(folder)
    assert shape.layout == "config.json"
    sizes: dict[str, int] = {}
    for t in shape.tensors:
        sizes[t.names[-1]] = sizes.get(t.names[-1], 0) + t.numel  # experts: one fused parameter per layer
    assert sizes == {n: p.numel() for n, p in model.named_parameters()}


def test_name_matches_is_the_runtime_rule() -> None:
    from ftc.runtime.backends.text import name_matches

    names = ["model.layers.1.mlp.experts.gate_up_proj", "model.layers.10.self_attn.q_proj.weight", "lm_head.weight",
             "bert.embeddings.word_embeddings.weight", "classifier.bias"]
    patterns = ["layers.1", "layers.1*", "mlp", "*.q_proj.*", "bert.embeddings", "bias", "lm_head.weight", "experts"]
    for n in names:
        for p in patterns:
            assert wt.name_matches(n, p) == name_matches(n, p), (n, p)
