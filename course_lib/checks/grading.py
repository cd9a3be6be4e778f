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

import importlib
import inspect
import json
import os
import socket
import struct
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


def observe(exercise: str, *objects) -> dict:
    """The observations of every case of `exercise` on the student's objects ({"error": ...} if the
    checker could not even start, e.g. an input it builds needs code that is still a stub)."""
    framework.session = {"mode": "observe"}
    try:
        registry.get(exercise).function(*objects)
        return {"observations": framework.session.get("observations") or {}}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}{framework.where_in_your_code(e)}"}
    finally:
        framework.session = None


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
