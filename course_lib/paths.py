"""Where things are: the files the course ships, and the folder a notebook writes to.

The course ships four kinds of files: `data` (the corpora), `configs` (YAML and DeepSpeed configs),
`models` (`brown-small`) and `results` (the benchmarks' stored results, which some notebooks print).
`course_path(kind, ...)` finds them, in this order:

1. `$COURSE_ROOT`, a folder laid out like the repository (data/, configs/, models/, benchmarks/results/);
2. the repository this `course_lib` sits in (a checkout, or an editable install of one);
3. the installed package, which carries them as package data (`course_lib/shipped/`: a wheel, or
   `pip install git+...` on Colab).

Notebooks take paths from here, never from the repository root: they run from an installed package too.
`$COURSE_DATA_DIR` still overrides the data folder alone (see `data.data_dir()`).

Support layer: imports nothing from the course.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # the repository, when course_lib sits in a checkout (see in_checkout)
SHIPPED = PACKAGE / "shipped"  # where a built package keeps the files (pyproject.toml maps them there)
# kind -> its folder in the repository; in the package it is shipped/<kind>
LAYOUT = {"data": "data", "configs": "configs", "models": "models", "results": "benchmarks/results"}


def in_checkout() -> bool:
    """Whether course_lib sits in a checkout of the repository (not in an installed package)."""
    return (ROOT / "pyproject.toml").is_file() and (ROOT / "course_lib").is_dir()


def course_path(kind: str, *parts: str) -> Path:
    """The path of a shipped file or folder: course_path("configs", "tiny.yaml"),
    course_path("results", "budget_cpu.json"), course_path("models", "brown-small")."""
    if kind not in LAYOUT:
        raise ValueError(f"course_path: unknown kind {kind!r}; the course ships {', '.join(LAYOUT)}")
    override = os.environ.get("COURSE_ROOT")
    if override:
        base = Path(override) / LAYOUT[kind]
    elif in_checkout():
        base = ROOT / LAYOUT[kind]
    else:
        base = SHIPPED / kind
    return base.joinpath(*parts)


def where() -> str:
    """Where the shipped files come from now, in words (for error messages and the setup cell)."""
    if os.environ.get("COURSE_ROOT"):
        return f"$COURSE_ROOT ({os.environ['COURSE_ROOT']})"
    return f"the checkout {ROOT}" if in_checkout() else f"the installed package ({SHIPPED})"


# the same, resolved once at import (tests and notebooks may use either)
CONFIGS = course_path("configs")
DATA = course_path("data")  # $COURSE_DATA_DIR overrides it for the loaders: see data.data_dir()
MODELS = course_path("models")
RESULTS = course_path("results")


def work_dir(*parts: str) -> Path:
    """A folder for what a notebook writes (tokenizers, checkpoints): `COURSE_WORK_DIR`, default ./runs."""
    path = Path(os.environ.get("COURSE_WORK_DIR", "runs")).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
