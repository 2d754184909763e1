"""Which code files a base's `auto_map` makes transformers run, and their hashes (compiler/basemodel.py
`remote_code`, what the plan records and FT163 lists), read without torch."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from ftc.compiler import basemodel as bm


def _folder(tmp_path: Path, config: dict[str, object], tokenizer: dict[str, object] | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if tokenizer is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    return tmp_path


def test_no_auto_map_means_no_remote_code(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("X = 1\n", encoding="utf-8")
    assert bm.remote_code(_folder(tmp_path, {"model_type": "bert"})) == {}


def test_named_files_lists_tokenizer_classes_and_the_other_py_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}},
                     {"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}})
    for name in ("configuration_x.py", "modeling_x.py", "tokenization_x.py", "layers.py"):
        (folder / name).write_text(f"# {name}\n", encoding="utf-8")
    code = bm.remote_code(folder)
    assert sorted(code) == ["configuration_x.py", "layers.py", "modeling_x.py", "tokenization_x.py"]
    assert code["layers.py"] == hashlib.sha256(b"# layers.py\n").hexdigest()  # imported relatively: pinned too


def test_a_missing_file_and_another_repositorys_code_have_no_hash(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"auto_map": {"AutoModel": "modeling_gone.Model",
                                             "AutoConfig": "org/other--configuration_o.OConfig"}})
    assert bm.remote_code(folder) == {"modeling_gone.py": None, "org/other--configuration_o.OConfig": None}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_as_code_is_not_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"auto_map": {"AutoModel": "modeling_x.Model"}})
    os.mkfifo(folder / "modeling_x.py")
    assert bm.remote_code(folder) == {"modeling_x.py": None}  # returns: a read would block for ever


def test_a_malformed_auto_map_is_ignored(tmp_path: Path) -> None:
    assert bm.remote_code(_folder(tmp_path, {"auto_map": ["not", "a", "mapping"]})) == {}
    assert bm.remote_code(_folder(tmp_path, {"auto_map": {"AutoModel": 3}})) == {}
