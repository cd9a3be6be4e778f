"""The kernel's side of grading: what a graded notebook's check cells call instead of the checkers.

The grader (course_admin.grade) runs a submission in a kernel whose copy of course_lib has the answers
to the notebook's exercises replaced by stubs, and sets `COURSE_GRADE_SOCKET` to a socket its judge
(course_admin.judge, a process of its own) listens on. Its check cells bind `checks = grading.Checks()`,
so that `checks.check_mask_tokens(mask_tokens)` here only *observes*: it runs the checker's observing
halves on the student's code (every case, hidden ones included), sends the observations to the judge as
plain data, and shows the judge's verdict: the pass line, or the failed checks as a `CheckFailed`. What
this kernel prints or raises is not the grade; the judge's own record is. The judge's answer also brings
back the course's implementations of exercises that are judged (`restore`), for the cells after them.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib
import inspect
import json
import os
import pstats
import socket
import struct
import sys
import textwrap

from . import framework, registry, wire

SOCKET = "COURSE_GRADE_SOCKET"  # environment variable: the judge's socket


class Checks:
    """Stands in for `course_lib.checks` in a graded notebook: `checks.check_x(code)` submits `code`."""

    def __getattr__(self, name: str):
        found = [e for e in registry.EXERCISES.values() if e.checker == name]
        if not found:
            raise AttributeError(f"no checker {name!r}")
        return lambda *objects, **ignored: submit(found[0].id, *objects)

    def unreached(self, exercise: str, error: BaseException) -> None:
        """The check cell failed before it could observe (the function is not defined, say): the judge
        records that, and hands back what the exercise kept withheld, for the cells after it."""
        if exercise not in _submitted:
            _exchange({"exercise": exercise, "error": f"{type(error).__name__}: {error}"})


def send(connection: socket.socket, data: bytes) -> None:
    connection.sendall(struct.pack("!Q", len(data)) + data)


def receive(connection: socket.socket, limit: int = wire.LIMIT) -> bytes:
    """One message (8 bytes of length, then the bytes); ConnectionError if the other side went away."""
    header = _exactly(connection, 8)
    (size,) = struct.unpack("!Q", header)
    if size > limit:
        raise ConnectionError(f"a message of {size} bytes, more than {limit}")
    return _exactly(connection, size)


def _exactly(connection: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Recorder:
    """Records which of an exercise's library twins (registry.TWINS) the student's code called while the
    exercise was observed: cProfile (compiled, so a pure-Python answer runs about 2.5 times slower while
    observed, not 10 times as with a Python profile function) gives the calls and their callers; a twin
    counts when a chain of callers leads from it to the student's code (framework's `_outside_libraries`),
    directly or through any helper. A profiler found switched off at the end is recorded too."""

    def __init__(self, twins: frozenset[str]):
        self.twins, self.profile, self.switched_off = twins, cProfile.Profile(), False

    def __enter__(self):
        self.profile.enable()
        return self

    def __exit__(self, *exc):
        self.switched_off = sys.getprofile() is not self.profile
        self.profile.disable()

    def calls(self) -> list[str]:
        off = ["nothing more: the code switched the grader's call recording off"] if self.switched_off else []
        try:
            stats = pstats.Stats(self.profile).stats
        except TypeError:  # nothing was recorded at all
            return off
        found = off
        for twin in sorted(self.twins):
            for key in self._keys(twin, stats):
                if self._from_student(key, stats):
                    found.append(twin.split(":")[-1].strip("'.<>").replace("' of '", " of "))
                    break
        return found

    @staticmethod
    def _keys(twin: str, stats: dict) -> list[tuple]:
        """cProfile's keys (file, line, name) for `twin`: a compiled function by a piece of its name, a Python
        one by its code object (its module is loaded if it was called)."""
        if ":" not in twin:
            return [key for key in stats if key[0] == "~" and twin in key[2]]
        module, qualname = twin.split(":")
        target = sys.modules.get(module)
        try:
            for part in qualname.split("."):
                target = getattr(target, part)
            code = inspect.unwrap(target).__code__
        except AttributeError:
            return []
        return [(code.co_filename, code.co_firstlineno, code.co_name)]

    @staticmethod
    def _from_student(key: tuple, stats: dict) -> bool:
        seen, todo = {key}, [key]
        while todo:
            for caller in stats.get(todo.pop(), (0, 0, 0, 0, {}))[4]:
                if caller[0] != "~" and framework._outside_libraries(caller[0]):
                    return True
                if caller not in seen:
                    seen.add(caller)
                    todo.append(caller)
        return False


def observe(exercise: str, *objects) -> dict:
    """The observations of every case of `exercise` on the student's objects ({"error": ...} if the
    checker could not even start, e.g. an input it builds needs code that is still a stub), and the calls
    into the exercise's library twins its code made meanwhile ("library_calls", see `Recorder`)."""
    framework.session = {"mode": "observe"}
    twins = registry.get(exercise).twins
    recorder = Recorder(twins) if twins else contextlib.nullcontext()
    try:
        with recorder:
            registry.get(exercise).function(*objects)
        result = {"observations": framework.session.get("observations") or {}}
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}{framework.where_in_your_code(e)}"}
    finally:
        framework.session = None
    calls = recorder.calls() if twins else []
    return {**result, "library_calls": calls} if calls else result


_submitted: set[str] = set()  # exercises this kernel sent to the judge


def _exchange(message: dict) -> dict:
    """Send one message to the judge, put back what it restores, return its answer."""
    path = os.environ.get(SOCKET)
    if not path:
        raise RuntimeError(f"{SOCKET} is not set: grading.submit runs only under the grader (course-grade)")
    _submitted.add(message["exercise"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        send(connection, wire.encode(message))
        reply = json.loads(receive(connection).decode())
    restore(reply.get("restore", []))
    return reply


def submit(exercise: str, *objects) -> None:
    """Observe, have the judge judge, put back what it restores; print its pass line or raise its failure."""
    reply = _exchange({"exercise": exercise, **observe(exercise, *objects)})
    if reply["status"] == "passed":
        print(reply["text"])
    elif reply["status"] == "not_implemented":
        raise NotImplementedError(reply["text"])
    else:
        raise framework.CheckFailed(reply["text"])


def restore(items: list[dict]) -> None:
    """Put the course's implementations back in place of their stubs: each item is {"module", "qualname",
    "source"}. A function keeps its identity (its stub gets the real code), so that names imported from
    its module before now work too; a method is set on its class."""
    for item in items:
        module = importlib.import_module(item["module"])
        owner_name, _, name = item["qualname"].rpartition(".")
        source = textwrap.dedent(item["source"])
        if owner_name:
            owner = getattr(module, owner_name)
            namespace: dict = {}
            # compiled inside a function whose argument is named __class__, so that super() finds the class
            wrapped = "def _restored(__class__):\n" + textwrap.indent(source, "    ") + f"\n    return {name}\n"
            exec(compile(wrapped, f"<course_lib.{item['qualname']}>", "exec"), vars(module), namespace)
            setattr(owner, name, namespace["_restored"](owner))
            continue
        stub = getattr(module, name)
        namespace = dict(vars(module))
        exec(compile(source, f"<course_lib.{name}>", "exec"), namespace)
        real = namespace[name]
        inner_stub, inner_real = inspect.unwrap(stub), inspect.unwrap(real)
        inner_stub.__code__ = inner_real.__code__
        inner_stub.__defaults__, inner_stub.__kwdefaults__ = inner_real.__defaults__, inner_real.__kwdefaults__
