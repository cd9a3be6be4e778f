"""Grade student notebooks: `python -m course_admin.grade SUBMISSION.ipynb ... [--report grades.csv]`.

For each submission (also installed as the console script `course-grade`):

1. find which course notebook it is (`metadata.course.notebook`, else the cell ids it shares with a
   solution, else its file name) and take that solution notebook as the reference;
2. take from the submission only the *source* of each exercise cell, matched by cell id, else by
   `metadata.course.exercise`, else by the `Exercise N.k:` text or the function/class it defines;
   nothing else is used (its metadata only says which notebook and student it is): not its outputs,
   not its other cells, not its points;
3. put the sources into the reference and run it with nbval in a fresh kernel, isolated (see
   `course_admin.sandbox`: under bubblewrap where it works, with no network, a read-only system and a
   private folder, HOME and /tmp; else process-level measures and a check of the environment afterwards),
   on a copy of course_lib in which the course's implementations of the notebook's exercises are stubs
   (`judge.stubbed`), under `COURSE_PROFILE=ci`, with a time limit per cell, skipping the reference's
   cells that cannot run while answers are withheld (`withheld_cells`: found once per notebook, by
   grading the reference solution itself);
4. each check cell there only *observes* the student's code (every case, hidden ones included) and sends
   the observations, as plain data, to the judge (`course_admin.judge`), a process of the grader's own that
   computes what the course expects and compares; its verdicts are the grades, whatever the kernel prints.
   Once an exercise is judged, the judge hands the kernel back the course's implementation, for the cells
   after it;
5. score each exercise with its points in the exercise registry (`course_lib/checks/registry.py`,
   which the reference's `metadata.course.exercises` must agree with). A cell that hits the time
   limit costs its exercise only: the run is repeated with the reference solution in that
   exercise's place, to grade the exercises after it.

A cell that uses the name of the answer it should write (`reference_use`: the course's function, or the
library the checker compares with) is graded like any other; its feedback carries a hint for the instructor.
Statuses: passed, failed (the check failed, or the exercise cell raised), timeout, missing (no cell
for the exercise), error (unreadable notebook, or a run that could not be graded).
The student is the file name without `.ipynb`, or the name of the folder when the file keeps its course
name (e.g. `alice/01_bpe_tokenizer.ipynb`): where the instructor put it. `metadata.course.student` is only
compared with it (a different name is reported, not used), and two files that would be the same student's
same notebook are graded apart, each named with its path.
The exit status is 0 whenever grading ran, whatever the scores.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import course_lib
from course_lib import paths
from course_lib.checks import grading, registry
from course_lib.checks.framework import pass_line

from . import judge, sandbox
from . import notebooks as nbs

LIBRARY = Path(course_lib.__file__).resolve().parent  # each run gets a copy: it can change only that copy
RESOURCES = ("configs", "results", "models")  # shipped files copied next to it, found through $COURSE_ROOT
SANITIZE = Path(__file__).resolve().parent / "nbval_sanitize.cfg"  # the same rules as the test suite's
DEFAULT_TIMEOUT = 120  # seconds per cell

CHECKS = """\
# (grader) this cell observes your code; the grader's own process judges what it gives
from course_lib.checks.grading import Checks as _Checks
checks = _Checks()
"""
# ... and if the call cannot even start (the function is not defined), it tells the judge so
CHECK_CALL = """\
try:
{call}
except BaseException as _error:
    checks.unreached({number!r}, _error)
    raise
"""


@dataclass
class Result:
    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str
    message: str = ""
    file: str = ""


@dataclass
class Graded:
    """One submission: its rows, and notes for the instructor (reference cells that failed)."""

    path: Path
    student: str
    notebook: str
    results: list[Result]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- references and matching


def load_references(solutions: Path = nbs.SOLUTIONS) -> dict[str, object]:
    """The reference notebooks: file stem ("01_bpe_tokenizer") -> notebook, each checked by `validate`."""
    references = {}
    for path in sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb")):
        nb = nbs.read(path)
        nbs.validate(nb, path.name)
        references[path.stem] = nb
    if not references:
        raise nbs.NotebookFormatError(f"{solutions}: no solution notebooks (NN_topic.ipynb)")
    return references


def by_content(nb, references: dict) -> str | None:
    """The reference a notebook's metadata (`course.notebook`) or, failing that, its cell ids say it is."""
    number = str(nb.metadata.get("course", {}).get("notebook", ""))
    by_number = [stem for stem in references if number and stem.startswith(number + "_")]
    if len(by_number) == 1:
        return by_number[0]
    ids = {cell.get("id") for cell in nb.cells}
    shared = {stem: len(ids & {c.id for c in ref.cells}) for stem, ref in references.items()}
    best = max(shared, key=shared.get)
    return best if shared[best] >= 3 else None


def identify(nb, path: Path, references: dict, notebook: str | None = None) -> str | None:
    """Which reference a submission (or, with nb=None, an unreadable file) is; `notebook` ("01") decides."""
    if notebook:
        return next((stem for stem in references if stem == notebook or stem.startswith(notebook + "_")), None)
    found = by_content(nb, references) if nb is not None else None
    if found is not None:
        return found
    named = by_name(path, references)
    return named[0] if len(named) == 1 else None


