"""The exercise registry (course_lib.checks.registry) against everything that follows it: the solution
notebooks' metadata and cells, the checkers and their hidden cases, the lazy `course_lib.checks`."""

import importlib
import inspect
import json
import re
import subprocess
import sys

import pytest

from course_admin import notebooks as nbs
from course_lib import checks
from course_lib.checks import framework, registry
from course_lib.checks.registry import EXERCISES, Exercise

SOLUTIONS = {path.name[:2]: path for path in nbs.solution_paths()}


def stored_pass_lines(path):
    """Exercise number -> the visible count in the pass line its check cell stores."""
    nb = nbs.read(path)
    return {
        nbs.cell_exercise(c): int(
            re.fullmatch(
                r"Exercise \S+ passed: (\d+)/\1 checks\n", "".join(o.get("text", "") for o in c.outputs)
            ).group(1)
        )
        for c in nb.cells
        if nbs.cell_role(c) == "check"
    }


# --------------------------------------------------------------------------- the registry and the solutions


def test_the_registry_has_the_solutions_titles_and_points_exactly():
    metadata = {}
    for notebook, path in SOLUTIONS.items():
        course = json.loads(path.read_text())["metadata"]["course"]
        assert course["notebook"] == notebook
        metadata |= {number: (notebook, info["title"], info["points"]) for number, info in course["exercises"].items()}
    assert {e.id: (e.notebook, e.title, e.points) for e in EXERCISES.values()} == metadata
    assert registry.notebooks() == sorted(SOLUTIONS)


@pytest.mark.parametrize("notebook", sorted(SOLUTIONS))
def test_each_solution_has_the_cells_the_registry_lists(notebook):
    nb = nbs.read(SOLUTIONS[notebook])
    nbs.validate(nb, SOLUTIONS[notebook].name)  # metadata, cells and checkers agree with the registry
    cells = {(nbs.cell_exercise(c), nbs.cell_role(c)): c for c in nb.cells if nbs.cell_role(c)}
    for exercise in registry.for_notebook(notebook):
        assert (exercise.id, "exercise") in cells, exercise.id
        assert f"checks.{exercise.checker}(" in cells[exercise.id, "check"].source, exercise.id
    assert {number for number, _ in cells} == {e.id for e in registry.for_notebook(notebook)}


@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_registry_entry_without_a_cell_or_a_cell_without_an_entry_fails(change):
    """On solution 01 as it is, read with a registry one entry longer or shorter; then on solution 01 without
    the cells of 1.2, read with the course's registry."""
    path = SOLUTIONS["01"]
    nb = nbs.read(path)
    if change == "add":
        changed = {**EXERCISES, "1.3": Exercise("1.3", "01", "decode", 2, "check_decode", 1, {"decode"})}
        message = "exercise 1.3 (decode) is in the exercise registry but not in metadata.course.exercises"
    else:
        changed = {number: e for number, e in EXERCISES.items() if number != "1.2"}
        message = "metadata.course.exercises has exercise 1.2, which the exercise registry does not give notebook 01"
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(f"{path.name}: {message}")):
        nbs.validate(nb, path.name, changed)
    nb.cells = [c for c in nb.cells if nbs.cell_exercise(c) != "1.2"]
    message = f"{path.name}: exercise 1.2 has no check or exercise cell"
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(message)):
        nbs.validate(nb, path.name)


# --------------------------------------------------------------------------- the registry and the checkers


def test_every_checker_exists_in_its_notebooks_module():
    assert registry.missing_checkers() == []
    for exercise in EXERCISES.values():
        function = exercise.function
        assert callable(function) and function.__name__ == exercise.checker
        assert function.__module__ == exercise.module == f"course_lib.checks.nb{exercise.notebook}"
        assert getattr(checks, exercise.checker) is function
    assert registry.missing_checkers({"9.1": Exercise("9.1", "09", "t", 1, "check_t", 1, {"t"})}) == [
        "exercise 9.1: its checker check_t should be in nb09.py, which does not exist"
    ]
    assert registry.missing_checkers({"1.3": Exercise("1.3", "01", "t", 1, "check_t", 1, {"t"})}) == [
        "exercise 1.3: nb01.py defines no function check_t"
    ]


