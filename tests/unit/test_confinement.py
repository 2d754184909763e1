"""Path confinement (compiler/paths.py): every path a spec names resolves inside the project root,
or is refused with a located FT028 before anything is opened, and nothing of the outside file is
ever printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from ftc.compiler import paths
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.cli import cli
from ftc.compiler.docs import EXAMPLE_BASE
from ftc.compiler.render import render
from ftc.compiler.rules import RULES

SECRET = "root:$6$very-secret-hash:19000:0:99999:7:::"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/outside/ holds a secret; tmp_path/proj/ is a project; the working folder is proj."""
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_text(SECRET + "\n" + SECRET + "\n")
    (tmp_path / "outside" / "team.ftspec").write_text(f"# {SECRET}\ndefaults {{\n  train {{ epochs {SECRET} }}\n}}\n")
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    monkeypatch.chdir(proj)
    return proj


def spec_with(proj: Path, old: str, new: str, head: str = "", name: str = "spec.ftspec") -> Path:
    text = head + EXAMPLE_BASE.replace(old, new, 1)
    assert old in EXAMPLE_BASE
    (proj / name).write_text(text, encoding="utf-8")
    return Path(name)


def shown(result: FileResult) -> str:
    """Everything a user or a CI log would see, in every output format."""
    return "".join(render(list(result.diagnostics), result.sources, fmt, color=False, files_checked=1, rules=RULES)
                   for fmt in ("text", "json", "sarif", "github", "concise"))