def by_name(path: Path, references: dict) -> list[str]:
    """The references that the file's path names (`01_bpe_tokenizer` in a folder or file name, or a file name
    starting `01_`)."""
    return [stem for stem in references if stem in str(path) or path.name.startswith(stem[:3])]


def which_notebook(nb, path: Path, references: dict, notebook: str | None = None) -> tuple[str | None, str | None]:
    """The reference a submission is graded as, and a note or None. `notebook` ("01") decides; else the file
    or folder name when it names exactly one course notebook (`05_multilingual_sampling.ipynb`,
    `01_bpe_tokenizer/alice.ipynb`), with a note when the notebook's content (its metadata, its cell ids)
    says another; else the content (`by_content`)."""
    if notebook:
        return identify(nb, path, references, notebook), None
    named = by_name(path, references)
    content = by_content(nb, references) if nb is not None else None
    if len(named) == 1:
        if content is not None and content != named[0]:
            return named[0], f"the file is named as {named[0]} but its content is {content}'s: graded as {named[0]}"
        return named[0], None
    return content, None


def student_name(nb, path: Path, references: dict) -> str:
    """Who handed the file in, from where the instructor put it: the folder when the file kept its course
    name (`alice/01_bpe_tokenizer.ipynb`), else the file name (`01/alice.ipynb`). Never the notebook's own
    metadata, which the student can edit: see `claimed_name`."""
    return path.parent.name if path.stem in references else path.stem


def claimed_name(nb, student: str) -> str | None:
    """A note when the notebook's `metadata.course.student` names someone other than its file does, else None."""
    named = nb.metadata.get("course", {}).get("student") if nb is not None else None
    if isinstance(named, str) and named.strip() and named.strip() != student:
        return f"the notebook's metadata names {named.strip()!r}, but the file is {student!r}'s: graded as {student!r}"
    return None


def defined_names(source: str) -> set[str]:
    """Functions and classes a cell defines at its top level (empty if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def match_exercises(reference, submission) -> dict[str, str | None]:
    """Exercise number -> the source of the submission's cell for it, or None if there is none."""
    code = [c for c in submission.cells if c.get("cell_type") == "code" and nbs.cell_role(c) != "check"]
    found = {}
    for cell in reference.cells:
        if nbs.cell_role(cell) != "exercise":
            continue
        number, names = nbs.cell_exercise(cell), defined_names(cell.source)
        candidates = (
            [c for c in code if c.get("id") == cell.id]
            or [c for c in code if nbs.cell_exercise(c) == number]
            or [c for c in code if f"Exercise {number}:" in c.source or names & defined_names(c.source)]
        )
        found[number] = candidates[-1].source if candidates else None  # the last one, as "Run All" would
    return found


# --------------------------------------------------------------------------- hints


def _python(source: str) -> ast.AST | None:
    """The cell as Python, magics and shell commands turned into get_ipython() calls; None if invalid."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return None  # it will fail when run, with the error to show


def reference_use(number: str, source: str) -> str | None:
    """Why exercise `number`'s cell may hand in someone else's answer instead of the student's code, or None
    (a hint for the instructor, never a grade: the course's own implementation is a stub while grading):
    it uses one of the exercise's `references` in the registry (the reference in course_lib, or the library
    the checker compares with), calls `super().forward`, or calls the `forward` of one of its
    `reference_bases` (the course class it inherits from: `EncoderBlock.forward(self, x)`)."""
    tree = _python(source)
    if tree is None:
        return None
    exercise = registry.EXERCISES.get(number)
    names = exercise.references if exercise else frozenset()
    bases = exercise.reference_bases if exercise else frozenset()
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):  # a bare name may be the cell's own function (recursion); `module.name` is not
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names - own:
            return f"uses {node.id}, the answer it should write"
        if isinstance(node, ast.Attribute) and node.attr in names:
            return f"uses {node.attr}, the answer it should write"
        if isinstance(node, ast.Attribute) and node.attr == "forward":
            base = node.value
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                return "calls super().forward, the course's answer"
            if getattr(base, "attr", getattr(base, "id", None)) in bases:
                return "calls the course class's forward, the course's answer"
    return None


# --------------------------------------------------------------------------- assembling and running


STAND_IN = """\
# (grader) exercise {number} is not graded from this run (no cell for it, or it ran past the time limit):
# the course's own implementation stands in, for the cells after it
from course_lib.checks.grading import Checks as _Checks
_Checks().unreached({number!r}, RuntimeError("not graded from this run"))
del _Checks
{stand_in}"""


def assemble(reference, sources: dict[str, str], skip=(), standing_in=()):
    """The reference with `sources` in its exercise cells and check cells that submit to the judge
    (`CHECKS`), which then expect the hidden pass line; the code cells at the indexes in `skip` are not run
    (`withheld_cells`). The exercises in `standing_in` (already decided: missing, or past the time limit) get
    `STAND_IN` instead, the course's implementation from the judge (registry.STAND_INS: never the solution
    cell's text), and their check cells are not run. Returns (notebook, {code cell index: (number, role)})."""
    nb = copy.deepcopy(reference)
    nb.metadata.pop("widgets", None)
    roles = {}
    for index, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        role, number = nbs.cell_role(cell), nbs.cell_exercise(cell)
        if role == "exercise" and number in standing_in:
            cell.source = STAND_IN.format(number=number, stand_in=registry.STAND_INS[number])
            cell.outputs = []
        elif role == "check" and number in standing_in:
            cell.source = "# NBVAL_SKIP\n# (grader: this exercise is already decided)\n"
        elif role == "exercise":
            # a student's `# NBVAL_...` comment must not change how nbval treats the cell
            cell.source = re.sub(r"^(\s*#+\s*)NBVAL_", r"\1NBVAL-ignored_", sources[number], flags=re.M)
            cell.outputs = []
        elif role == "check":
            stored = "".join(o.get("text", "") for o in cell.outputs)
            found = re.fullmatch(rf"Exercise {re.escape(number)} passed: (\d+)/\1 checks\n", stored)
            if not found:
                raise nbs.NotebookFormatError(f"check cell of exercise {number} stores {stored!r}, not its pass line")
            expected = pass_line(number, int(found.group(1)), registry.get(number).hidden_cases) + "\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=expected)]
            marker, _, rest = cell.source.partition("\n")
            call = CHECK_CALL.format(call=textwrap.indent(rest.strip(), "    "), number=number)
            cell.source = f"{marker}\n{CHECKS}{call}"
        elif index in skip:
            cell.source = "# NBVAL_SKIP\n# (grader: this cell needs an answer still withheld)\n" + cell.source
        if role:
            roles[index] = (number, role)
    return nb, roles