@pytest.mark.parametrize("number", list(EXERCISES))
def test_each_checker_runs_its_own_cases_as_many_hidden_as_the_registry_says(number, monkeypatch):
    """Each checker is called with stand-ins for the student's code and a `run_cases` that only records:
    the cases are counted, not run. The visible count is the one the solution's check cell stores."""
    exercise = EXERCISES[number]
    module = importlib.import_module(exercise.module)
    calls = []

    def recording(exercise_id, cases, hidden_cases=(), hidden=None, first_failure=False):
        calls.append((exercise_id, len(cases), len(hidden_cases), first_failure))

    monkeypatch.setattr(module, "run_cases", recording)
    students = [p for p in inspect.signature(exercise.function).parameters.values() if p.default is p.empty]
    exercise.function(*[lambda *a, **k: None for _ in students], first_failure=True)
    visible = stored_pass_lines(SOLUTIONS[exercise.notebook])[number]
    assert calls == [(number, visible, exercise.hidden_cases, True)]


def test_run_cases_takes_the_hidden_count_from_the_registry():
    message = "the exercise registry gives exercise 2.3 2 hidden cases, but its checker has 1"
    with pytest.raises(RuntimeError, match=message):
        checks.run_cases("2.3", [("fine", lambda: None)], hidden_cases=[("fine", lambda: None)])
    with pytest.raises(KeyError, match="exercise '9.9' is not in the exercise registry"):
        checks.run_cases("9.9", [("fine", lambda: None)])


def test_first_failure_stops_at_the_first_failing_case(capsys):
    ran = []

    def case(name, fails):
        def observe():
            ran.append(name)
            return fails

        def judge(observed):
            if observed:
                raise AssertionError(f"{name} is wrong")

        return name, observe, judge

    cases = [case("a", False), case("b", True), case("c", True)]
    with pytest.raises(checks.CheckFailed, match=r"failed 2 of 3 checks:\n  - b: b is wrong\n  - c: c is wrong"):
        checks.run_cases("3.3", cases, [case("h", False)])  # students see every failed case
    assert ran == ["a", "b", "c"]
    ran.clear()
    with pytest.raises(checks.CheckFailed) as info:
        checks.run_cases("3.3", cases, [case("h", False)], hidden=True, first_failure=True)
    assert ran == ["a", "b"] and str(info.value) == (
        "Exercise 3.3 failed 1 of 4 checks (stopped at the first failure):\n  - b: b is wrong"
    )
    checks.run_cases("3.3", cases[:1], [case("h", False)], hidden=True, first_failure=True)
    assert capsys.readouterr().out == "Exercise 3.3 passed: 1/1 checks, 1/1 hidden checks\n"


# --------------------------------------------------------------------------- the package


def test_hidden_cases_and_the_package_names_come_from_the_registry():
    assert checks.HIDDEN_CASES == {e.id: e.hidden_cases for e in EXERCISES.values()}
    public = set(dir(checks))
    assert {e.checker for e in EXERCISES.values()} <= public
    assert {
        "CheckFailed",
        "Case",
        "run_cases",
        "hidden_mode",
        "pass_line",
        "expect_equal",
        "close",
        "expect_close",
        "HIDDEN_CASES",
        "EXERCISES",
    } <= public
    assert checks.CheckFailed is framework.CheckFailed and checks.run_cases is framework.run_cases
    with pytest.raises(AttributeError, match="has no attribute 'check_nothing'"):
        checks.check_nothing


def test_importing_the_checkers_loads_no_checker_module_and_no_heavy_library():
    code = (
        "import sys, course_lib.checks as c; from course_admin import grade, notebooks; "
        "print(sorted(m for m in sys.modules if m.startswith('course_lib.checks.nb') or m.split('.')[0] in "
        "('torch', 'transformers', 'deepspeed')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_lookups_say_what_is_missing():
    assert [e.id for e in registry.for_notebook("01")] == ["1.1", "1.2"] == [e.id for e in registry.for_notebook(1)]
    assert registry.get("3.4").reference_bases == {"MLMHead"} and registry.get("3.4").info() == {
        "title": "the tied MLM head (TiedMLMHead)",
        "points": 2,
    }
    with pytest.raises(KeyError, match=r"exercise '3.9' is not in the exercise registry .* which has 1.1, 1.2, 2.1"):
        registry.get("3.9")
    with pytest.raises(ValueError, match="must start with its notebook's"):
        Exercise("2.1", "01", "t", 1, "check_t", 1, {"t"})
    with pytest.raises(ValueError, match="starts with check_"):
        Exercise("1.9", "01", "t", 1, "t", 1, {"t"})
    with pytest.raises(AttributeError):  # frozen
        registry.get("1.1").points = 100
