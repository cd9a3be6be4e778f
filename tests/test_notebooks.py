"""The solutions -> student notebooks pipeline (course_admin.notebooks) and the committed notebooks."""

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_admin import notebooks as nbs
from course_lib.checks.registry import Exercise

# --------------------------------------------------------------------------- a small synthetic notebook

UPSTREAM = nbs.Location("https://github.com/mlm-pretraining-course/course", "main")
# the exercise registry of the synthetic notebook 09 (the course's registry has no notebook 09)
REGISTRY = {"9.1": Exercise("9.1", "09", "double it", points=2, checker="check_f", hidden_cases=1, references={"f"})}


def make_solution():
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell(nbs.setup_cell("09", UPSTREAM)),
        new_code_cell(
            'def f(x):\n    """Double x."""\n    ### BEGIN SOLUTION\n'
            '    y = 2 * x\n    return y\n    ### END SOLUTION\n\nprint("defined")'
        ),
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
    cells[4].outputs.append(
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "IntProgress(value=1)", nbs.WIDGET_MIME: {"model_id": "abc"}}
        )
    )
    nb = new_notebook(cells=cells)
    nb.metadata["course"] = {"notebook": "09", "exercises": {"9.1": {"title": "double it", "points": 2}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_student_version_replaces_the_solution_and_keeps_the_rest():
    solution = make_solution()
    before = nbs.dumps(solution)
    student = nbs.student_version(solution, "x.ipynb", REGISTRY)
    assert nbs.dumps(solution) == before, "the solution must not be modified"
    rules = student.cells.pop(1)  # after the title: how the notebook is graded
    assert rules.id == nbs.RULES_ID and rules.source == nbs.GRADING_RULES
    assert [c.id for c in student.cells] == [c.id for c in solution.cells]
    exercise, check, plain = student.cells[2], student.cells[3], student.cells[4]
    assert exercise.source == (
        'def f(x):\n    """Double x."""\n    raise NotImplementedError("Exercise 9.1: double it")\n\nprint("defined")'
    )
    assert exercise.outputs == [] and check.outputs == [] and exercise.execution_count is None
    assert "raises-exception" in exercise.metadata.tags and "raises-exception" in check.metadata.tags
    assert check.source == solution.cells[3].source
    assert [o.get("text") for o in plain.outputs] == ["2\n", None]
    assert nbs.WIDGET_MIME not in plain.outputs[1].data and "text/plain" in plain.outputs[1].data
    assert "widgets" not in student.metadata
    assert student.metadata.course.exercises == {"9.1": {"title": "double it", "points": 2}}


def test_strip_solution_keeps_indentation_and_handles_several_blocks():
    source = (
        "x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION\nif x:\n"
        "        ### BEGIN SOLUTION\n        pass\n        ### END SOLUTION"
    )
    assert nbs.strip_solution(source, "1.2", "t") == (
        'x = 1\nraise NotImplementedError("Exercise 1.2: t")\n'
        'if x:\n        raise NotImplementedError("Exercise 1.2: t")'
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


def other_title(nb):
    nb.metadata["course"]["exercises"]["9.1"]["title"] = "double"


def other_points(nb):
    nb.metadata["course"]["exercises"]["9.1"]["points"] = 3


def unregistered_in_metadata(nb):
    nb.metadata["course"]["exercises"]["9.2"] = {"title": "triple it", "points": 1}


def not_in_metadata(nb):
    del nb.metadata["course"]["exercises"]["9.1"]
    nb.metadata["course"]["exercises"]["9.2"] = {"title": "triple it", "points": 1}


def other_checker(nb):
    nb.cells[3].source = "# NBVAL_CHECK_OUTPUT\nchecks.check_g(f)"


def two_checkers(nb):
    nb.cells[3].source = "# NBVAL_CHECK_OUTPUT\nchecks.check_f(f)\nchecks.check_g(f)"


def second_exercise_cell(nb):
    nb.cells.insert(3, nbformat.from_dict({**nb.cells[2], "id": "cell-2b"}))


def other_notebook_number(nb):
    nb.metadata["course"]["notebook"] = "08"


@pytest.mark.parametrize(
    "breaker, message",
    [
        (break_metadata, "metadata.course.exercises"),
        (unknown_exercise, "'9.9' is not in the exercise registry's exercises of notebook 09 (9.1)"),
        (unbalanced, "matching"),
        (check_without_marker, "NBVAL_CHECK_OUTPUT"),
        (no_check_cell, "exercise 9.1 has no check cell"),
        (duplicate_id, "unique id"),
        (no_setup_cell, "setup cell"),
        (check_calls_no_checker, "must call a checker from course_lib.checks: exercise 9.1's, checks.check_f(...)"),
        (untagged_solution, "no 'exercise' tag"),
        (
            other_title,
            "exercise 9.1: metadata.course.exercises says {'title': 'double', 'points': 2}, the exercise "
            "registry {'title': 'double it', 'points': 2}",
        ),
        (other_points, "exercise 9.1: metadata.course.exercises says {'title': 'double it', 'points': 3}"),
        (
            unregistered_in_metadata,
            "metadata.course.exercises has exercise 9.2, which the exercise registry does not give notebook 09",
        ),
        (not_in_metadata, "metadata.course.exercises has exercise 9.2"),
        (
            other_checker,
            "the check cell of exercise 9.1 calls checks.check_g; the exercise registry's checker for it "
            "is checks.check_f",
        ),
        (two_checkers, "calls checks.check_f, checks.check_g"),
        (second_exercise_cell, "exercise 9.1 has a second exercise cell"),
        (other_notebook_number, "metadata.course.notebook is '08', but the file name says '09'"),
    ],
)
def test_malformed_solutions_are_rejected_with_the_notebook_name(breaker, message):
    nb = make_solution()
    breaker(nb)
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(message)) as info:
        nbs.student_version(nb, "09_broken.ipynb", REGISTRY)
    assert "09_broken.ipynb" in str(info.value)


def test_a_registry_exercise_without_its_cells_or_metadata_fails():
    """The registry is the source of truth: an entry added to it needs its metadata and cells, an entry
    removed from it must leave the notebook too."""
    nb = make_solution()
    nbs.validate(nb, "09_x.ipynb", REGISTRY)
    more = {**REGISTRY, "9.2": Exercise("9.2", "09", "triple it", 1, "check_g", 1, {"g"})}
    with pytest.raises(
        nbs.NotebookFormatError,
        match=re.escape("09_x.ipynb: exercise 9.2 (triple it) is in the exercise registry but not in metadata.course"),
    ):
        nbs.validate(nb, "09_x.ipynb", more)
    nb.metadata["course"]["exercises"]["9.2"] = {"title": "triple it", "points": 1}
    message = "09_x.ipynb: exercise 9.2 has no check or exercise cell (the exercise registry lists it for notebook 09)"
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(message)):
        nbs.validate(nb, "09_x.ipynb", more)
    with pytest.raises(
        nbs.NotebookFormatError,
        match="09_x.ipynb: metadata.course.exercises has exercise 9.1, which "
        "the exercise registry does not give notebook 09",
    ):
        nbs.validate(make_solution(), "09_x.ipynb", {})


def test_the_student_notebook_takes_titles_and_points_from_the_registry():
    """What `validate` lets through equals the registry already; the build writes the registry's values."""
    student = nbs.student_version(make_solution(), "09_x.ipynb", REGISTRY)
    assert 'raise NotImplementedError("Exercise 9.1: double it")' in student.cells[3].source
    assert student.metadata.course.exercises == {"9.1": REGISTRY["9.1"].info()}


def test_check_reports_stale_missing_and_stray_notebooks(tmp_path):
    solutions, students = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nb = make_solution()
    del nb.metadata["widgets"]
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    assert any("missing" in p for p in nbs.problems(solutions, students, REGISTRY))
    nbs.build(solutions, students, REGISTRY)
    assert nbs.problems(solutions, students, REGISTRY) == []
    nb.cells[4].source = "print(3)"
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    assert any("stale" in p for p in nbs.problems(solutions, students, REGISTRY))
    nbs.build(solutions, students, REGISTRY)
    (students / "10_hand_made.ipynb").write_text(nbs.dumps(nb))
    assert any("10_hand_made.ipynb: has no solution" in p for p in nbs.problems(solutions, students, REGISTRY))
    more = {**REGISTRY, "10.1": Exercise("10.1", "10", "t", 1, "check_t", 1, {"t"})}
    assert any(
        "no 10_*.ipynb, but the exercise registry has exercises 10.1 for notebook 10" in p
        for p in nbs.problems(solutions, students, more)
    )


def test_check_reports_dirty_solutions(tmp_path):
    solutions, students = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nb = make_solution()  # still holds widget state
    nb.cells[4].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    nb.cells[3].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="warning\n"))
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    nbs.build(solutions, students, REGISTRY)
    found = "\n".join(nbs.problems(solutions, students, REGISTRY))
    assert "widget state" in found and "stored error (ValueError)" in found and "stderr" in found


