"""What every checker is built from: the cases it runs, its pass line, `CheckFailed`, and the comparisons
whose messages say what differed. Plain Python: importing it loads neither torch nor any checker."""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Callable

from . import registry


class CheckFailed(AssertionError):
    """An exercise's code gave a wrong result; the message says which case and how."""


Case = tuple[str, Callable[[], None]]


def hidden_mode(hidden: bool | None = None) -> bool:
    """Whether to run the hidden cases too: `hidden` if given, else whether `COURSE_HIDDEN_CHECKS=1`."""
    return os.environ.get("COURSE_HIDDEN_CHECKS") == "1" if hidden is None else bool(hidden)


def pass_line(exercise: str, visible: int, hidden: int | None = None) -> str:
    """The line a passed check prints: `Exercise 1.1 passed: 6/6 checks[, 3/3 hidden checks]`."""
    line = f"Exercise {exercise} passed: {visible}/{visible} checks"
    return line if hidden is None else f"{line}, {hidden}/{hidden} hidden checks"


def _outside_libraries(filename: str) -> bool:
    """Whether a traceback frame's file is the student's code: not the course's, not Python's, not a package's."""
    path = Path(filename)
    if not path.is_absolute():  # "<stdin>", "<string>": code typed in
        return True
    course = Path(__file__).resolve().parents[1]  # course_lib
    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")} | {sys.prefix, sys.base_prefix}
    roots = [course, *(Path(p).resolve() for p in installed)]
    resolved = path.resolve()
    return not any(resolved.is_relative_to(root) for root in roots)


def where_in_your_code(error: BaseException) -> str:
    """Where an exception came from in the student's own code (the innermost such frame), e.g.
    " (in mask_tokens, line 12: `probs = counts / total`)"; "" if it did not come from there. In a notebook a
    cell's code is a file of IPython's, whose lines `linecache` holds."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _outside_libraries(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f" (in {frame.name}, line {frame.lineno}" + (f": `{line}`)" if line else ")")


def run_cases(
    exercise: str,
    cases: list[Case],
    hidden_cases: list[Case] = (),
    hidden: bool | None = None,
    first_failure: bool = False,
) -> None:
    """Run every case (and the hidden ones in hidden mode); print the pass line, or raise `CheckFailed`
    listing each failed case. `first_failure`: stop at the first case that fails (the test suite's wrong
    implementations need no more); students see every failed case. The number of hidden cases must be
    the one the exercise registry gives: the grader expects it in the hidden pass line."""
    expected = registry.get(exercise).hidden_cases
    if len(hidden_cases) != expected:
        raise RuntimeError(
            f"the exercise registry gives exercise {exercise} {expected} hidden cases, "
            f"but its checker has {len(hidden_cases)}"
        )
    hidden = hidden_mode(hidden)
    visible = len(cases)
    if hidden:
        cases = list(cases) + [(f"hidden: {name}", case) for name, case in hidden_cases]
    failures = []
    for name, case in cases:
        try:
            case()
        except NotImplementedError:
            raise  # the exercise is not written yet: say so plainly
        except Exception as e:  # a crash in student code is a failed case, with its message
            detail = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}{where_in_your_code(e)}"
            failures.append(f"{name}: {detail}")
            if first_failure:
                break
    if failures:
        stopped = " (stopped at the first failure)" if first_failure else ""
        raise CheckFailed(
            f"Exercise {exercise} failed {len(failures)} of {len(cases)} checks{stopped}:\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    print(pass_line(exercise, visible, len(hidden_cases) if hidden else None))


def expect_equal(got, expected, what: str) -> None:
    """Raise an AssertionError that shows the first difference between two sequences (or values)."""
    if got == expected:
        return
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        for i, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                raise AssertionError(f"{what} differ at position {i}: got {g!r}, expected {e!r}")
        raise AssertionError(f"{what}: got {len(got)} items, expected {len(expected)}")
    raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")


def expect_close(got: float, expected: float, tolerance: float, what: str) -> None:
    """Raise an AssertionError if a number (a rate, a share) is further than `tolerance` from `expected`."""
    if abs(got - expected) > tolerance:
        raise AssertionError(f"{what}: {got:.4f}, expected {expected:.4f} ± {tolerance}")


def close(got, expected, what: str, atol: float = 1e-5) -> None:
    """Raise an AssertionError unless `got` is a tensor of `expected`'s shape within `atol` of it."""
    if not (hasattr(got, "shape") and hasattr(got, "detach")):  # a torch.Tensor, without importing torch here
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    error = (got.detach().float() - expected.detach().float()).abs().max().item()
    if not error <= atol:
        raise AssertionError(f"{what}: differs by up to {error:.2e} (tolerance {atol:.0e})")


def expect_same_losses(resumed: list[float], straight: list[float], before: int, suspects: str) -> None:
    """The losses after a resume at step `before` must be those of the run that never stopped."""
    if resumed != straight:
        diff = next((i for i, (a, b) in enumerate(zip(resumed, straight)) if a != b), None)
        if diff is None:  # they agree as far as both go: one run is shorter
            raise AssertionError(
                f"after resuming at step {before}, {len(resumed)} updates were logged; without stopping, "
                f"{len(straight)}: the resumed run did not go on to the end ({suspects})"
            )
        raise AssertionError(
            f"after resuming, the loss of step {before + diff + 1} is {resumed[diff]!r}, "
            f"without stopping it was {straight[diff]!r}: something was not restored ({suspects})"
        )
