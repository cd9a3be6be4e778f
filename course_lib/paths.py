"""Where things are: the repository's folders, and the folder a notebook writes to.

Support layer: imports nothing from the course.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository (course_lib/ sits in it)
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"  # $COURSE_DATA_DIR overrides it for the loaders: see data.data_dir()
MODELS = ROOT / "models"
RESULTS = ROOT / "benchmarks" / "results"


def work_dir(*parts: str) -> Path:
    """A folder for what a notebook writes (tokenizers, checkpoints): `COURSE_WORK_DIR`, default ./runs."""
    path = Path(os.environ.get("COURSE_WORK_DIR", "runs")).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