def test_an_unreadable_solution_is_named(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "09_bad.ipynb").write_text("{not json")
    found = nbs.problems(tmp_path / "solutions", tmp_path / "notebooks", REGISTRY)
    assert len(found) == 1 and "09_bad.ipynb: not a readable notebook" in found[0]


# --------------------------------------------------------------------------- the published location


def test_a_fork_changes_the_location_in_pyproject_and_rebuilds(tmp_path):
    """One place for the published URL and branch: [tool.course] in pyproject.toml. The build writes it into
    every setup cell and badge (solutions, student notebooks, README); `check` flags anything written for
    another location; `validate` (and so the grader) accepts either."""
    solutions, students = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nb = make_solution()
    del nb.metadata["widgets"]
    (solutions / "09_x.ipynb").write_text(nbs.dumps(nb))
    readme = tmp_path / "README.md"
    readme.write_text("| 09 | [doubling](notebooks/09_x.ipynb) | x |\n")
    nbs.build(solutions, students, REGISTRY, UPSTREAM, readme)
    assert nbs.problems(solutions, students, REGISTRY, UPSTREAM, readme) == []

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        nbs.PYPROJECT.read_text()
        .replace(
            'repository = "https://github.com/mlm-pretraining-course/course"',
            'repository = "https://github.com/ada/mlm-fork"',
        )
        .replace('branch = "main"', 'branch = "spring-2027"')
    )
    fork = nbs.location(pyproject)
    assert fork == nbs.Location("https://github.com/ada/mlm-fork", "spring-2027")
    stale = "\n".join(nbs.problems(solutions, students, REGISTRY, fork, readme))
    assert "09_x.ipynb: its badge or setup cell is not for https://github.com/ada/mlm-fork (spring-2027)" in stale
    assert "notebooks/09_x.ipynb: stale" in stale and "README.md: its Colab badges" in stale

    nbs.build(solutions, students, REGISTRY, fork, readme)
    assert nbs.problems(solutions, students, REGISTRY, fork, readme) == []
    for folder in ("solutions", "notebooks"):
        built = nbs.read(tmp_path / folder / "09_x.ipynb")
        assert built.cells[0].id == nbs.BADGE_ID
        assert built.cells[0].source == (
            "[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/ada/mlm-fork/blob/spring-2027/{folder}/09_x.ipynb)"
        )
        setup = next(c for c in built.cells if c.cell_type == "code")
        assert 'COURSE = "course-lib @ git+https://github.com/ada/mlm-fork@spring-2027"' in setup.source
        assert "mlm-pretraining-course" not in nbs.dumps(built)
        if folder == "solutions":
            nbs.validate(built, "09_x.ipynb", REGISTRY)  # the grader's check accepts any location
    solution = nbs.read(solutions / "09_x.ipynb")
    assert [c.get("outputs") for c in solution.cells[1:]] == [c.get("outputs") for c in nb.cells], "outputs kept"
    assert "(notebooks/09_x.ipynb) [![Open in Colab]" in readme.read_text()
    assert "ada/mlm-fork/blob/spring-2027/notebooks/09_x.ipynb" in readme.read_text()
    nbs.build(solutions, students, REGISTRY, fork, readme)
    assert readme.read_text().count("Open in Colab") == 1, "a second build replaces the badge, adds none"


