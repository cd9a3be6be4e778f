"""nbgrader interoperability: `python -m course_admin.notebooks nbgrader OUT/` (course_admin.notebooks.
nbgrader_sources) writes nbgrader source notebooks, and nbgrader itself (the dev dependency, run as
`python -m nbgrader` in a subprocess) releases and autogrades them with the exercise registry's points.

The slow test runs nbgrader's real `generate_assignment` and `autograde` on notebook 02, offline under the
`ci` profile, for three submissions: the solution notebook itself (full points), the generated release
version (zero) and the solution with one exercise wrong (all points but that one's). (Notebook 01 was run
too until 2026-12-08, 44-64 s of the suite's time for the same path through nbgrader; its sources are
still checked against nbgrader's own validator below, and `WRONG` keeps its case: add "01" to
`NOTEBOOKS` to run it again.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.nbgraderformat import MetadataValidator

from course_admin import notebooks as nbs
from course_lib.checks import registry

# nbgrader's replacement for a solution block (ClearSolutions.code_stub for Python), at the block's indentation
STUB = "# YOUR CODE HERE\n{indent}raise NotImplementedError()"
# per notebook: an exercise to get wrong, and a body for it that runs but gives wrong results
WRONG = {
    "01": ("1.2", "    return list(word)  # no merges at all"),
    "02": ("2.3", "    return torch.zeros(1, block_size, dtype=torch.long)  # one block of zeros"),
}


def grade_ids(nb) -> list[str]:
    return [cell.metadata.nbgrader["grade_id"] for cell in nb.cells]


def test_nbgrader_sources_metadata(tmp_path):
    """Per cell kind the metadata nbgrader validates; points from the registry; the hidden block; unique ids."""
    written = nbs.nbgrader_sources(tmp_path)  # every notebook's
    stems = [p.stem for p in nbs.solution_paths()]
    assert len(stems) == 8 and [p.relative_to(tmp_path).as_posix() for p in written] == [
        f"source/{stem}/{stem}.ipynb" for stem in stems
    ]
    for path in written:
        nb = nbformat.read(path, as_version=4)
        solution = nbs.read(nbs.SOLUTIONS / path.name)
        # nbgrader's own check (schema version 3, grade ids, points), as generate_assignment runs it
        MetadataValidator().validate_nb(nb)
        assert len(set(grade_ids(nb))) == len(nb.cells)
        assert [c.id for c in nb.cells] == [c.id for c in solution.cells]
        exercises = {e.id: e for e in registry.for_notebook(path.name[:2])}
        seen = {"exercise": set(), "check": set()}
        for cell, original in zip(nb.cells, solution.cells):
            meta = cell.metadata.nbgrader
            assert meta["schema_version"] == 3 and meta["task"] is False
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
            role, number = nbs.cell_role(cell), nbs.cell_exercise(cell)
            if role == "exercise":
                seen["exercise"].add(number)
                assert meta == {
                    "grade": False,
                    "grade_id": "exercise-" + number.replace(".", "-"),
                    "locked": False,
                    "schema_version": 3,
                    "solution": True,
                    "task": False,
                }
                assert cell.source == original.source
            elif role == "check":
                seen["check"].add(number)
                exercise = exercises[number]
                assert (meta["grade"], meta["solution"], meta["locked"]) == (True, False, True)
                assert meta["grade_id"] == "check-" + number.replace(".", "-")
                assert meta["points"] == exercise.points
                # the visible call, then the same call with hidden=True between the hidden-tests lines
                call = original.source.rstrip().splitlines()[-1]
                assert call.startswith(f"checks.{exercise.checker}(") and call.endswith(")")
                hidden = call[:-1] + ", hidden=True)"
                assert cell.source == "\n".join([original.source.rstrip(), nbs.HIDDEN_BEGIN, hidden, nbs.HIDDEN_END])
            else:
                assert meta == {
                    "grade": False,
                    "grade_id": "locked-" + cell.id,
                    "locked": True,
                    "schema_version": 3,
                    "solution": False,
                    "task": False,
                }
                assert cell.source == original.source
        assert seen == {"exercise": set(exercises), "check": set(exercises)}


def test_a_solution_that_disagrees_with_the_registry_is_refused():
    """Points come from the registry; a solution whose metadata says otherwise is not converted."""
    changed = dict(registry.EXERCISES)
    old = changed["1.1"]
    changed["1.1"] = registry.Exercise(
        old.id, old.notebook, old.title, 9, old.checker, old.hidden_cases, old.references, old.reference_bases
    )
    with pytest.raises(nbs.NotebookFormatError, match="01_bpe_tokenizer.ipynb: exercise 1.1"):
        nbs.nbgrader_source(nbs.read(nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb"), "01_bpe_tokenizer.ipynb", changed)


def test_hidden_call_copies_the_arguments():
    assert (
        nbs.hidden_check_call("checks.check_x(save, load)", "check_x", "nb")
        == "checks.check_x(save, load, hidden=True)"
    )
    with pytest.raises(nbs.NotebookFormatError, match="nb: .*hidden="):
        nbs.hidden_check_call("checks.check_x(f, hidden=False)", "check_x", "nb")


def test_command_line(tmp_path, capsys):
    assert nbs.main(["nbgrader", str(tmp_path), "01"]) == 0
    assert (tmp_path / "source/01_bpe_tokenizer/01_bpe_tokenizer.ipynb").exists()
    assert "wrote" in capsys.readouterr().out


# --------------------------------------------------------------------------- nbgrader itself


def nbgrader(root: Path, *args: str) -> None:
    """Run `python -m nbgrader ARGS` on the course directory `root`, offline, under the ci profile."""
    env = {
        **os.environ,
        # nbgrader runs `alembic` (its database migrations) from PATH: the interpreter's bin folder
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "COURSE_PROFILE": "ci",
        "COURSE_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "COURSE_WORK_DIR": str(root / "runs"),
    }
    env.pop("COURSE_HIDDEN_CHECKS", None)
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}"]
    command += [f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}", "--force"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def answered(release, solution, wrong: str, body: str):
    """The release as a student hands it in: each exercise cell holds the solution's code (without the
    BEGIN/END lines), except exercise `wrong`, whose block is `body`. Its check cells are the release's,
    without the hidden block, which autograde must put back."""
    nb = nbformat.from_dict(release)
    answers = {nbs.cell_exercise(c): c.source for c in solution.cells if nbs.cell_role(c) == "exercise"}
    for cell in nb.cells:
        number = nbs.cell_exercise(cell)
        if nbs.cell_role(cell) != "exercise":
            continue
        lines = answers[number].splitlines()
        begin = next(i for i, line in enumerate(lines) if line.strip() == nbs.BEGIN)
        end = next(i for i, line in enumerate(lines) if line.strip() == nbs.END)
        block = [body] if number == wrong else lines[begin + 1 : end]
        cell.source = "\n".join([*lines[:begin], *block, *lines[end + 1 :]])
    return nb


NOTEBOOKS = ["02"]  # the notebooks the slow test releases and autogrades (WRONG has a case for each of 01, 02)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_nbgrader_releases_and_autogrades(tmp_path, notebook):
    root = tmp_path / "course"
    (source,) = nbs.nbgrader_sources(root, [notebook])
    assignment = source.stem
    nbgrader(root, "generate_assignment", assignment)

    # the release: nbgrader's stub where the solution was, no hidden tests, the visible check call kept
    release_path = root / "release" / assignment / source.name
    release = nbformat.read(release_path, as_version=4)
    solution = nbs.read(nbs.SOLUTIONS / source.name)
    text = release_path.read_text()
    assert nbs.BEGIN not in text and nbs.END not in text
    assert nbs.HIDDEN_BEGIN not in text and "hidden=True" not in text
    for cell, original in zip(release.cells, solution.cells):
        if nbs.cell_role(original) == "exercise":
            lines = original.source.splitlines()
            begin = next(i for i, line in enumerate(lines) if line.strip() == nbs.BEGIN)
            end = next(i for i, line in enumerate(lines) if line.strip() == nbs.END)
            indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
            stub = indent + STUB.format(indent=indent)
            assert cell.source == "\n".join([*lines[:begin], stub, *lines[end + 1 :]])
        elif nbs.cell_role(original) == "check":
            assert cell.source == original.source

    # three submissions: the source (solution) notebook itself, the release untouched, and the release
    # answered with the solution's code but one exercise wrong
    number, body = WRONG[notebook]
    submissions = {
        "solution": nbformat.read(source, as_version=4),
        "release": release,
        "wrong": answered(release, solution, number, body),
    }
    for student, nb in submissions.items():
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / source.name)
    nbgrader(root, "autograde", assignment)

    exercises = registry.for_notebook(notebook)
    total = sum(e.points for e in exercises)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        scores = {}
        for student in submissions:
            submitted = gradebook.find_submission(assignment, student)
            assert submitted.max_score == total
            (graded,) = submitted.notebooks
            scores[student] = {grade.name: grade.score for grade in graded.grades}
    ids = {e.id: "check-" + e.id.replace(".", "-") for e in exercises}
    assert scores["solution"] == {ids[e.id]: e.points for e in exercises}
    assert scores["release"] == {ids[e.id]: 0 for e in exercises}
    assert scores["wrong"] == {ids[e.id]: 0 if e.id == number else e.points for e in exercises}

    # the hidden cases ran when autograding the answered release: nbgrader put the hidden block back
    autograded = nbformat.read(root / "autograded" / "wrong" / assignment / source.name, as_version=4)
    outputs = {
        nbs.cell_exercise(cell): "".join(o.get("text", "") for o in cell.outputs)
        for cell in autograded.cells
        if nbs.cell_role(cell) == "check"
    }
    for exercise in exercises:
        hidden = f"{exercise.hidden_cases}/{exercise.hidden_cases} hidden checks"
        assert (hidden in outputs[exercise.id]) == (exercise.id != number), outputs[exercise.id]
