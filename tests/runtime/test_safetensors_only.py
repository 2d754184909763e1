"""Weights load from safetensors only (issue 15): a base whose weights are pickles is refused by
`ftc check` (FT162, with the one-line conversion, which is run here and works), and the runtime
refuses to unpickle it when the check is bypassed (transformers, timm, peft adapters, open_clip's
choice of file, the executor's locate_base): `torch.load` is never called on a user's file."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ftc.compiler import basemodel
from ftc.compiler.check import CheckOptions, check_file

from tests.runtime.conftest import spec_text, ticket_rows, write_jsonl

torch = pytest.importorskip("torch")


def _pickle_only(src: Path, dst: Path) -> Path:
    """A copy of a saved model whose weights are torch.save'd (a pickle), with no safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    torch.save(load_file(str(dst / "model.safetensors")), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


@pytest.fixture
def pickled_bert(tmp_path: Path, tiny_bert: Path) -> Path:
    return _pickle_only(tiny_bert, tmp_path / "models" / "pickled-bert")


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every torch.load call is recorded and refused (transformers, timm and peft call it by attribute)."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"torch.load was called on {args[:1]}")

    monkeypatch.setattr(torch, "load", refuse)
    return calls


def _write_spec(folder: Path, base: Path) -> Path:
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        write_jsonl(folder / f"{name}.jsonl", ticket_rows(120 if name == "train" else 30, seed))
    text = spec_text(base=base, task="classification", method="lora { rank 4; alpha 8 }",
                     train="steps 2; batch_size 8; seed 7; checkpoints keep 1; early_stopping patience 2 on val.loss",
                     eval_="metric f1 macro; gate f1 >= 0.1 on test",
                     data='train "train.jsonl"; val "val.jsonl"; test "test.jsonl"')
    path = folder / "spec.ftspec"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_refuses_a_pickle_only_base_and_its_conversion_works(tmp_path: Path, pickled_bert: Path,
                                                                   tiny_bert: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, pickled_bert)
    result = check_file(spec, CheckOptions())
    hits = [d for d in result.diagnostics if d.code == "FT162"]
    assert len(hits) == 1 and not result.ok, [d.message for d in result.diagnostics]
    d = hits[0]
    assert "pytorch_model.bin" in d.message and d.span is not None and d.span.line == 3
    assert "FT157" not in {x.code for x in result.diagnostics}  # the pickle is named once, not as missing weights
    command = d.help.split("`")[1]
    assert command.startswith("python -c") and "BertForSequenceClassification" in command
    # the one-liner, run as the user would (with this interpreter), writes safetensors that check accepts
    argv = shlex.split(command)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    converted, original = load_file(str(pickled_bert / "model.safetensors")), load_file(str(tiny_bert / "model.safetensors"))
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)
    assert "FT162" not in {x.code for x in check_file(spec, CheckOptions()).diagnostics}


def test_the_runtime_refuses_to_unpickle_a_base_when_check_is_bypassed(tmp_path: Path, pickled_bert: Path,
                                                                       no_torch_load: list[Any]) -> None:
    from ftc.runtime.api import TrainContext
    from ftc.runtime.backends import loading
    from ftc.runtime.executor import DriftError, locate_base

    result = check_file(_write_spec(tmp_path, pickled_bert), CheckOptions())
    assert result.checked is not None and result.checked.data is not None
    ctx = TrainContext(result.checked, result.checked.data.parts, tmp_path / "run", lambda e: None)
    with pytest.raises(ValueError, match=r"pickles \(pytorch_model.bin\).*safetensors only"):
        loading.load_base(ctx)
    with pytest.raises(DriftError, match="pickles"):
        locate_base(result.checked, {"ref": str(pickled_bert)})
    assert no_torch_load == []