@pytest.mark.parametrize(
    "table, message",
    [
        ("", "no readable [tool.course] table"),
        ('[tool.course]\nrepository = "github.com/x/y"\nbranch = "main"', "give a URL that git clones"),
        ('[tool.course]\nrepository = "https://github.com/x/y"\nbranch = "a b"', "branch = 'a b'"),
        ('[tool.course]\nrepository = "https://github.com/x/y"', "branch = None"),
    ],
)
def test_a_bad_location_names_the_file_and_key(tmp_path, table, message):
    (tmp_path / "pyproject.toml").write_text(table)
    with pytest.raises(nbs.NotebookFormatError, match=re.escape(message)) as info:
        nbs.location(tmp_path / "pyproject.toml")
    assert "pyproject.toml" in str(info.value)


def test_a_repository_off_github_gets_a_line_instead_of_a_badge():
    where = nbs.Location("https://gitlab.example.org/me/course", "main")
    assert where.colab_url("notebooks/01_x.ipynb") is None
    assert "Colab opens notebooks from GitHub only" in where.badge("notebooks/01_x.ipynb")
    assert nbs.Location("https://github.com/me/course.git", "dev").colab_url("notebooks/01_x.ipynb") == (
        "https://colab.research.google.com/github/me/course/blob/dev/notebooks/01_x.ipynb"
    )