def codes(result: FileResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_a_data_path_that_climbs_out_is_refused_unread(world: Path) -> None:
    spec = spec_with(world, 'train "data/train.jsonl"', 'train "../outside/shadow"')
    result = check_file(spec, CheckOptions())
    [d] = [d for d in result.diagnostics if d.code == "FT028"]
    assert d.message == "train data `../outside/shadow` lies outside the project root"
    assert d.span is not None and (d.span.line, d.span.column) == (14, 11)
    assert "--root DIR" in d.help and "FTC_ROOT" in d.help
    assert SECRET not in shown(result) and result.checked is not None and result.checked.data is None


def test_etc_shadow_through_any_number_of_dotdots(world: Path) -> None:
    spec = spec_with(world, 'test "data/test.jsonl"', 'test "../../../../../../../../etc/shadow"')
    result = check_file(spec, CheckOptions())
    real = Path("/etc/shadow")
    first = real.read_text(errors="replace").splitlines()[:1] if os.access(real, os.R_OK) else []
    assert codes(result) == ["FT028"] and all(line not in shown(result) for line in first if line.strip())


def test_a_link_inside_the_project_to_a_file_outside_is_refused(world: Path) -> None:
    (world / "data" / "val.jsonl").symlink_to(world.parent / "outside" / "shadow")
    result = check_file(spec_with(world, "rows 300\n    test", "rows 300\n    test"), CheckOptions())
    [d] = [d for d in result.diagnostics if d.code == "FT028"]
    assert "val data `data/val.jsonl`" in d.message and SECRET not in shown(result)


def test_extends_outside_is_refused_before_it_is_read(world: Path) -> None:
    for target in ("../outside/team.ftspec", str(world.parent / "outside" / "team.ftspec")):
        spec = spec_with(world, "", "", head=f'extends "{target}"\n')
        result = check_file(spec, CheckOptions(no_data=True))
        [d] = result.diagnostics
        assert d.code == "FT028" and d.span is not None and (d.span.line, d.span.path) == (1, "spec.ftspec")
        assert SECRET not in shown(result) and set(result.sources) == {"spec.ftspec"}


def test_extends_etc_shadow_prints_nothing_of_it(world: Path) -> None:
    result = check_file(spec_with(world, "", "", head='extends "/etc/shadow"\n'), CheckOptions(no_data=True))
    assert codes(result) == ["FT028"] and set(result.sources) == {"spec.ftspec"}


@pytest.mark.parametrize("path", ["~", "/", "~/", "/etc"])
def test_home_and_slash_are_refused_without_walking_them(world: Path, path: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler.data import cache

    def walked(*args: object, **kwargs: object) -> str:
        raise AssertionError("a refused path was hashed")

    monkeypatch.setattr(cache, "file_digest", walked)
    result = check_file(spec_with(world, 'test "data/test.jsonl"', f'test "{path}"'), CheckOptions())
    assert codes(result) == ["FT028"]


def test_a_local_base_and_an_output_schema_outside_are_refused(world: Path) -> None:
    spec = spec_with(world, 'base "hf:org/encoder"', 'base "../outside"; output_schema "/etc/passwd"')
    found = {d.message for d in check_file(spec, CheckOptions(no_data=True)).diagnostics if d.code == "FT028"}
    assert found == {"base model folder `../outside` lies outside the project root",
                     "output schema `/etc/passwd` lies outside the project root"}


def test_a_regression_set_outside_is_refused(world: Path) -> None:
    spec = spec_with(world, "gate f1 >= 0.85 on test", 'gate f1 >= 0.85 on test\n    gate regression <= 0.02 vs base on "../outside/shadow"')
    [d] = [d for d in check_file(spec, CheckOptions()).diagnostics if d.code == "FT028"]
    assert "regression set" in d.message


def test_an_hf_revision_that_names_a_path(world: Path) -> None:
    spec = spec_with(world, 'revision "3f2a9c1"', 'revision "/etc/passwd"')
    [d] = [d for d in check_file(spec, CheckOptions(no_data=True)).diagnostics if d.code == "FT028"]
    assert "names a path" in d.message


# --- the project root ----------------------------------------------------------------------------

def test_the_git_repository_is_the_root(world: Path) -> None:
    (world / ".git").mkdir()
    (world / "team").mkdir()
    (world / "team" / "defaults.ftspec").write_text("defaults {\n}\n")
    (world / "exp").mkdir()
    spec = spec_with(world, "", "", head='extends "../team/defaults.ftspec"\n', name="exp/spec.ftspec")
    assert paths.project_root(spec) == paths.Roots((paths.real(world),), "the git repository")
    assert codes(check_file(spec, CheckOptions(no_data=True))) == []


def test_without_a_repository_the_working_folder_then_the_spec_folder(world: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (world / "exp").mkdir()
    spec = world / "exp" / "spec.ftspec"
    assert paths.project_root(spec).origin == "the working folder"
    monkeypatch.chdir(world.parent / "outside")
    assert paths.project_root(spec) == paths.Roots((paths.real(world / "exp"),), "the spec's folder")


def test_a_declared_root_widens_or_narrows(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_with(world, 'train "data/train.jsonl"', 'train "../outside/shadow"')
    assert "FT028" in codes(check_file(spec, CheckOptions(no_data=True)))
    assert "FT028" not in codes(check_file(spec, CheckOptions(no_data=True, root=str(world.parent))))
    monkeypatch.setenv(paths.ROOT_ENV, os.pathsep.join([str(world), str(world.parent / "outside")]))
    assert "FT028" not in codes(check_file(spec, CheckOptions(no_data=True)))
    monkeypatch.setenv(paths.ROOT_ENV, str(world / "data"))  # the spec itself is outside now
    [d] = check_file(spec, CheckOptions(no_data=True)).diagnostics
    assert d.code == "FT028" and d.message == "spec.ftspec lies outside the project root"


def test_check_and_run_take_root(world: Path) -> None:
    spec = spec_with(world, 'train "data/train.jsonl"', 'train "../outside/shadow"')
    refused = CliRunner().invoke(cli, ["check", "--no-data", str(spec)])
    assert refused.exit_code == 1 and "FT028" in refused.output and SECRET not in refused.output
    allowed = CliRunner().invoke(cli, ["check", "--no-data", "--root", str(world.parent), str(spec)])
    assert allowed.exit_code == 0, allowed.output
    ran = CliRunner().invoke(cli, ["run", "--dry-run", str(spec)])
    assert ran.exit_code == 1 and "FT028" in ran.output
    assert "--root" in CliRunner().invoke(cli, ["run", "--help"]).output


def test_the_hub_cache_is_a_root_for_hf_bases_only(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = world.parent / "hub"
    (hub / "models--org--m").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    spec = spec_with(world, 'base "hf:org/encoder"', f'base "{hub / "models--org--m"}"')
    result = check_file(spec, CheckOptions(no_data=True))
    assert "FT028" in codes(result)  # named as a local folder: the project root only
    assert result.checked is not None and result.checked.contains(hub / "models--org--m", hub=True)
    assert not result.checked.contains(hub / "models--org--m")


def test_one_function_turns_spec_strings_into_paths(tmp_path: Path) -> None:
    assert paths.spec_path("data/x.jsonl", tmp_path) == tmp_path / "data" / "x.jsonl"
    assert paths.spec_path("/etc/x", tmp_path) == Path("/etc/x")
    assert paths.spec_path("~", tmp_path) == Path(os.path.expanduser("~"))
    assert paths.spec_path("~no-such-user-ftc/x", tmp_path) == tmp_path / "~no-such-user-ftc" / "x"
