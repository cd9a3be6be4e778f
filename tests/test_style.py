"""Style, as configured in pyproject.toml: `ruff format` (line length 120) and `ruff check` (a small rule set)
over every Python file of the course. Fix with `.venv/bin/ruff format . && .venv/bin/ruff check --fix .`."""

from __future__ import annotations

import subprocess
import sys

from course_lib.paths import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_formatted():
    done = _ruff("format", "--check", "--diff", ".")
    assert done.returncode == 0, f"not formatted (run ruff format .):\n{done.stdout[-4000:]}{done.stderr[-2000:]}"


def test_lint():
    done = _ruff("check", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check found:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
