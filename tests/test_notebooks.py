"""The solutions -> student notebooks pipeline (course_admin.notebooks) and the committed notebooks."""

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_admin import notebooks as nbs

# --------------------------------------------------------------------------- a small synthetic notebook


def make_solution():
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell(nbs.SETUP_CELL),
        new_code_cell('def f(x):\n    """Double x."""\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION\n\nprint("defined")'),
        new_code_cell("# NBVAL_CHECK_OUTPUT\nchecks.check_f(f)"),
        new_code_cell("print(1 + 1)"),
    ]
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    cells[2].metadata = {"tags": ["exercise"], "course": {"exercise": "9.1"}}
    cells[3].metadata = {"tags": ["check"], "course": {"exercise": "9.1"}}
    cells[1].execution_count = 1
    for cell, text in [(cells[2], "defined\n"), (cells[3], "Exercise 9.1 passed: 1/1 checks\n"), (cells[4], "2\n")]:
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    cells[4].outputs.append(nbformat.v4.new_output(
        "display_data", data={"text/plain": "IntProgress(value=1)", nbs.WIDGET_MIME: {"model_id": "abc"}}))
    nb = new_notebook(cells=cells)
    nb.metadata["course"] = {"exercises": {"9.1": {"title": "double it", "points": 2}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_student_version_replaces_the_solution_and_keeps_the_rest():
    solution = make_solution()
    before = nbs.dumps(solution)
    student = nbs.student_version(solution, "x.ipynb")
    assert nbs.dumps(solution) == before, "the solution must not be modified"
    assert [c.id for c in student.cells] == [c.id for c in solution.cells]
    exercise, check, plain = student.cells[2], student.cells[3], student.cells[4]
    assert exercise.source == ('def f(x):\n    """Double x."""\n    raise NotImplementedError("Exercise 9.1: double it")\n'
                               '\nprint("defined")')
    assert exercise.outputs == [] and check.outputs == [] and exercise.execution_count is None
    assert "raises-exception" in exercise.metadata.tags and "raises-exception" in check.metadata.tags
    assert check.source == solution.cells[3].source
    assert [o.get("text") for o in plain.outputs] == ["2\n", None]
    assert nbs.WIDGET_MIME not in plain.outputs[1].data and "text/plain" in plain.outputs[1].data
    assert "widgets" not in student.metadata


def test_strip_solution_keeps_indentation_and_handles_several_blocks():
    source = "x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION\nif x:\n        ### BEGIN SOLUTION\n        pass\n        ### END SOLUTION"
    assert nbs.strip_solution(source, "1.2", "t") == (
        'x = 1\nraise NotImplementedError("Exercise 1.2: t")\nif x:\n        raise NotImplementedError("Exercise 1.2: t")'
    )


def break_metadata(nb):
    del nb.metadata["course"]


def unknown_exercise(nb):
    nb.cells[2].metadata["course"]["exercise"] = "9.9"


def unbalanced(nb):
    nb.cells[2].source = nb.cells[2].source.replace("### END SOLUTION", "")


def check_without_marker(nb):
    nb.cells[3].source = "checks.check_f(f)"


def no_check_cell(nb):
    del nb.cells[3]


def check_calls_no_checker(nb):
    nb.cells[3].source = "# NBVAL_CHECK_OUTPUT\nprint('Exercise 9.1 passed: 1/1 checks')"


def duplicate_id(nb):
    nb.cells[4].id = nb.cells[3].id


def no_setup_cell(nb):
    del nb.cells[1]


def untagged_solution(nb):
    nb.cells[4].source = "### BEGIN SOLUTION\nx = 1\n### END SOLUTION"


@pytest.mark.parametrize("breaker, message", [
    (break_metadata, "metadata.course.exercises"),
    (unknown_exercise, "'9.9' is not in"),
    (unbalanced, "matching"),
    (check_without_marker, "NBVAL_CHECK_OUTPUT"),
    (no_check_cell, "exercise 9.1 has no check cell"),
    (duplicate_id, "unique id"),
    (no_setup_cell, "setup cell"),
    (check_calls_no_checker, "must call a checker"),
    (untagged_solution, "no 'exercise' tag"),
])
def test_malformed_solutions_are_rejected_with_the_notebook_name(breaker, message):
    nb = make_solution()
    breaker(nb)
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(message)) as info:
        nbs.student_version(nb, "99_broken.ipynb")
    assert "99_broken.ipynb" in str(info.value)


def test_check_reports_stale_missing_and_stray_notebooks(tmp_path):
    solutions, students = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nb = make_solution()
    del nb.metadata["widgets"]
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    assert any("missing" in p for p in nbs.problems(solutions, students))
    nbs.build(solutions, students)
    assert nbs.problems(solutions, students) == []
    nb.cells[4].source = "print(3)"
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    assert any("stale" in p for p in nbs.problems(solutions, students))
    nbs.build(solutions, students)
    (students / "10_hand_made.ipynb").write_text(nbs.dumps(nb))
    assert any("10_hand_made.ipynb: has no solution" in p for p in nbs.problems(solutions, students))


def test_check_reports_dirty_solutions(tmp_path):
    solutions, students = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nb = make_solution()  # still holds widget state
    nb.cells[4].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    nb.cells[3].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="warning\n"))
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    nbs.build(solutions, students)
    found = "\n".join(nbs.problems(solutions, students))
    assert "widget state" in found and "stored error (ValueError)" in found and "stderr" in found