_WITHHELD: dict[str, list[int]] = {}
_WITHHELD_LOCKS: dict[str, threading.Lock] = {}  # one per reference: different notebooks' runs go side by side
_WITHHELD_LOCK = threading.Lock()  # guards _WITHHELD_LOCKS


def withheld_cells(reference, stem: str, library: dict[str, bytes], timeout: int, threads=None, log=None) -> list[int]:
    """The reference's code cells (not exercise or check cells) that cannot run while answers are withheld:
    those that use an exercise's implementation before that exercise is judged (notebook 04 trains, and so
    checkpoints, before exercise 4.3 asks for save_checkpoint), and those that need what they compute. Found
    by grading the reference solution itself once (remembered for the same notebook and library), which must
    then pass every exercise; submissions' runs skip these cells."""
    key = hashlib.sha256(nbs.dumps(reference).encode() + b"".join(library[k] for k in sorted(library))).hexdigest()
    with _WITHHELD_LOCK:
        lock = _WITHHELD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _WITHHELD:
            solutions = {nbs.cell_exercise(c): c.source for c in reference.cells if nbs.cell_role(c) == "exercise"}
            withheld: list[int] = []
            while True:  # a skipped cell may have defined what a later one needs: until no more fail
                nb, roles = assemble(reference, solutions, withheld)
                run = run_nbval(nb, timeout, library, threads=threads, notebook=stem[:2])
                judged = {n: v.get("status") for n, v in run.verdicts.items()}
                if any(judged.get(n) != "passed" for n in solutions):
                    raise RuntimeError(
                        f"the reference solution of {stem} does not pass under the grader (verdicts: {judged}): "
                        "the course has a bug"
                    )
                failed = [i for i, (outcome, _) in run.outcomes.items() if i not in roles and outcome == "failed"]
                if not failed:
                    break
                withheld = sorted(set(withheld) | set(failed))
            _WITHHELD[key] = withheld
            if withheld and log:
                print(
                    f"notebook {stem}: code cells {withheld} of the reference are skipped while grading "
                    "(they need an answer still withheld, or what such a cell computes)",
                    file=log,
                )
        return _WITHHELD[key]


def _clean(text: str) -> str:
    return re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text or "")  # colour codes, as text or as junit would write them


def _error_text(report: str) -> str:
    """The exception (type and message) at the end of an nbval failure report, or its first lines."""
    report = _clean(report)
    if "Cell outputs differ" in report:
        return (
            "the check printed other output than expected:\n" + report.split("Cell outputs differ", 1)[1].strip()[-800:]
        )
    tail = report.split("Traceback:", 1)[-1]
    found = list(re.finditer(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failed|Exit|Interrupt)\b.*)$", tail, re.M))
    return tail[found[-1].start() :].strip()[:2000] if found else tail.strip()[-800:]


def course_files(solutions: Path = nbs.SOLUTIONS) -> dict[Path, bytes]:
    """The library and the solutions as they are now: runs get their copy of the library from this."""
    return {p: p.read_bytes() for p in [*LIBRARY.rglob("*.py"), *Path(solutions).glob("*.ipynb")]}


def library_files(files: dict[Path, bytes] | None = None) -> dict[str, bytes]:
    """course_lib's Python files, subpackages included (path inside course_lib -> content), from `files`
    (`course_files()`), else as they are now."""
    files = files if files is not None else {p: p.read_bytes() for p in LIBRARY.rglob("*.py")}
    return {p.relative_to(LIBRARY).as_posix(): data for p, data in files.items() if LIBRARY in p.parents}


@dataclass
class Run:
    """What one run of a submission gave: nbval's outcome per code cell ({index: (outcome, message)}: passed,
    failed, timeout (or the kernel died), skipped), the judge's verdicts ({exercise: {"status", "text"}}),
    and notes for the instructor (processes left running, changes to the environment)."""

    outcomes: dict
    verdicts: dict
    notes: list[str] = field(default_factory=list)


