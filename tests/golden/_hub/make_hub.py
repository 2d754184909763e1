"""Writes this folder: a Hugging Face hub cache (huggingface_hub's layout) of fake models for the tests.

tests/unit/conftest.py points HF_HUB_CACHE here, so that the specs of the unit and golden tests
that name `hf:org/encoder` (and the other repositories below) at revision `3f2a9c1` find their
base in the cache, as `ftc check` requires (FT154), without a network. Each snapshot holds what
`ftc check` reads of a base: config.json, a header-only model.safetensors (tensor names and
shapes of the real architecture, no weights: nothing can train on these), a stub tokenizer.json.
Run `python tests/golden/_hub/make_hub.py` after changing it, and commit the result.

  org/encoder        BERT-base shapes (BertForMaskedLM), 110M parameters
  org/decoder        GPT-2 small shapes (GPT2LMHeadModel), 124M
  org/big            the encoder's files under another name
  org/classifier     BERT-base with a trained 2-class head (billing, bug): BertForSequenceClassification
  org/no-tokenizer   BERT-base without tokenizer files
  org/twins          two snapshots whose shas share the prefix abcdef1 (an ambiguous short revision)
  org/pickled        BERT-base config with a pickled pytorch_model.bin (a stub: never unpickled) and no safetensors
  org/remote-code    BERT-base whose config.json maps its classes to the snapshot's own .py files (`auto_map`)

It also writes tests/golden/files/model_timm: a local timm folder (ResNet-18 shapes, a 2-class
head `fc` for cat and dog) for the golden cases and the rule-documentation tests of vision specs.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHA = "3f2a9c1" + "0" * 33
TOKENIZER = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "[PAD]": 1}, "unk_token": "[UNK]"}}


def bert(head: int | None = None) -> tuple[dict[str, Any], dict[str, list[int]]]:
    h, layers, ffn, vocab = 768, 12, 3072, 30522
    cfg: dict[str, Any] = {"architectures": ["BertForSequenceClassification" if head else "BertForMaskedLM"],
                           "model_type": "bert", "hidden_size": h, "num_hidden_layers": layers,
                           "num_attention_heads": 12, "intermediate_size": ffn, "vocab_size": vocab,
                           "max_position_embeddings": 512, "type_vocab_size": 2}
    t: dict[str, list[int]] = {"bert.embeddings.word_embeddings.weight": [vocab, h],
                               "bert.embeddings.position_embeddings.weight": [512, h],
                               "bert.embeddings.token_type_embeddings.weight": [2, h],
                               "bert.embeddings.LayerNorm.weight": [h], "bert.embeddings.LayerNorm.bias": [h]}
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for name, shape in (("attention.self.query", [h, h]), ("attention.self.key", [h, h]),
                            ("attention.self.value", [h, h]), ("attention.output.dense", [h, h]),
                            ("intermediate.dense", [ffn, h]), ("output.dense", [h, ffn])):
            t[p + name + ".weight"], t[p + name + ".bias"] = shape, [shape[0]]
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"], t[p + norm + ".bias"] = [h], [h]
    t["bert.pooler.dense.weight"], t["bert.pooler.dense.bias"] = [h, h], [h]
    if head:
        cfg["id2label"] = {"0": "billing", "1": "bug"}
        cfg["label2id"] = {"billing": 0, "bug": 1}
        t["classifier.weight"], t["classifier.bias"] = [head, h], [head]
    else:
        t["cls.predictions.transform.dense.weight"], t["cls.predictions.transform.dense.bias"] = [h, h], [h]
        t["cls.predictions.transform.LayerNorm.weight"] = t["cls.predictions.transform.LayerNorm.bias"] = [h]
        t["cls.predictions.bias"] = [vocab]
    return cfg, t


def gpt2() -> tuple[dict[str, Any], dict[str, list[int]]]:
    h, layers, vocab = 768, 12, 50257
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": h, "n_layer": layers,
           "n_head": 12, "vocab_size": vocab, "n_positions": 1024}
    t: dict[str, list[int]] = {"transformer.wte.weight": [vocab, h], "transformer.wpe.weight": [1024, h],
                               "transformer.ln_f.weight": [h], "transformer.ln_f.bias": [h]}
    for i in range(layers):
        p = f"transformer.h.{i}."
        for name, shape in (("attn.c_attn", [h, 3 * h]), ("attn.c_proj", [h, h]), ("mlp.c_fc", [h, 4 * h]),
                            ("mlp.c_proj", [4 * h, h])):
            t[p + name + ".weight"], t[p + name + ".bias"] = shape, [shape[1]]
        for norm in ("ln_1", "ln_2"):
            t[p + norm + ".weight"], t[p + norm + ".bias"] = [h], [h]
    return cfg, t


def resnet18() -> tuple[dict[str, Any], dict[str, list[int]]]:
    cfg = {"architecture": "resnet18", "num_classes": 2, "num_features": 512, "label_names": ["cat", "dog"],
           "pretrained_cfg": {"input_size": [3, 224, 224], "first_conv": "conv1", "classifier": "fc"}}
    t: dict[str, list[int]] = {"conv1.weight": [64, 3, 7, 7], "fc.weight": [2, 512], "fc.bias": [2]}

    def bn(name: str, c: int) -> None:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            t[f"{name}.{leaf}"] = [c]
        t[f"{name}.num_batches_tracked"] = []

    bn("bn1", 64)
    c_in = 64
    for stage, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}."
            t[p + "conv1.weight"], t[p + "conv2.weight"] = [c, c_in, 3, 3], [c, c, 3, 3]
            bn(p + "bn1", c)
            bn(p + "bn2", c)
            if c_in != c:
                t[p + "downsample.0.weight"] = [c, c_in, 1, 1]
                bn(p + "downsample.1", c)
            c_in = c
    return cfg, t


def header_only(tensors: dict[str, list[int]]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors.items()):
        n = math.prod(shape) * 4  # a scalar's shape [] holds one value
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw


def snapshot(repo: str, sha: str, model: tuple[dict[str, Any], dict[str, list[int]]], tokenizer: bool = True,
             ref: str | None = "main", extra: dict[str, str] | None = None, weights: str = "model.safetensors") -> None:
    folder = HERE / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "config.json").write_text(json.dumps(model[0], indent=1) + "\n")
    # a pickle stub: the bytes a zip-format torch.save starts with, nothing that unpickles
    (snap / weights).write_bytes(header_only(model[1]) if weights.endswith(".safetensors") else b"PK\x03\x04stub")
    for name, text in (extra or {}).items():
        (snap / name).write_text(text)
    if tokenizer:
        (snap / "tokenizer.json").write_text(json.dumps(TOKENIZER) + "\n")
    if ref is not None:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(sha)  # huggingface_hub writes the sha without a newline


def main() -> None:
    for old in HERE.glob("models--*"):
        shutil.rmtree(old)
    snapshot("org/encoder", SHA, bert())
    snapshot("org/big", SHA, bert())
    snapshot("org/decoder", SHA, gpt2())
    snapshot("org/classifier", SHA, bert(head=2))
    snapshot("org/no-tokenizer", SHA, bert(), tokenizer=False)
    snapshot("org/twins", "abcdef1" + "1" * 33, bert())
    snapshot("org/twins", "abcdef1" + "2" * 33, bert(), ref=None)
    snapshot("org/pickled", SHA, bert(), weights="pytorch_model.bin")
    cfg, tensors = bert()
    cfg["auto_map"] = {"AutoConfig": "configuration_remote.RemoteConfig", "AutoModel": "modeling_remote.RemoteModel"}
    snapshot("org/remote-code", SHA, (cfg, tensors), extra={
        "configuration_remote.py": "from transformers import BertConfig\n\n\nclass RemoteConfig(BertConfig):\n"
                                   "    model_type = \"remote\"\n",
        "modeling_remote.py": "from transformers import BertModel\n\n\nclass RemoteModel(BertModel):\n    pass\n"})
    timm = HERE.parent / "files" / "model_timm"
    timm.mkdir(exist_ok=True)
    cfg, tensors = resnet18()
    (timm / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (timm / "model.safetensors").write_bytes(header_only(tensors))


if __name__ == "__main__":
    main()
