"""The base model read from its folder without torch (compiler/basemodel.py; FT156, FT157, FT158),
on the shipped examples' real tiny models (a BERT, a GPT-2, an open_clip CLIP, a timm ConvNeXt)
copied into tmp_path with one thing changed."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from ftc.compiler import basemodel as bm
from ftc.compiler.check import CheckOptions, FileResult, check_file

from tests.conftest import ROOT

MINE = {"FT154", "FT155", "FT156", "FT157", "FT158"}


def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, edits: dict[str, str]) -> FileResult:
    """specs/<name> copied into tmp_path (with the team defaults), its spec text edited, checked."""
    shutil.copytree(ROOT / "specs" / name, tmp_path / "specs" / name)
    shutil.copy(ROOT / "specs" / "team-defaults.ftspec", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    spec = tmp_path / "specs" / name / f"{name}.ftspec"
    text = spec.read_text(encoding="utf-8")
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    spec.write_text(text, encoding="utf-8")
    return check_file(spec.relative_to(tmp_path), CheckOptions())


def mine(result: FileResult) -> list[str]:
    return [d.code for d in result.diagnostics if d.code in MINE]


def bert_model(tmp_path: Path) -> Path:
    return tmp_path / "specs" / "ticket-triage" / "models" / "tiny-bert"


# --- FT156: module names ------------------------------------------------------------------------

def test_distilbert_targets_on_a_bert_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: `targets ["q_lin", "v_lin"]` on a local BERT passed check; the run then failed in
    training with peft's NoMatchingPeftModuleError, after the base evaluation."""
    result = example(tmp_path, monkeypatch, "ticket-triage", {'targets ["query", "value"]': 'targets ["q_lin", "v_lin"]'})
    hits = [d for d in result.diagnostics if d.code == "FT156"]
    assert [d.message for d in hits] == ["LoRA target `q_lin` matches no module of the base",
                                         "LoRA target `v_lin` matches no module of the base"]
    assert [d.span.column for d in hits if d.span] == [14, 23]  # each string, in `targets ["q_lin", "v_lin"]`
    assert all("`query`" in d.help and "`value`" in d.help and "`key`" in d.help for d in hits) and not result.ok


def test_one_bad_target_beside_a_good_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """peft adapts `query` and silently skips `valu` (a warning at most): check refuses it."""
    result = example(tmp_path, monkeypatch, "ticket-triage", {'targets ["query", "value"]': 'targets ["query", "valu"]'})
    [d] = [d for d in result.diagnostics if d.code == "FT156"]
    assert "`valu`" in d.message and d.help.startswith("did you mean `value`?")


def test_a_container_or_a_norm_is_not_a_lora_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = example(tmp_path, monkeypatch, "ticket-triage",
                     {'targets ["query", "value"]': 'targets ["attention", "LayerNorm", "dense", "bert.encoder.layer.0.attention.self.query"]'})
    messages = [d.message for d in result.diagnostics if d.code == "FT156"]
    assert len(messages) == 2
    assert "`attention` names `bert.encoder.layer.0.attention`" in messages[0]
    assert "`LayerNorm` names `bert.embeddings.LayerNorm`" in messages[1]


def test_gpt2_conv1d_targets_and_a_tied_lm_head_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = example(tmp_path, monkeypatch, "reply-tone",
                     {'targets ["c_attn", "c_proj"]': 'targets ["c_attn", "c_proj", "lm_head"]'})
    assert mine(result) == []
    bad = example(tmp_path / "2", monkeypatch, "reply-tone", {'targets ["c_attn", "c_proj"]': 'targets ["q_proj"]'})
    assert mine(bad) == ["FT156"]


def test_full_method_patterns_are_matched_as_the_runtime_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = "method lora {\n    rank 8\n    alpha 16\n    dropout 0.1\n    targets [\"query\", \"value\"]\n  }"
    ok = example(tmp_path, monkeypatch, "ticket-triage",
                 {method: 'method full { freeze ["embeddings", "layer.0", "bias"]; unfreeze ["bert.encoder", "classifier"] }'})
    assert mine(ok) == []
    bad = example(tmp_path / "2", monkeypatch, "ticket-triage", {method: 'method full { freeze ["embedings"] }'})
    [d] = [d for d in bad.diagnostics if d.code == "FT156"]
    assert d.message == "`freeze` pattern `embedings` matches no parameter of the base"
    assert d.help.startswith("did you mean `embeddings`?")
    none = example(tmp_path / "3", monkeypatch, "ticket-triage", {method: 'method full { freeze ["bert", "classifier"] }'})
    assert [d.message for d in none.diagnostics if d.code == "FT156"] == [
        "`freeze`/`unfreeze` leave no parameter of the base to train"]


