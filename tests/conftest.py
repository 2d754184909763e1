from __future__ import annotations

from pathlib import Path

import pytest

from ftc.compiler.check import CheckOptions, FileResult, check_file

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite tests/golden/**/*.expected")


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture
def check_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Check spec text written to a scratch folder; paths in diagnostics are relative to it."""
    monkeypatch.chdir(tmp_path)

    def run(text: str, name: str = "spec.ftspec", no_data: bool = True, target: str | None = None) -> FileResult:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return check_file(Path(name), CheckOptions(no_data=no_data, target=target))

    return run


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own data-check cache, so results never leak between tests."""
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path_factory.mktemp("ftc-cache")))
