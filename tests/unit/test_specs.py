"""The shipped examples under specs/ check clean, and broken copies of them fail cleanly.

1. Every .ftspec under specs/ checks with no error and no warning, data-reading rules on (the
   examples ship their data and local models), through `check_file` and through the CLI.
2. For every file, damaged copies (truncated at several offsets, emptied, garbled with a fixed
   seed, made invalid UTF-8) give at least one located error in the damaged file, and the real
   entry point (`ftc.compiler.cli.main`) exits 1, never 3, with no traceback. The copies are
   checked with `--no-data`, so that only the damage can produce errors; they sit beside a copy
   of the team defaults so that `extends` still resolves.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.cli import main
from ftc.compiler.diagnostics import Severity

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
FILES = sorted(SPECS.rglob("*.ftspec"))
IDS = [p.relative_to(SPECS).as_posix() for p in FILES]
DEFAULTS = SPECS / "team-defaults.ftspec"

CUTS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)  # fractions of the text before its last `}`
GARBLE_SEED = 20240611
FOREIGN = b"@$`~^?&"  # bytes the language uses only inside strings and comments


def test_examples_exist() -> None:
    assert DEFAULTS in FILES
    kinds = {check_file(p, CheckOptions(no_data=True)).kind for p in FILES}
    assert kinds == {"spec", "defaults"}
    assert len(FILES) >= 6


def _unclean(result: FileResult) -> list[str]:
    return [f"{d.code} {d.span.path}:{d.span.line}:{d.span.column} {d.message}" if d.span else f"{d.code} {d.message}"
            for d in result.diagnostics
            if d.suppressed_reason is None and d.severity in (Severity.ERROR, Severity.WARNING)]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_example_checks_clean(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FTC_NO_CACHE", "1")  # run every data rule now, not a cached verdict
    result = check_file(path.relative_to(ROOT))
    assert _unclean(result) == []
    if result.kind == "spec":
        assert result.checked is not None


def test_examples_check_clean_through_the_cli(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--warnings-as-errors", "--color", "never", "specs"])
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.out + out.err
    assert "warning" not in out.out.lower()


# --- damaged copies --------------------------------------------------------------------------------


def _code_offsets(text: str) -> list[int]:
    """Offsets of characters outside strings and comments (where a foreign byte must be an error)."""
    from ftc.compiler.parser import _code_chars

    return [i for i, ch in _code_chars(text) if not ch.isspace()]


def damaged_copies(raw: bytes) -> dict[str, bytes]:
    text = raw.decode("utf-8")
    last = text.rindex("}")
    copies = {f"cut-{int(f * 100):02d}": text[: int(last * f)].encode("utf-8") for f in CUTS}
    copies["empty"] = b""
    copies["blank"] = b"\n  \n# only a comment\n"
    rng = random.Random(GARBLE_SEED)
    code = _code_offsets(text)  # ASCII text: character offsets are byte offsets
    assert len(text) == len(raw)
    garbled = bytearray(raw)
    for i in rng.sample(code, 3):
        garbled[i] = rng.choice(FOREIGN)
    copies["garbled"] = bytes(garbled)
    noisy = bytearray(raw)
    for i in rng.sample(range(len(raw)), 12):
        noisy[i] = rng.randrange(256)
    copies["random-bytes"] = bytes(noisy)
    middle = len(raw) // 2
    copies["invalid-utf8"] = raw[:middle] + b"\xc3\x28" + raw[middle:]
    copies["latin-1"] = raw.replace(b"#", "# caf\u00e9".encode("latin-1"), 1)
    copies["nul"] = raw[:middle] + b"\x00" + raw[middle:]
    return copies


def _write_copies(tmp_path: Path, source: Path) -> list[Path]:
    shutil.copy(DEFAULTS, tmp_path / DEFAULTS.name)  # `extends "../team-defaults.ftspec"` resolves
    folder = tmp_path / source.parent.relative_to(SPECS) if source != DEFAULTS else tmp_path / "defaults"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in damaged_copies(source.read_bytes()).items():
        path = folder / f"{source.stem}.{name}.ftspec"
        path.write_bytes(data)
        out.append(path.relative_to(tmp_path))
    return out


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_damaged_copies_fail_with_located_errors(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for copy in _write_copies(tmp_path, path):
        result = check_file(copy, CheckOptions(no_data=True))
        shown = copy.as_posix()
        located = [d for d in result.diagnostics
                   if d.severity is Severity.ERROR and d.suppressed_reason is None and d.span is not None
                   and d.span.path == shown and d.span.line >= 1 and d.span.column >= 1]
        assert located, f"{shown}: no located error in {[d.code for d in result.diagnostics]}"
        with pytest.raises(SystemExit) as exit_:
            main(["check", "--no-data", "--color", "never", shown])
        out = capsys.readouterr()
        text = out.out + out.err
        assert exit_.value.code == 1, f"{shown}: exit {exit_.value.code}\n{text}"
        assert "Traceback" not in text and "internal error" not in text, text
        assert f"{shown}:" in text  # the text renderer shows `--> path:line:col`


FUZZ_COPIES = 25
PRINTABLE = b"abcdefghijklmnopqrstuvwxyz_0123456789 .,;:{}[]()<>=!\"'#%/\\\n\t-+*@"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_ascii_noise_never_crashes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Random printable bytes anywhere (fixed seed): a copy may stay valid (`8` -> `3`), but it
    never crashes, and every error it gets is located in the file."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(DEFAULTS, tmp_path / DEFAULTS.name)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    raw = path.read_bytes()
    rng = random.Random(f"{GARBLE_SEED}:{path.name}")
    for n in range(FUZZ_COPIES):
        noisy = bytearray(raw)
        for i in rng.sample(range(len(raw)), rng.randint(1, 6)):
            noisy[i] = rng.choice(PRINTABLE)
        copy = folder / f"{path.stem}.noise-{n:02d}.ftspec"
        copy.write_bytes(bytes(noisy))
        shown = copy.relative_to(tmp_path).as_posix()
        result = check_file(Path(shown), CheckOptions(no_data=True))
        for d in result.diagnostics:
            assert d.span is not None and d.span.line >= 1 and d.span.column >= 1, (shown, d)
        with pytest.raises(SystemExit) as exit_:
            main(["check", "--no-data", "--color", "never", shown])
        out = capsys.readouterr()
        assert exit_.value.code == (0 if result.ok else 1), out.out + out.err
        assert "Traceback" not in out.err and "internal error" not in out.err, out.err


def test_damaged_copies_through_a_real_interpreter(tmp_path: Path) -> None:
    """One `python -m ftc check` over every damaged copy: exit 1, all of them reported, no traceback."""
    copies = [c for p in FILES for c in _write_copies(tmp_path, p)]
    proc = subprocess.run([sys.executable, "-m", "ftc", "check", "--no-data", "--format", "concise",
                           *[c.as_posix() for c in copies]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    reported = {line.split(":", 1)[0] for line in proc.stdout.splitlines() if ":" in line}
    assert {c.as_posix() for c in copies} <= reported