def test_open_clip_targets_follow_the_multimodal_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lora = "method lora {\n    rank 8\n    alpha 16\n  }"
    ok = example(tmp_path, monkeypatch, "icon-search", {lora: 'method lora { rank 8; alpha 16; targets ["c_fc", "c_proj"] }'})
    assert mine(ok) == []
    mha = example(tmp_path / "2", monkeypatch, "icon-search", {lora: 'method lora { rank 8; alpha 16; targets ["out_proj"] }'})
    [d] = [d for d in mha.diagnostics if d.code == "FT156"]
    assert "only the out_proj of nn.MultiheadAttention" in d.message and "`c_fc`" in d.help
    emb = example(tmp_path / "3", monkeypatch, "icon-search",
                  {lora: 'method lora { rank 8; alpha 16; targets ["token_embedding", "ln_1"] }'})
    assert [d.message.split(":")[0] for d in emb.diagnostics if d.code == "FT156"] == [
        "LoRA target `token_embedding` names no Linear layer", "LoRA target `ln_1` names no Linear layer"]


def test_vision_targets_skip_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lora = "method lora {\n    rank 4\n    alpha 8\n  }"
    ok = example(tmp_path, monkeypatch, "defect-inspection",
                 {lora: 'method lora { rank 4; alpha 8; targets ["fc1", "fc2", "head.fc"] }'})
    assert mine(ok) == []
    bad = example(tmp_path / "2", monkeypatch, "defect-inspection",
                  {lora: 'method lora { rank 4; alpha 8; targets ["stages", "conv"] }'})
    assert len([d for d in bad.diagnostics if d.code == "FT156"]) == 2


def test_a_sharded_checkpoint_is_read_from_its_shards(tmp_path: Path) -> None:
    with (ROOT / "specs" / "ticket-triage" / "models" / "tiny-bert" / "model.safetensors").open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    names = sorted(n for n in header if n != "__metadata__")
    half = len(names) // 2
    for i, part in enumerate((names[:half], names[half:])):
        raw = json.dumps({n: header[n] for n in part}).encode()
        (tmp_path / f"model-0000{i + 1}-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    index = {"weight_map": {n: f"model-0000{1 + (n in names[half:])}-of-00002.safetensors" for n in names}}
    (tmp_path / bm.INDEX).write_text(json.dumps(index))
    mods = bm.modules(tmp_path)
    assert mods is not None and set(mods.params) == {n for n in names if not n.endswith("num_batches_tracked")}
    assert "bert.encoder.layer.1.attention.self.value" in mods.names and mods.is_layer("bert.pooler.dense")
    assert not mods.is_layer("bert.encoder") and not mods.is_layer("bert.embeddings.LayerNorm")


def test_an_unreadable_header_is_no_names_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8 + b"{")
    assert bm.modules(tmp_path) is None and bm.modules(tmp_path / "absent") is None


# --- FT157: files the run loads -----------------------------------------------------------------

@pytest.mark.parametrize(("removed", "codes"), [
    (("tokenizer.json",), []),  # vocab.txt is a WordPiece vocabulary: the tokenizer is built from it
    (("tokenizer.json", "vocab.txt"), ["FT157"]),  # transformers would build an empty-vocabulary tokenizer
    (("config.json",), ["FT157"]),
    (("model.safetensors",), ["FT157"]),
])
def test_text_base_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed: tuple[str, ...],
                         codes: list[str]) -> None:
    shutil.copytree(ROOT / "specs" / "ticket-triage", tmp_path / "specs" / "ticket-triage")
    for name in removed:
        (bert_model(tmp_path) / name).unlink()
    shutil.copy(ROOT / "specs" / "team-defaults.ftspec", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    result = check_file(Path("specs/ticket-triage/ticket-triage.ftspec"), CheckOptions())
    assert [c for c in mine(result) if c == "FT157"] == codes
    if codes:
        [d] = [d for d in result.diagnostics if d.code == "FT157"]
        assert d.message.startswith("the base `models/tiny-bert` has no ")


# --- FT158: the head and the labels -------------------------------------------------------------

LABELS = 'labels ["billing", "bug", "account", "shipping"]'


def test_a_head_with_another_label_count_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = example(tmp_path, monkeypatch, "ticket-triage", {LABELS: 'labels ["billing", "bug", "account"]'})
    [d] = [d for d in result.diagnostics if d.code == "FT158"]
    assert d.severity.value == "warning" and "4 classes and the spec 3 labels" in d.message
    assert d.detail == "the base's classes: billing, bug, account, shipping"


def test_a_head_in_another_order_warns_with_the_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = example(tmp_path, monkeypatch, "ticket-triage", {LABELS: 'labels ["bug", "billing", "account", "shipping"]'})
    [d] = [d for d in result.diagnostics if d.code == "FT158"]
    assert "in another order" in d.message
    assert d.help == 'write the labels in the head\'s order: `labels ["billing", "bug", "account", "shipping"]`'


def test_the_same_labels_or_a_headless_base_are_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mine(example(tmp_path, monkeypatch, "ticket-triage", {})) == []
    cfg_path = bert_model(tmp_path) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "architectures": ["BertForMaskedLM"]}))
    result = check_file(Path("specs/ticket-triage/ticket-triage.ftspec"), CheckOptions())
    assert mine(result) == []