def test_an_unreadable_solution_is_named(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "09_bad.ipynb").write_text("{not json")
    found = nbs.problems(tmp_path / "solutions", tmp_path / "notebooks")
    assert len(found) == 1 and "09_bad.ipynb: not a readable notebook" in found[0]


# --------------------------------------------------------------------------- the committed notebooks


def test_committed_student_notebooks_are_up_to_date():
    assert nbs.problems() == [], "\n".join(nbs.problems())
    assert nbs.main(["check"]) == 0


SOLUTIONS = nbs.solution_paths()


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_student_notebook_matches_its_solution_cell_for_cell(path):
    solution = nbformat.read(str(path), as_version=4)
    student = nbformat.read(str(nbs.NOTEBOOKS / path.name), as_version=4)
    assert [c.id for c in student.cells] == [c.id for c in solution.cells]
    for s_cell, t_cell in zip(solution.cells, student.cells):
        if nbs.cell_role(s_cell) == "exercise":
            number = nbs.cell_exercise(s_cell)
            assert f'raise NotImplementedError("Exercise {number}: ' in t_cell.source
            assert nbs.BEGIN not in t_cell.source
            outside = re.sub(rf"{nbs.BEGIN}.*?{nbs.END}", "", s_cell.source, flags=re.S).split("\n")
            assert [line for line in outside if line.strip()] == [
                line for line in t_cell.source.split("\n") if line.strip() and "NotImplementedError" not in line]
        else:
            assert t_cell.source == s_cell.source


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_stores_a_pass_line_for_every_exercise(path):
    nb = nbformat.read(str(path), as_version=4)
    stored = {nbs.cell_exercise(c): "".join(o.get("text", "") for o in c.outputs)
              for c in nb.cells if nbs.cell_role(c) == "check"}
    assert set(stored) == set(nbs.exercises(nb))
    for number, text in stored.items():
        assert re.fullmatch(rf"Exercise {re.escape(number)} passed: (\d+)/\1 checks\n", text), (number, text)


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_metadata_gives_points(path):
    meta = json.loads(path.read_text())["metadata"]["course"]
    assert meta["notebook"] == path.name[:2]
    for number, info in meta["exercises"].items():
        assert number.startswith(str(int(path.name[:2])) + ".") and info["points"] > 0 and info["title"]


def test_no_unfilled_number_placeholders_in_the_course_text():
    """Numbers in notebook text are filled in from stored outputs after a run; none may be left as {{NAME}}."""
    texts = {path.name: "\n".join(c.source for c in nbs.read(path).cells) for path in nbs.solution_paths()}
    texts["README.md"] = (nbs.ROOT / "README.md").read_text()
    for doc in (nbs.ROOT / "docs").glob("*.md"):
        texts[doc.name] = doc.read_text()
    for name, text in texts.items():
        assert not re.search(r"\{\{[A-Z0-9_]+\}\}", text), f"{name} still has a placeholder"
