"""The front end's limits (compiler/limits.py): each overrun is a located diagnostic naming the
limit and the variable that raises it, never a traceback or a hang; only regular files are read."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from ftc.compiler import limits, paths
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.diagnostics import MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS, Diagnostic, make
from ftc.compiler.docs import EXAMPLE_BASE
from ftc.compiler.source import Span


@contextlib.contextmanager
def bounded(seconds: int = 5) -> Iterator[None]:
    """Fail (not hang) when the block takes longer than `seconds`: a deterministic bound, not a
    timing assertion."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(path: Path, no_data: bool = True) -> FileResult:
    with bounded():
        return check_file(path, CheckOptions(no_data=no_data))


def only(result: FileResult, code: str) -> Diagnostic:
    found = [d for d in result.diagnostics if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in result.diagnostics]
    d = found[0]
    assert d.span is not None and d.span.line >= 1 and d.span.column >= 1
    return d


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    for lim in limits.LIMITS:
        monkeypatch.delenv(lim.env, raising=False)
    return tmp_path


def write(folder: Path, text: str, name: str = "spec.ftspec") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return Path(os.path.relpath(path))


def with_setting(block: str, setting: str) -> str:
    """EXAMPLE_BASE with `setting` added at the start of `block { ...`."""
    head = f"{block} {{"
    assert head in EXAMPLE_BASE
    return EXAMPLE_BASE.replace(head, f"{head} {setting};", 1)


# --- literals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("block", "key"), [("method lora", "rank"), ("train", "epochs"),
                                            ("train", "early_stopping patience")])
def test_a_400_digit_integer_is_a_located_diagnostic(project: Path, block: str, key: str) -> None:
    text = with_setting(block, f"{key} {'9' * 400}")
    d = only(check(write(project, text)), "FT025")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "9" * 400 in t)
    assert d.span is not None and d.span.line == line
    assert "400 characters" in d.message and "FTC_MAX_NUMBER_CHARS" in d.help


def test_a_number_beyond_a_float_is_refused_where_written(project: Path) -> None:
    d = only(check(write(project, with_setting("method lora", "rank 1e999"))), "FT025")
    assert "`1e999` is too large" in d.message


