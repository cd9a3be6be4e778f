"""Checkers for the notebooks' exercises: `from course_lib import checks; checks.check_train_bpe(train_bpe)`.

Each check cell calls one checker with the student's code. It runs a few cases, comparing the student's
results with those of the library the course is checked against (never with the student's own output),
then prints one fixed line, `Exercise N.k passed: c/c checks`, that nbval compares. Any failed case
raises `CheckFailed`, naming the case and what differed.

Hidden checks: every checker also has further cases that the notebooks never run (other seeds, sizes
and edge cases), so that code special-cased to the visible cases does not pass. The grader turns them
on (`COURSE_HIDDEN_CHECKS=1`, or `hidden=True`); the pass line then reads
`Exercise N.k passed: c/c checks, h/h hidden checks`, with h = `HIDDEN_CASES[N.k]`.

The package: `registry` (every exercise: notebook, title, points, checker, hidden cases), `framework`
(running cases, the pass line, comparisons), and one module of checkers per notebook, `nb01` ... `nb08`.
A checker's module is imported when the checker is first used, so `import course_lib.checks` is cheap
and notebook 01 never loads notebook 07's DeepSpeed.
"""

from __future__ import annotations

import importlib

from .framework import (
    Case,
    CheckFailed,
    close,
    expect_close,
    expect_equal,
    expect_same_losses,
    hidden_mode,
    pass_line,
    run_cases,
)
from .registry import CHECKER_MODULES, EXERCISES, Exercise

# How many hidden cases each checker has: the grader expects that count in the hidden pass line.
HIDDEN_CASES: dict[str, int] = {exercise.id: exercise.hidden_cases for exercise in EXERCISES.values()}

__all__ = [
    "Case",
    "CheckFailed",
    "EXERCISES",
    "Exercise",
    "HIDDEN_CASES",
    "close",
    "expect_close",
    "expect_equal",
    "expect_same_losses",
    "hidden_mode",
    "pass_line",
    "run_cases",
    *CHECKER_MODULES,
]


def __getattr__(name: str):
    """`checks.check_x`: the checker from its notebook's module, imported on first use."""
    module = CHECKER_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    checker = getattr(importlib.import_module(module), name)
    globals()[name] = checker  # found directly from now on
    return checker


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