def _environment_roots() -> list[Path]:
    """What a run must leave as it found it: the Python environment and the course's own files."""
    roots = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix} if Path(p).is_dir()}
    roots |= {LIBRARY, Path(nbs.SOLUTIONS).resolve()} | {paths.course_path(k).resolve() for k in paths.LAYOUT}
    inside = [r for r in roots if any(r != o and r.is_relative_to(o) for o in roots)]
    return sorted(r for r in roots if r not in inside and r.exists())


def _backed_up(path: Path) -> bool:
    """Files whose content is kept to undo a change: the course's, and what Python runs at start-up."""
    return (
        path.suffix == ".pth"
        or path.name in ("sitecustomize.py", "usercustomize.py")
        or LIBRARY in path.parents
        or not any(part in ("site-packages", "dist-packages", "lib") for part in path.parts)
    )


# What the kernel and the judge inherit from the grader's environment: the interpreter's paths, locale, time
# zone, math threads and the course's own variables, nothing else (an instructor's token, a launcher's
# RANK / MASTER_ADDR, a PYTHONSTARTUP stay out of every run and so out of every feedback file).
ALLOWED_ENVIRONMENT = {
    "PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "TMPDIR", "LANG", "LANGUAGE", "TZ", "TERM",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_CBWR", "JUPYTER_PLATFORM_DIRS",
}  # fmt: skip
ALLOWED_PREFIXES = ("LC_", "COURSE_")


def allowed_environment(environ) -> dict[str, str]:
    """The part of `environ` a grading run may see (`ALLOWED_ENVIRONMENT`, `LC_*`, `COURSE_*`)."""
    return {k: v for k, v in environ.items() if k in ALLOWED_ENVIRONMENT or k.startswith(ALLOWED_PREFIXES)}


def _pythonpath(first: Path, env: dict) -> str:
    """PYTHONPATH with `first` ahead of what `env` has."""
    return os.pathsep.join(filter(None, [str(first), env.get("PYTHONPATH")]))


