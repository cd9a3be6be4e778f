"""The judge: the grader's process that decides every verdict, and the stubs it keeps the answers behind.

`python -m course_admin.judge SOCKET VERDICTS NOTEBOOK` listens on the UNIX socket SOCKET while one
submission of notebook NOTEBOOK ("01") runs in its kernel. Each check cell there sends the observations
of one exercise (course_lib.checks.grading); the judge runs that checker's judging halves on them, in this
process, with its own inputs and expected values, writes the verdict to the JSON file VERDICTS (the only
record the grader reads; the kernel never sees that file), and answers with the verdict to show and the
course's implementations the kernel may have back now (`restorable`). Student code never runs here.

`stubbed(library, exercises)`: course_lib's files with each exercise's `implementations` replaced by a stub
that raises; what the kernel imports. `implementation(library, spec)`: the source a stub stands for.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import json
import os
import resource
import socket
import sys
from pathlib import Path

from course_lib.checks import framework, grading, registry, wire

STUB = 'raise RuntimeError("{spec} is not available while grading: the exercise asks you to write it")'


def _find(tree: ast.Module, qualname: str):
    node = tree
    for part in qualname.split("."):
        found = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
        if not found:
            raise KeyError(f"course_lib has no {qualname}")
        node = found[0]
    return node


def _split(spec: str) -> tuple[str, str]:
    """ "tokenization:train_bpe" -> ("tokenization.py", "train_bpe")."""
    module, qualname = spec.split(":")
    return module.replace(".", "/") + ".py", qualname


def stubbed(library: dict[str, bytes], exercises) -> dict[str, bytes]:
    """course_lib's files (path inside course_lib -> bytes) with the body of every implementation of
    `exercises` (registry entries) replaced by a stub that raises; the docstring stays."""
    by_file: dict[str, list[str]] = {}
    for exercise in exercises:
        for spec in exercise.implementations:
            by_file.setdefault(_split(spec)[0], []).append(spec)
    result = dict(library)
    for name, specs in by_file.items():
        lines = library[name].decode().splitlines(keepends=True)
        tree = ast.parse("".join(lines))
        bodies = []
        for spec in specs:
            node = _find(tree, _split(spec)[1])
            body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
            bodies.append((body[0].lineno, node.end_lineno, body[0].col_offset, spec))
        for first, last, column, spec in sorted(bodies, reverse=True):  # from the bottom: line numbers hold
            lines[first - 1 : last] = [" " * column + STUB.format(spec=spec) + "\n"]
        result[name] = "".join(lines).encode()
    return result


def implementation(library: dict[str, bytes], spec: str) -> dict:
    """What the kernel needs to put `spec` back: {"module", "qualname", "source"}."""
    name, qualname = _split(spec)
    text = library[name].decode()
    node = _find(ast.parse(text), qualname)
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    source = "".join(text.splitlines(keepends=True)[start - 1 : node.end_lineno])
    return {"module": "course_lib." + spec.split(":")[0], "qualname": qualname, "source": source}


def restorable(judged: set[str], exercises) -> set[str]:
    """The implementations that no exercise still to be judged keeps behind a stub."""
    waiting = {spec for e in exercises if e.id not in judged for spec in e.implementations}
    return {spec for e in exercises if e.id in judged for spec in e.implementations} - waiting


def judge(exercise: str, message: dict) -> dict:
    """The verdict on one exercise's observations: {"status": passed|failed|not_implemented|error, "text"}."""
    if "error" in message:
        return {"status": "failed", "text": f"the check could not run: {message['error']}"}
    checker = registry.get(exercise).function
    students = [
        p
        for p in inspect.signature(checker).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    framework.session = {"mode": "judge", "observations": message.get("observations") or {}}
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            checker(*[None] * len(students))
        return {"status": "passed", "text": shown.getvalue().strip()}
    except framework.CheckFailed as e:
        return {"status": "failed", "text": str(e)}
    except NotImplementedError as e:
        return {"status": "not_implemented", "text": str(e)}
    except Exception as e:  # the checker's own code broke: the instructor should hear of it
        return {"status": "error", "text": f"the judge failed: {type(e).__name__}: {e}"}
    finally:
        framework.session = None


def hint(message: dict) -> dict:
    """{"hint": ...} naming the library twins the kernel saw the student's code call, or {}."""
    calls = message.get("library_calls")
    if not isinstance(calls, list) or not calls:
        return {}
    named = ", ".join(str(call)[:120] for call in calls[:10])
    return {"hint": f"while its checks ran, the code called {named}: a library's version of the answer"}


def serve(path: str, verdicts: Path, notebook: str) -> None:
    """Judge the exercises of `notebook` as their check cells send them, until killed. The implementations it
    hands back are read, like the checkers, from the course_lib this process imports (the grader's copy)."""
    exercises = registry.for_notebook(notebook)
    for module in {e.module for e in exercises}:  # imported now, before any student code runs
        importlib.import_module(module)
    root = Path(framework.__file__).resolve().parents[1]
    library = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.py")}
    done: dict[str, dict] = {}
    sent: set[str] = set()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(4)
    Path(path + ".ready").write_text("ready")
    while True:
        connection, _ = server.accept()
        with connection:
            connection.settimeout(600)
            try:
                message = wire.decode(grading.receive(connection))
                exercise = str(message.get("exercise"))
            except Exception as e:  # not a message of ours: answer nothing, judge nothing
                print(f"judge: an unreadable message ({type(e).__name__}: {e})", file=sys.stderr)
                continue
            if exercise not in {e.id for e in exercises}:
                reply = {"status": "error", "text": f"exercise {exercise!r} is not one of notebook {notebook}'s"}
            elif exercise in done:
                reply = {"status": "error", "text": f"exercise {exercise} was already judged; only the first counts"}
            else:
                reply = done[exercise] = judge(exercise, message) | hint(message)
                temporary = verdicts.with_suffix(".tmp")
                temporary.write_text(json.dumps(done))
                temporary.replace(verdicts)
            now = restorable(set(done), exercises) - sent
            sent |= now
            reply = {**reply, "restore": [implementation(library, spec) for spec in sorted(now)]}
            with contextlib.suppress(OSError):
                grading.send(connection, json.dumps(reply).encode())


MEMORY = 8 << 30  # bytes of data the judge may hold: a message that unpacks past it fails, the host does not


def limit_memory(data: int = MEMORY) -> None:
    """Cap this process's data segment and anonymous memory (RLIMIT_DATA): an allocation past it raises
    MemoryError, caught as an unreadable message. `wire` already refuses what would unpack to more than a
    message holds; this is the second wall."""
    resource.setrlimit(resource.RLIMIT_DATA, (data, data))


if __name__ == "__main__":
    limit_memory()
    serve(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
