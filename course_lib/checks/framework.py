"""What every checker is built from: the cases it runs, its pass line, `CheckFailed`, and the comparisons
whose messages say what differed. Plain Python: importing it loads neither torch nor any checker.

A case has two halves. `observe()` runs the student's code on the case's inputs and returns what it gave,
as plain data (numbers, str, lists, tuples, dicts, tensors, arrays); `judge(observed)` computes what the
course expects, on inputs it makes itself, and compares. In a notebook both run in the kernel, one after the
other, the observation passing through the same plain-data form the grader uses (`wire`). The grader runs
the halves apart: the observations are taken in the kernel that ran the student's code, and judged in a
process of the grader's own, so nothing the student's code does in its kernel (patching a tensor method,
an object whose `==` is always true, a printed pass line) changes a verdict.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Callable

from . import registry, wire


class CheckFailed(AssertionError):
    """An exercise's code gave a wrong result; the message says which case and how."""


# (name, observe, judge): observe() runs the student's code and returns plain data; judge(observed) raises
# an AssertionError saying what differs from what the course expects
Case = tuple[str, Callable[[], Any], Callable[[Any], None]]

# Set by the grader (course_lib.checks.grading): {"mode": "observe"} makes run_cases only take the
# observations (into "observations"); {"mode": "judge", "observations": {...}} judges those it is given.
session: dict | None = None


def module_parameters(module) -> list[tuple[str, Any]]:
    """(name, parameter) of a torch module and its submodules, each parameter once, read from nn.Module's own
    `_parameters` and `_modules` dicts: a student's class cannot hide one by overriding `named_parameters`,
    `parameters`, `named_modules` or `__getattr__` (exercise 3.4's untied head did)."""
    found, seen = [], set()

    def table(owner, name: str) -> dict:
        if any(name in vars(kind) for kind in type(owner).__mro__):  # a class attribute would shadow the table
            raise AssertionError(f"{type(owner).__name__} defines {name} itself: nn.Module's own table is needed")
        return dict.copy(object.__getattribute__(owner, "__dict__")[name])  # a dict subclass's items() unused

    def walk(owner, prefix: str) -> None:
        for name, parameter in table(owner, "_parameters").items():
            if parameter is not None and id(parameter) not in seen:
                seen.add(id(parameter))
                found.append((prefix + name, parameter))
        for name, child in table(owner, "_modules").items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(module, "")
    return found


def module_modes(module) -> dict[str, bool]:
    """Each submodule's train/eval flag ("" for the module itself), read from nn.Module's own tables."""
    modes: dict[str, bool] = {}

    def walk(owner, name: str) -> None:
        state = object.__getattribute__(owner, "__dict__")
        modes[name] = bool(state.get("training"))
        for child_name, child in dict.copy(state.get("_modules", {})).items():
            if child is not None:
                walk(child, f"{name}.{child_name}".lstrip("."))

    walk(module, "")
    return modes


def parameter_at(module, dotted: str):
    """The parameter at a dotted path ("cls.predictions.decoder.weight"), found through nn.Module's own tables
    (as `module_parameters`), or None."""
    *path, name = dotted.split(".")
    owner = module
    for part in path:
        owner = object.__getattribute__(owner, "__dict__").get("_modules", {}).get(part)
        if owner is None:
            return None
    return object.__getattribute__(owner, "__dict__").get("_parameters", {}).get(name)


def requires_grad(tensor) -> bool:
    """A tensor's requires_grad read through torch's own descriptor (a subclass's property cannot answer)."""
    import torch

    return bool(torch._C.TensorBase.__dict__["requires_grad"].__get__(tensor))


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


def observation(observe: Callable[[], Any]) -> dict:
    """Run one case's observing half: {"value": its plain-data result}, or {"error": what the student's code
    raised, with where in their code}, or {"not_implemented": message} when the exercise is still a stub."""
    try:
        return {"value": wire.plain(observe())}
    except NotImplementedError as e:
        return {"not_implemented": str(e) or "NotImplementedError"}
    except wire.NotPlain as e:
        return {"error": str(e)}
    except Exception as e:  # a crash in student code is a failed case, with its message
        detail = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}{where_in_your_code(e)}"
        return {"error": detail}


def verdict(observed: dict, judge: Callable[[Any], None]) -> str | None:
    """Judge one observation: None if the case passed, else what failed."""
    if "error" in observed:
        return observed["error"]
    try:
        judge(wire.unplain(observed["value"]))
    except AssertionError as e:
        return str(e)
    except Exception as e:  # the student's result is not what the comparison can take (a list, not a tensor...)
        return f"{type(e).__name__}: {e}"
    return None


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
    the one the exercise registry gives: the grader expects it in the hidden pass line. Under the grader
    (`session`), the kernel only observes (hidden cases included) and the grader's process only judges."""
    expected = registry.get(exercise).hidden_cases
    if len(hidden_cases) != expected:
        raise RuntimeError(
            f"the exercise registry gives exercise {exercise} {expected} hidden cases, "
            f"but its checker has {len(hidden_cases)}"
        )
    mode = (session or {}).get("mode")
    hidden = True if mode else hidden_mode(hidden)
    visible = len(cases)
    if hidden:
        cases = list(cases) + [(f"hidden: {name}", observe, judge) for name, observe, judge in hidden_cases]
    if mode == "observe":
        session["observations"] = {name: observation(observe) for name, observe, _ in cases}
        return
    taken = session.get("observations", {}) if mode == "judge" else None
    failures = []
    for name, observe, judge in cases:
        if taken is None:
            observed = observation(observe)
        else:
            observed = taken.get(name) or {"error": "no observation was taken for this case"}
        if "not_implemented" in observed:
            raise NotImplementedError(observed["not_implemented"])  # the exercise is not written yet: say so plainly
        failure = verdict(observed, judge)
        if failure is not None:
            failures.append(f"{name}: {failure}")
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