def _start_judge(socket_path: str, folder: Path, notebook: str, env: dict) -> subprocess.Popen:
    """The judge (course_admin.judge) on the pristine course_lib in `folder`/lib, listening once it returns."""
    with open(folder / "judge.log", "w") as log:
        referee = subprocess.Popen(
            [sys.executable, "-m", "course_admin.judge", socket_path, str(folder / "verdicts.json"), notebook],
            cwd=folder,
            env={**env, "PYTHONPATH": _pythonpath(folder / "lib", env)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    started = time.time()
    while not Path(socket_path + ".ready").exists():
        if referee.poll() is not None or time.time() - started > 300:
            referee.kill()
            raise RuntimeError(f"the judge did not start: {(folder / 'judge.log').read_text()[-1500:]}")
        time.sleep(0.1)
    return referee


def _outcome(text: str) -> tuple[str, str]:
    """A failed cell's outcome and message from nbval's report of it: timeout (nbval's own limit) or failed."""
    text = _clean(text)
    return ("timeout" if "Timeout of" in text else "failed"), _error_text(text)


class Progress:
    """What the run's pytest tells the grader through a pipe (course_admin/nbval_progress.py): which cell
    runs since when, and each ended cell's outcome ({index: (outcome, message)}, as `Run.outcomes`)."""

    def __init__(self, descriptor: int):
        self.outcomes: dict[int, tuple[str, str]] = {}
        self.running: tuple[int, float] | None = None  # (cell, when it started)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(descriptor,), daemon=True)
        self._thread.start()

    def _read(self, descriptor: int) -> None:
        with open(descriptor, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    cell, event = int(record["cell"]), record["event"]
                except (ValueError, KeyError, TypeError):
                    continue
                with self._lock:
                    if event == "start":
                        self.running = (cell, time.monotonic())
                    elif event == "end" and cell not in self.outcomes:
                        outcome = record.get("outcome")
                        done = ("passed", "") if outcome == "passed" else ("skipped", "")
                        self.outcomes[cell] = _outcome(str(record.get("text"))) if outcome == "failed" else done
                        self.running = None

    def overrun(self, limit: float) -> int | None:
        """The cell that has run longer than `limit` seconds, if one has."""
        with self._lock:
            if self.running and time.monotonic() - self.running[1] > limit:
                return self.running[0]
        return None

    def finished(self, wait: float = 10.0) -> dict[int, tuple[str, str]]:
        """The outcomes, once the pipe has closed (every process of the run has ended)."""
        self._thread.join(wait)
        with self._lock:
            return dict(self.outcomes)


GRACE = 10  # seconds a cell gets past --timeout (nbval interrupts it then) before the watchdog ends the run
RUN_LIMIT = 1800  # seconds one submission's run may take, whatever its cells do (--run-limit)


def run_nbval(
    nb,
    timeout: int,
    library: dict[str, bytes] | None = None,
    threads: int | None = None,
    notebook: str | None = None,
    level: str | None = None,
    limits: sandbox.Limits | None = None,
    run_limit: float = RUN_LIMIT,
) -> Run:
    """Run a notebook under nbval in a fresh kernel, isolated at `level` (`sandbox.level()` by default), on a
    copy of course_lib made from `library` (path inside course_lib -> content; default: as it is now) with the
    implementations of notebook `notebook`'s exercises stubbed, while the judge listens for its check cells.
    threads: the kernel's math threads (OMP / MKL), unless the environment sets them: kernels graded side
    by side should not fight for the cores. limits: what the run may take (`sandbox.Limits`). A watchdog
    ends the run when a cell has run `timeout` + `GRACE` seconds (the cell's outcome is then "timeout"), or
    the whole run `run_limit` seconds (the running cell's, too)."""
    library = library or library_files()
    level = level or sandbox.level()
    exercises = registry.for_notebook(notebook) if notebook else []
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        root, private = Path(tmp, "run"), Path(tmp, "judge")
        work, lib, channel = root / "work", root / "lib" / "course_lib", root / "channel"
        for folder in (work, lib, channel, private / "lib" / "course_lib", root / "home", root / "tmp"):
            folder.mkdir(parents=True)
        os.chmod(private, 0o700)  # the judge's: no run's user may read it (runs are not root, see sandbox)
        os.chmod(tmp, 0o711)
        for tree, files in ((lib, judge.stubbed(library, exercises)), (private / "lib" / "course_lib", library)):
            for name, data in files.items():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                (tree / name).write_bytes(data)
        for kind in RESOURCES:  # what notebooks read besides data/, laid out as in the repository
            if paths.course_path(kind).is_dir():
                shutil.copytree(paths.course_path(kind), lib.parent / paths.LAYOUT[kind])
        path = work / "submission.ipynb"
        path.write_text(nbs.dumps(nb))
        shutil.copy(Path(__file__).with_name("nbval_progress.py"), lib.parent / "course_grade_progress.py")
        data = Path(os.environ.get("COURSE_DATA_DIR") or paths.course_path("data")).resolve()
        env = {
            **allowed_environment(os.environ),
            "COURSE_PROFILE": "ci",
            "COURSE_OFFLINE": "1",
            "COURSE_HIDDEN_CHECKS": "1",
            "COURSE_WORK_DIR": str(work / "runs"),
            "MPLBACKEND": "Agg",
            "COURSE_DATA_DIR": str(data),
            "COURSE_ROOT": str(lib.parent),  # the copy's configs, results and models (course_lib.paths)
            grading.SOCKET: str(channel / "judge.sock"),
        }
        if threads:
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(key, str(threads))
        referee = _start_judge(env[grading.SOCKET], private, notebook or "00", env)
        try:
            # the checkout (its solutions, tests and course_lib), or an installed course_lib: never in the run
            course = LIBRARY.parent if paths.in_checkout() else LIBRARY
            hidden = [Path(nbs.SOLUTIONS).resolve(), course, private]
            run = sandbox.Run(
                root,
                [lib.parent, data, channel, path],
                [],
                hidden,
                level,
                scratch=[work],
                limits=limits or sandbox.Limits(),
            )
            roots = before = None
            if level != "bwrap":  # no read-only system: look at it before and after
                roots = _environment_roots()
                before = sandbox.snapshot(roots, keep=_backed_up)
            kernel_env = {**env, "PYTHONPATH": _pythonpath(lib.parent, env)}
            command = [
                sys.executable,
                "-m",
                "pytest",
                str(path),
                "-c",
                os.devnull,
                "--rootdir",
                str(root),
                "-o",
                "addopts=",
                "-p",
                "no:cacheprovider",
                "--color=no",
                "-q",
                "-p",
                "course_grade_progress",
                "--nbval-lax",
                "--nbval-current-env",
                f"--nbval-cell-timeout={timeout}",
            ]
            if SANITIZE.exists():
                shutil.copy(SANITIZE, root / SANITIZE.name)
                command.append(f"--nbval-sanitize-with={root / SANITIZE.name}")
            # output to a file: a process the run leaves behind may hold a pipe open; progress through a pipe
            reader, writer = os.pipe()
            with open(Path(tmp, "nbval.log"), "w") as log:
                try:
                    process = sandbox.start(
                        run,
                        command,
                        {**kernel_env, "COURSE_GRADE_PROGRESS_FD": str(writer)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(writer,),
                    )
                finally:
                    os.close(writer)
                progress, began, stopped = Progress(reader), time.monotonic(), None
                while process.poll() is None:  # the watchdog: a cell past its limit ends the run, whatever it does
                    over = progress.overrun(timeout + GRACE)
                    if over is not None or time.monotonic() - began > run_limit:
                        stopped = over if over is not None else (progress.running or (-1,))[0]
                        log.write("\n(the watchdog stopped the run: past its time limit)\n")
                        break
                    time.sleep(0.2)
            notes = [
                f"a process the run started was still running and was ended: {p}" for p in sandbox.finish(run, process)
            ]
            if before is not None:
                changed = sandbox.changes(before, roots)
                if changed:
                    kept = sandbox.undo(before, roots)
                    notes.append(
                        "the run changed the Python environment or the course's files: "
                        + "; ".join(changed[:10])
                        + (
                            f" (not undone: {'; '.join(kept[:10])}: reinstall with `make install`)"
                            if kept
                            else " (undone)"
                        )
                    )
            outcomes = progress.finished()
            if stopped == -1:  # the run's own limit, between cells: the next one is the one that did not run
                stopped = max(outcomes, default=-1) + 1
            if stopped is not None:
                outcomes[stopped] = ("timeout", f"the cell ran past the time limit ({timeout} s) and was stopped")
                notes.append(f"the watchdog stopped the run at code cell {stopped}, past the time limit")
        finally:
            referee.kill()
            referee.wait()
        if not outcomes:
            raise RuntimeError(f"nbval did not run: {Path(tmp, 'nbval.log').read_text()[-1500:]}")
        verdicts = private / "verdicts.json"
        return Run(outcomes, json.loads(verdicts.read_text()) if verdicts.exists() else {}, notes)


def _score(run: Run, number: str, cells: dict) -> tuple[str, str]:
    """An exercise's status and message: the judge's verdict; without one, what nbval saw of its cells."""
    verdict = run.verdicts.get(number)
    exercise, check = run.outcomes.get(cells["exercise"]), run.outcomes.get(cells["check"])
    if exercise and exercise[0] == "failed":
        return "failed", f"the exercise cell raised: {exercise[1]}"
    if verdict:
        status = {"passed": "passed", "error": "error"}.get(verdict["status"], "failed")
        unwritten = "NotImplementedError: " if verdict["status"] == "not_implemented" else ""
        return status, "" if status == "passed" else unwritten + verdict["text"]
    if check and check[0] == "failed":
        return "failed", f"the check cell raised before the grader could judge: {check[1]}"
    return "failed", "the check did not reach the grader"


# --------------------------------------------------------------------------- grading


def grade_file(
    path: Path,
    references: dict,
    timeout: int = DEFAULT_TIMEOUT,
    notebook: str | None = None,
    pristine: dict[Path, bytes] | None = None,
    threads: int | None = None,
    log=None,
    limits: sandbox.Limits | None = None,
    run_limit: float = RUN_LIMIT,
) -> Graded:
    """Grade one submission against its reference (`notebook`, else the one it is); never raises for a
    bad submission. `pristine`: `course_files()` when grading began (default: now); threads, limits,
    run_limit: see run_nbval."""
    path = Path(path)
    if path.is_symlink():  # it could be anyone's file: read nothing of it
        student = student_name(None, path, references)
        message = f"{path.name}: a symbolic link, not a file: not graded (hand in the notebook itself)"
        return Graded(path, student, "?", [Result(student, "?", "-", 0, 0, "error", message, str(path))])
    nb, error = read_submission(path)
    stem, named = which_notebook(nb, path, references, notebook)
    student = student_name(nb, path, references)
    claimed = claimed_name(nb, student)
    if stem is None:
        error = error or f"{path.name}: not one of the course notebooks ({', '.join(references)})"
        return Graded(path, student, "?", [Result(student, "?", "-", 0, 0, "error", error, str(path))])
    reference = references[stem]
    info = nbs.registered(reference, stem)  # number -> Exercise: the points come from the registry

    def row(number, status, message=""):
        points = info[number].points if status == "passed" else 0
        return Result(student, stem, number, points, info[number].points, status, message, str(path))

    if error:
        return Graded(path, student, stem, [row(n, "error", error) for n in info])
    decided, sources, hints = {}, {}, {}
    for number, source in match_exercises(reference, nb).items():
        if source is None:
            decided[number] = row(number, "missing", f"exercise {number} not found in the submission")
        else:
            hint = reference_use(number, source)
            hints[number] = f"hint for the instructor: the cell {hint}" if hint else ""
        sources[number] = source
    graded = Graded(path, student, stem, [], [note for note in (named, claimed) if note])
    pristine = pristine or course_files()
    library = library_files(pristine)
    try:
        skip = withheld_cells(reference, stem, library, timeout, threads, log)
    except Exception as e:  # the course itself does not pass: grade nothing
        graded.results = [row(n, "error", f"grading failed: {e}") for n in info]
        return graded
    while len(decided) < len(info):
        nb_run, roles = assemble(reference, sources, skip, standing_in=set(decided))
        try:
            run = run_nbval(
                nb_run, timeout, library, threads=threads, notebook=stem[:2], limits=limits, run_limit=run_limit
            )
        except Exception as e:  # the run itself broke (not the student's code): say so, grade nothing more
            decided.update({n: row(n, "error", f"grading failed: {e}") for n in info if n not in decided})
            break
        graded.notes.extend(note for note in run.notes if note not in graded.notes)
        outcomes = run.outcomes
        moved = [p.name for p, data in pristine.items() if not p.exists() or p.read_bytes() != data]
        if moved:  # grading goes on from the copies; whoever changed the files, someone should look
            graded.notes.append(f"course files differ from when grading began: {', '.join(moved)}")
            print(
                f"warning: after grading {path}, course files differ from when grading began: {', '.join(moved)}",
                file=sys.stderr,
            )
        # a cell past the time limit (or whose kernel died) stops the run: what comes after it is rerun
        stop = min((i for i, (outcome, _) in outcomes.items() if outcome == "timeout"), default=None)
        for index, (outcome, message) in sorted(outcomes.items()):
            if index not in roles and outcome not in ("passed", "skipped") and (stop is None or index <= stop):
                graded.notes.append(f"reference cell {index} (not an exercise) failed: {message[:300]}")
        undecided = [n for n in info if n not in decided]
        for number in undecided:
            cells = {role: i for i, (n, role) in roles.items() if n == number}
            if stop in cells.values():
                decided[number] = row(
                    number,
                    "timeout",
                    f"the {roles[stop][1]} cell ran past the time limit of "
                    f"{timeout} s (an endless loop?), or the kernel died",
                )
            elif stop is None or cells["check"] < stop:  # after the stop, a new kernel ran on without it
                decided[number] = row(number, *_score(run, number, cells))
                seen = run.verdicts.get(number, {}).get("hint")
                if seen:  # calls into the exercise's library twins, recorded while it was observed
                    hints[number] = "\n".join(filter(None, [hints[number], f"hint for the instructor: {seen}"]))
        if all(n not in decided for n in undecided):  # stopped in a reference cell: grade nothing more
            decided.update(
                {n: row(n, "error", f"the run stopped at cell {stop}: {outcomes[stop][1][:300]}") for n in undecided}
            )
    for number, hint in hints.items():
        if hint and number in decided:
            r = decided[number]
            r.message = f"{r.message}\n{hint}".strip()
    graded.results = [decided[n] for n in info]
    return graded


def grade(
    paths,
    solutions: Path = nbs.SOLUTIONS,
    timeout: int = DEFAULT_TIMEOUT,
    jobs: int = 1,
    notebook: str | None = None,
    log=None,
    limits: sandbox.Limits | None = None,
    run_limit: float = RUN_LIMIT,
) -> list[Graded]:
    """Grade several submissions, `jobs` at a time (each run is a kernel of its own, held to `limits`; with
    more than one job, each to its share of the cores, so that a greedy run cannot starve the others)."""
    references, pristine = load_references(solutions), course_files(solutions)
    if sandbox.level() != "bwrap":
        print(sandbox.fallback_warning(), file=log or sys.stderr)

    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))  # the cores shared out between the kernels
    limits = limits or sandbox.Limits()
    if jobs > 1 and limits.cores is None:
        limits = dataclasses.replace(limits, cores=(os.cpu_count() or 1) / jobs)

    def prepare(stem):  # the reference runs of withheld_cells, before the submissions that wait for them
        try:
            withheld_cells(references[stem], stem, library, timeout, threads, log)
        except Exception:  # the course itself does not pass: grade_file tries again and says so for each file
            pass

    def one(path):
        start, path = time.time(), Path(path)
        try:
            g = grade_file(
                path,
                references,
                timeout,
                notebook,
                pristine,
                threads=threads,
                log=log,
                limits=limits,
                run_limit=run_limit,
            )
        except Exception as e:  # a notebook odd in a way no check foresaw: an error for that student only
            message = f"{path.name}: could not be graded ({type(e).__name__}: {e})"
            g = Graded(path, path.stem, "?", [Result(path.stem, "?", "-", 0, 0, "error", message, str(path))])
        if log:
            print(
                f"graded {path} ({g.student}, {g.notebook}): {sum(r.points for r in g.results):g}/"
                f"{sum(r.max_points for r in g.results):g} in {time.time() - start:.0f} s",
                file=log,
            )
        return g

    library = library_files(pristine)
    needed = sorted({stem for stem in (notebook_of(Path(p), references, notebook) for p in paths) if stem})
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(prepare, needed))  # `jobs` notebooks' references at a time, not one while the rest wait
        graded = list(pool.map(one, paths))
    return keep_apart(graded)


def read_submission(path: Path):
    """(the notebook, None), or (None, why not) for a file that is not JSON, not a notebook, not nbformat 4."""
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        nbformat.validate(nb)
        return nb, None
    except Exception as e:  # a row per exercise says so
        return None, f"{path.name}: not a readable notebook ({type(e).__name__}: {str(e).splitlines()[0][:300]})"


def notebook_of(path: Path, references: dict, notebook: str | None = None) -> str | None:
    """The reference a file will be run against (grade_file decides the same way), or None where it will not
    be run: a link, an unreadable notebook, or not one of the course notebooks."""
    if path.is_symlink():
        return None
    nb, error = read_submission(path)
    if error:
        return None
    try:
        return which_notebook(nb, path, references, notebook)[0]
    except Exception:  # odd in a way no check foresaw: grade_file says what is wrong with it
        return None


def keep_apart(graded: list[Graded]) -> list[Graded]:
    """Two files that would be the same student's same notebook (`a/alice.ipynb`, `b/alice.ipynb`) are never
    merged: each gets its path in its name, and a note says why."""
    seen: dict[tuple[str, str], list[Graded]] = {}
    for g in graded:
        seen.setdefault((g.student, g.notebook), []).append(g)
    for (student, notebook), same in seen.items():
        if len(same) < 2:
            continue
        for g in same:
            g.student = f"{student} ({g.path})"
            g.notes.append(f"{len(same)} files are {student!r}'s notebook {notebook}: each graded on its own")
            for r in g.results:
                r.student = g.student
    return graded


# --------------------------------------------------------------------------- reports

COLUMNS = ["student", "notebook", "exercise", "points", "max_points", "status", "message", "file"]


def write_csv(graded: list[Graded], path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for g in graded:
            for r in g.results:
                writer.writerow({c: getattr(r, c) for c in COLUMNS})


def _cell(text: str) -> str:
    """Text that stays inside one cell of a Markdown table: no pipes, no line breaks."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def summary(graded: list[Graded]) -> str:
    """A markdown table: a row per student, a column per exercise, and the total (every row as many cells
    as the header); below it, the notes (names that disagree with the files, files kept apart)."""
    rows = [r for g in graded for r in g.results]
    numbers = sorted({r.exercise for r in rows} - {"-"}, key=lambda n: [int(x) for x in n.split(".") if x.isdigit()])
    header = ["student", *numbers, "total"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for student in dict.fromkeys(r.student for r in rows):
        mine = [r for r in rows if r.student == student]
        by_number = {r.exercise: r for r in mine}
        cells = [
            f"{r.points:g}/{r.max_points:g}" + ("" if r.status == "passed" else f" {r.status}") if r else ""
            for r in (by_number.get(n) for n in numbers)
        ]
        total = f"{sum(r.points for r in mine):g}/{sum(r.max_points for r in mine):g}"
        unread = " (unreadable file)" if "-" in by_number else ""
        lines.append("| " + " | ".join(_cell(c) for c in [student, *cells, total + unread]) + " |")
    notes = [f"- {_cell(g.student)}, {g.notebook}: {_cell(note)}" for g in graded for note in g.notes]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def feedback(graded: list[Graded], student: str) -> str:
    """Markdown feedback for one student: each exercise, its points, and what failed."""
    lines = [f"# Feedback for {student}", ""]
    for g in (g for g in graded if g.student == student):
        got, out_of = sum(r.points for r in g.results), sum(r.max_points for r in g.results)
        lines += [f"## {g.notebook} ({g.path.name}): {got:g}/{out_of:g} points", ""]
        for r in g.results:
            title = f", {registry.EXERCISES[r.exercise].title}" if r.exercise in registry.EXERCISES else ""
            lines.append(f"- Exercise {r.exercise}{title}: {r.points:g}/{r.max_points:g}, {r.status}")
            if r.message:  # a fence longer than any run of backticks in the message: it cannot close it
                fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", r.message)), default=0))
                lines += ["", "  " + fence, *("  " + line for line in r.message.splitlines()), "  " + fence, ""]
        lines += [f"- note: {note}" for note in g.notes] + [""]
    return "\n".join(lines)


def feedback_names(students) -> dict[str, str]:
    """Each student's feedback file name: the name with anything but letters, digits, `.`, `-` and `_` made
    `_`, and, where two students' names would give the same file (`o'brien`, `o_brien`), a short hash of the
    name after it, so that no one's feedback overwrites another's."""
    safe = {s: re.sub(r"[^\w.-]", "_", s) for s in students}
    counts = Counter(safe.values())
    return {
        s: f"{name}-{hashlib.sha256(s.encode()).hexdigest()[:8]}.md" if counts[name] > 1 else f"{name}.md"
        for s, name in safe.items()
    }


def refused(path: Path, why: str) -> Graded:
    """An error row for a file that is not graded; it quotes nothing of the file."""
    return Graded(path, path.stem, "?", [Result(path.stem, "?", "-", 0, 0, "error", f"{path.name}: {why}", str(path))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="course-grade",
        description="Grade student notebooks against the course's solutions with nbval; see docs/instructors.md.",
    )
    parser.add_argument("submissions", nargs="+", type=Path, help="student notebooks (.ipynb), or folders of them")
    parser.add_argument("--report", type=Path, default=Path("grades.csv"), help="CSV, a row per student and exercise")
    parser.add_argument("--summary", type=Path, help="also write the markdown summary table here")
    parser.add_argument("--feedback", type=Path, help="write one STUDENT.md per student here (default: print)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (default 1)")
    parser.add_argument("--notebook", help="grade every submission as this course notebook (e.g. 01)")
    default = sandbox.Limits()
    parser.add_argument(
        "--run-limit", type=int, default=RUN_LIMIT, help="seconds one submission's run may take (default %(default)s)"
    )
    parser.add_argument(
        "--processes", type=int, default=default.processes, help="processes a run may have (default %(default)s)"
    )
    parser.add_argument(
        "--memory", type=int, default=default.memory >> 20, help="MiB of memory a run may use (default %(default)s)"
    )
    parser.add_argument(
        "--disk",
        type=int,
        default=default.disk >> 20,
        help="MiB a run may write: each of its temporary folders, and the largest file (default %(default)s)",
    )
    parser.add_argument(
        "--solutions", type=Path, default=nbs.SOLUTIONS, help="reference notebooks (default: the course's)"
    )
    args = parser.parse_args(argv)
    paths, outside = [], []
    for path in args.submissions:
        if not path.is_dir():
            paths.append(path)
            continue
        for found in sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts):
            # a file the folder only points to (through a link) is someone else's: refused, unread
            inside = found.is_symlink() or found.resolve().is_relative_to(path.resolve())
            (paths if inside else outside).append(found)
    if not paths and not outside:
        parser.error("no notebooks among the submissions")
    try:
        limits = sandbox.Limits(processes=args.processes, memory=args.memory << 20, disk=args.disk << 20)
        graded = grade(
            paths,
            args.solutions,
            args.timeout,
            args.jobs,
            args.notebook,
            log=sys.stderr,
            limits=limits,
            run_limit=args.run_limit,
        )
    except nbs.NotebookFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    graded += [refused(p, "lies outside the submissions folder (a link): not graded") for p in outside]
    write_csv(graded, args.report)
    table = summary(graded)
    if args.summary:
        args.summary.write_text(table)
    students = list(dict.fromkeys(g.student for g in graded))
    names = feedback_names(students)
    for student in students:
        if args.feedback:
            args.feedback.mkdir(parents=True, exist_ok=True)
            (args.feedback / names[student]).write_text(feedback(graded, student))
        else:
            print(feedback(graded, student))
    print(table)
    print(f"wrote {args.report}" + (f", feedback in {args.feedback}/" if args.feedback else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