def test_a_long_string_is_refused_and_the_limit_can_be_raised(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(project, EXAMPLE_BASE.replace('owner "ml-team"', f'owner "{"x" * 5000}"'))
    d = only(check(spec), "FT025")
    assert "5,000 characters" in d.message and "FTC_MAX_STRING_CHARS" in d.help
    monkeypatch.setenv("FTC_MAX_STRING_CHARS", "10000")
    assert [x.code for x in check(spec).diagnostics] == []


def test_a_long_list_is_refused_at_the_list(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ", ".join(f'"l{i}"' for i in range(5000))
    text = EXAMPLE_BASE.replace("labels [", f"labels [{labels}, ", 1)
    assert text != EXAMPLE_BASE
    d = only(check(write(project, text)), "FT026")
    assert "5,00" in d.message and "FTC_MAX_LIST_ITEMS" in d.help


def test_200000_labels_are_refused_by_the_file_size_bound(project: Path) -> None:
    labels = ", ".join(f'"l{i}"' for i in range(200_000))
    d = only(check(write(project, EXAMPLE_BASE.replace("labels [", f"labels [{labels}, ", 1))), "FT023")
    assert "FTC_MAX_SPEC_BYTES" in d.help and d.span is not None and d.span.line == 1


# --- nesting -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("opener", "closer"), [("x {\n", "}\n"), ("[", "]")])
def test_a_thousand_levels_of_nesting_are_bounded_before_the_recursive_walks(
        project: Path, opener: str, closer: str) -> None:
    inner = ("rank " + opener * 1000 + "8" + closer * 1000) if opener == "[" else (opener * 1000 + closer * 1000)
    text = EXAMPLE_BASE.replace("method lora {", "method lora { " + inner + "\n", 1)
    d = only(check(write(project, text)), "FT024")
    assert "64 levels" in d.message and "FTC_MAX_NESTING_DEPTH" in d.help
    assert d.span is not None and text[d.span.start] == opener.strip()[-1]


@pytest.mark.parametrize("levels", [120, 125])
def test_nesting_up_to_the_ceiling_walks_without_recursion_errors(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  levels: int) -> None:
    monkeypatch.setenv("FTC_MAX_NESTING_DEPTH", "2000")  # the ceiling, 128, applies
    lists = EXAMPLE_BASE.replace("method lora {", "method lora { rank " + "[" * levels + "8" + "]" * levels + "\n", 1)
    codes = {d.code for d in check(write(project, lists)).diagnostics}
    assert "FT024" not in codes and "FT013" in codes  # a list is not a rank: an ordinary diagnostic
    blocks = EXAMPLE_BASE.replace("method lora {", "method lora { " + "x {\n" * levels + "}\n" * levels, 1)
    codes = {d.code for d in check(write(project, blocks)).diagnostics}
    assert "FT024" not in codes and "FT010" in codes  # an unknown block: decoding stops there
    d = only(check(write(project, lists.replace("rank [", "rank [" + "[" * 20))), "FT024")
    assert "128 levels" in d.message and "the most FTC_MAX_NESTING_DEPTH can set" in d.help


def test_a_long_extends_chain_is_bounded(project: Path) -> None:
    for i in range(40):
        write(project, f'extends "d{i + 1}.ftspec"\ndefaults {{\n}}\n' if i < 39 else "defaults {\n}\n", f"d{i}.ftspec")
    spec = write(project, 'extends "d0.ftspec"\n' + EXAMPLE_BASE)
    d = only(check(spec), "FT024")
    assert "more than 16 files" in d.message and "FTC_MAX_EXTENDS_DEPTH" in d.help


# --- what is read --------------------------------------------------------------------------------

def test_a_spec_file_over_the_size_limit_is_not_read(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(project, EXAMPLE_BASE + "#" * 70_000 + "\n")
    d = only(check(spec), "FT023")
    assert "a spec file may hold at most 65,536" in d.message
    monkeypatch.setenv("FTC_MAX_SPEC_BYTES", "200000")
    assert [x.code for x in check(spec).diagnostics] == []


def test_extends_dev_zero_and_urandom_read_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for device in ("/dev/zero", "/dev/urandom"):
        spec = write(project, f'extends "{device}"\n' + EXAMPLE_BASE)
        assert only(check(spec), "FT028").span.line == 1  # type: ignore[union-attr]
        monkeypatch.setenv(paths.ROOT_ENV, "/")  # inside a root: still never opened
        d = only(check(spec), "FT027")
        assert "character device" in d.message and d.span is not None and d.span.line == 1
        monkeypatch.delenv(paths.ROOT_ENV)


def test_a_fifo_is_refused_without_blocking(project: Path) -> None:
    os.mkfifo(project / "pipe.ftspec")
    d = only(check(write(project, 'extends "pipe.ftspec"\n' + EXAMPLE_BASE)), "FT027")
    assert "FIFO" in d.message
    assert only(check(Path("pipe.ftspec")), "FT027").span.line == 1  # type: ignore[union-attr]


def test_proc_self_mem_is_a_diagnostic(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc")
    monkeypatch.setenv(paths.ROOT_ENV, "/")
    result = check(write(project, 'extends "/proc/self/mem"\n' + EXAMPLE_BASE))
    assert [d.code for d in result.diagnostics] == ["FT017"]
    assert check(Path("/proc/self/mem")).diagnostics[0].code == "FT006"


def test_a_folder_named_by_extends(project: Path) -> None:
    (project / "team").mkdir()
    d = only(check(write(project, 'extends "team"\n' + EXAMPLE_BASE)), "FT017")
    assert "is a folder" in d.message


def test_a_symlink_loop_is_named_as_such(project: Path) -> None:
    (project / "a.ftspec").symlink_to("b.ftspec")
    (project / "b.ftspec").symlink_to("a.ftspec")
    d = only(check(write(project, 'extends "a.ftspec"\n' + EXAMPLE_BASE)), "FT029")
    assert "symlink loop" in d.message and d.span is not None and d.span.line == 1
    assert "symlink loop" in only(check(Path("a.ftspec")), "FT029").message


def test_permission_denied_is_a_diagnostic(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(project, 'extends "secret.ftspec"\n' + EXAMPLE_BASE)
    write(project, "defaults {\n}\n", "secret.ftspec")
    real_stat = os.stat

    def denied(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).endswith("secret.ftspec"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", denied)  # the tests may run as root, whom chmod does not stop
    d = only(check(spec), "FT029")
    assert "permission denied" in d.message


def test_the_table_documents_each_limit() -> None:
    doc = limits.__doc__ or ""
    for lim in limits.LIMITS:
        assert f"`{lim.name}`" in doc and lim.env in doc and f"{lim.default:,}" in doc, lim.name


def test_a_limit_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_LIST_ITEMS", "12")
    assert limits.current().list_items == 12
    for junk in ("", "-3", "0", "many"):
        monkeypatch.setenv("FTC_MAX_LIST_ITEMS", junk)
        assert limits.current().list_items == limits.LIST_ITEMS.default


def test_diagnostic_text_is_capped() -> None:
    at = Span("x", 0, 0, 1, 1, 1, 1)
    d = make("FT013", "m" * 50_000, at, help="h" * 50_000, detail="d" * 50_000)
    assert len(d.message) == MAX_MESSAGE_CHARS and len(d.help) == MAX_MESSAGE_CHARS
    assert len(d.detail) == MAX_DETAIL_CHARS and d.detail.endswith("more characters)")