def test_transformers_is_asked_for_safetensors_only(pickled_bert: Path, no_torch_load: list[Any]) -> None:
    """What `use_safetensors=True` buys behind the folder check: transformers refuses the pickle."""
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForSequenceClassification.from_pretrained(str(pickled_bert), use_safetensors=True)
    assert no_torch_load == []


def test_a_pickled_peft_adapter_is_refused(tmp_path: Path) -> None:
    from ftc.runtime.backends.loading import require_peft_safetensors

    (tmp_path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "adapter_model.bin").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"no adapter_model.safetensors \(adapter_model.bin\)"):
        require_peft_safetensors(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    require_peft_safetensors(tmp_path)


def test_a_pickled_timm_base_is_refused_before_timm_loads_it(tmp_path: Path, no_torch_load: list[Any]) -> None:
    timm = pytest.importorskip("timm")
    from ftc.runtime.backends import vision_model
    from timm.models import save_for_hf

    torch.manual_seed(0)
    folder = tmp_path / "resnet"
    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=3), folder, safe_serialization=True)
    _pickle_only(folder, tmp_path / "pickled")
    with pytest.raises(ValueError, match=r"pickles \(pytorch_model.bin\).*timm.models.save_for_hf") as refused:
        vision_model.create(tmp_path / "pickled")
    assert basemodel.pickled_weights(tmp_path / "pickled", "vision") == ["pytorch_model.bin"]
    assert no_torch_load == []
    # the conversion the message gives, run as the user would, makes the folder loadable
    argv = shlex.split(str(refused.value).split("`")[1])
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert basemodel.pickled_weights(tmp_path / "pickled", "vision") == []
    assert vision_model.create(tmp_path / "pickled").num_classes == 3


def test_open_clip_would_choose_a_preferred_pickle_over_safetensors(tmp_path: Path) -> None:
    """open_clip's `local-dir:` prefers open_clip_pytorch_model.bin to model.safetensors: refused."""
    from ftc.runtime.backends.multimodal_model import check_folder

    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {}}', encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"PK\x03\x04")
    assert basemodel.open_clip_choice(tmp_path) == "open_clip_pytorch_model.bin"
    with pytest.raises(ValueError, match="open_clip_pytorch_model.bin"):
        check_folder(tmp_path)
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    assert basemodel.open_clip_choice(tmp_path) == "open_clip_model.safetensors"
    check_folder(tmp_path)


def test_trainer_state_pickles_are_not_weights(tmp_path: Path) -> None:
    for name in ("model.safetensors", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        (tmp_path / name).write_bytes(b"")
    assert basemodel.pickled_weights(tmp_path, "text") == []
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model-00001-of-00002.bin").write_bytes(b"")
    assert basemodel.pickled_weights(tmp_path, "text") == ["pytorch_model-00001-of-00002.bin"]


def test_a_pickled_open_clip_base_is_refused_and_its_conversion_works(tmp_path: Path,
                                                                      no_torch_load: list[Any]) -> None:
    pytest.importorskip("open_clip")
    from ftc.runtime.backends.multimodal_model import WEIGHTS, check_folder, load_clip
    from safetensors.torch import load_file

    from tests.runtime.test_multimodal import make_tiny_clip

    folder = make_tiny_clip(tmp_path / "clip", ["a red circle", "a blue square"])
    original = load_file(str(folder / WEIGHTS))
    torch.save(original, folder / "open_clip_pytorch_model.bin")
    (folder / WEIGHTS).unlink()
    with pytest.raises(ValueError, match=r"pickles \(open_clip_pytorch_model.bin\)") as refused:
        check_folder(folder)
    assert no_torch_load == []
    argv = shlex.split(str(refused.value).split("`")[1])
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder / "open_clip_pytorch_model.bin").unlink()  # the conversion's advice: then delete the pickle
    converted = load_file(str(folder / WEIGHTS))
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)
    model, _, _ = load_clip(folder, "cpu")
    assert torch.equal(model.state_dict()["logit_scale"], original["logit_scale"]) and no_torch_load == []