def test_the_location_is_written_nowhere_else_by_hand():
    """The URL appears in pyproject.toml and in what the build writes (notebooks, README badges), in no code."""
    url = nbs.location().repository
    for path in [
        *nbs.ROOT.glob("course_lib/**/*.py"),
        *nbs.ROOT.glob("course_admin/*.py"),
        *nbs.ROOT.glob("docs/*.md"),
    ]:
        assert url not in path.read_text(), path
    readme = nbs.readme_with_badges(nbs.README.read_text(), nbs.Location("https://github.com/x/y", "z"))
    assert url not in readme, "the README names the URL only in the badges the build writes"


@pytest.mark.parametrize("notebook", ["01", "07"])
def test_off_colab_the_setup_cell_only_checks_the_install(notebook, tmp_path):
    """With the course installed it does nothing; without it (python -S: no site-packages) it raises, naming
    what is missing and the command that installs it."""
    setup = nbs.setup_cell(notebook, UPSTREAM)
    (tmp_path / "setup.py").write_text(setup + "\nprint('ready')\n")
    import subprocess
    import sys

    installed = subprocess.run([sys.executable, "setup.py"], cwd=tmp_path, capture_output=True, text=True)
    assert installed.returncode == 0 and installed.stdout == "ready\n", installed.stderr
    bare = subprocess.run([sys.executable, "-S", "setup.py"], cwd=tmp_path, capture_output=True, text=True)
    assert bare.returncode == 1 and "ready" not in bare.stdout
    needed = "course_lib, deepspeed" if notebook == "07" else "course_lib"
    assert f"ModuleNotFoundError: not installed: {needed}; in the course folder: make lab" in bare.stderr


def test_each_notebook_installs_only_its_own_extras():
    for path in nbs.solution_paths():
        number = path.name[:2]
        setup = next(c for c in nbs.read(path).cells if c.cell_type == "code").source
        extras = {"06": "[transfer]", "07": "[deepspeed]"}.get(number, "")
        assert f'COURSE = "course-lib{extras} @ git+' in setup, path.name
        shell = [line for line in setup.splitlines() if line.lstrip().startswith(("!", "%"))]
        assert not shell, "no shell escapes or magics: a failed install must raise"


# --------------------------------------------------------------------------- the committed notebooks


def test_committed_student_notebooks_are_up_to_date():
    assert nbs.problems() == [], "\n".join(nbs.problems())
    assert nbs.main(["check"]) == 0


SOLUTIONS = nbs.solution_paths()


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_student_notebook_matches_its_solution_cell_for_cell(path):
    solution = nbformat.read(str(path), as_version=4)
    student = nbformat.read(str(nbs.NOTEBOOKS / path.name), as_version=4)
    student.cells = [c for c in student.cells if c.get("id") != nbs.RULES_ID]  # tested in test_grade.py
    assert [c.id for c in student.cells] == [c.id for c in solution.cells]
    for s_cell, t_cell in zip(solution.cells, student.cells):
        if nbs.cell_role(s_cell) == "exercise":
            number = nbs.cell_exercise(s_cell)
            assert f'raise NotImplementedError("Exercise {number}: ' in t_cell.source
            assert nbs.BEGIN not in t_cell.source
            outside = re.sub(rf"{nbs.BEGIN}.*?{nbs.END}", "", s_cell.source, flags=re.S).split("\n")
            assert [line for line in outside if line.strip()] == [
                line for line in t_cell.source.split("\n") if line.strip() and "NotImplementedError" not in line
            ]
        elif s_cell.id == nbs.BADGE_ID:  # each badge opens its own file
            assert t_cell.source == s_cell.source.replace("/solutions/", "/notebooks/")
        else:
            assert t_cell.source == s_cell.source


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_stores_a_pass_line_for_every_exercise(path):
    nb = nbformat.read(str(path), as_version=4)
    stored = {
        nbs.cell_exercise(c): "".join(o.get("text", "") for o in c.outputs)
        for c in nb.cells
        if nbs.cell_role(c) == "check"
    }
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
