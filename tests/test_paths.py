"""Where the shipped files are found (course_lib.paths), that a built package carries them, and that no
notebook builds a path from the repository root."""

import ast
import subprocess
import sys
import zipfile

import nbformat
import pytest

from course_lib import data, paths

SOLUTIONS = sorted((paths.ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


def test_in_a_checkout_the_files_come_from_the_repository(monkeypatch):
    monkeypatch.delenv("COURSE_ROOT", raising=False)
    assert paths.in_checkout()
    assert paths.course_path("configs", "tiny.yaml") == paths.ROOT / "configs" / "tiny.yaml"
    assert paths.course_path("results") == paths.ROOT / "benchmarks" / "results"
    assert paths.course_path("models", "brown-small").is_dir()
    assert paths.course_path("data", "manifest.json").is_file()


def test_an_installed_package_finds_them_in_itself(monkeypatch):
    monkeypatch.delenv("COURSE_ROOT", raising=False)
    monkeypatch.setattr(paths, "in_checkout", lambda: False)
    assert paths.course_path("results", "budget_cpu.json") == paths.PACKAGE / "shipped" / "results" / "budget_cpu.json"
    assert "installed package" in paths.where()


def test_course_root_overrides_both(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path))
    assert paths.course_path("results", "x.json") == tmp_path / "benchmarks" / "results" / "x.json"
    assert paths.course_path("configs") == tmp_path / "configs"
    assert "$COURSE_ROOT" in paths.where()


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown kind 'result'; the course ships data, configs, models, results"):
        paths.course_path("result")


def test_the_data_loaders_read_from_course_root(monkeypatch, tmp_path):
    """data.data_dir() follows the same rule at call time ($COURSE_DATA_DIR still comes first)."""
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path))
    assert data.data_dir() == tmp_path / "data"
    with pytest.raises(data.DataError, match=str(tmp_path / "data")):
        data.english_sentences("valid")


def test_the_wheel_carries_the_shipped_files_and_every_subpackage(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("course_lib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "data": [p for p in paths.ROOT.joinpath("data").rglob("*") if p.is_file()],
        "configs": list(paths.ROOT.joinpath("configs").glob("*")),
        "models": [p for p in paths.ROOT.joinpath("models").rglob("*") if p.is_file()],
        "results": list(paths.ROOT.joinpath("benchmarks", "results").glob("*")),
    }
    for kind, files in shipped.items():
        assert files, kind
        for file in files:
            inside = file.relative_to(paths.ROOT / paths.LAYOUT[kind]).as_posix()
            assert f"course_lib/shipped/{kind}/{inside}" in names, (kind, inside)
    for package in ("course_lib", "course_lib/checks", "course_lib/cli", "course_admin"):
        for module in paths.ROOT.joinpath(package).glob("*.py"):
            assert f"{package}/{module.name}" in names
    assert "course_admin/nbval_sanitize.cfg" in names


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_no_notebook_builds_a_path_from_the_repository_root(path):
    """Notebooks run from an installed package too: shipped files through course_lib.paths only."""
    for cell in nbformat.read(str(path), as_version=4).cells:
        if cell.cell_type != "code" or cell.source.startswith("# Course setup."):
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            where = f"{path.name}, cell {cell.id}, line {getattr(node, 'lineno', '?')}"
            assert not (isinstance(node, ast.Name) and node.id in ("ROOT", "__file__")), where
            assert not (isinstance(node, ast.Attribute) and node.attr in ("ROOT", "parents", "__file__")), where
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                assert not value.startswith(("configs/", "data/", "models/", "benchmarks/")), (where, value)
