"""The grader's sandbox (course_admin.sandbox): what a run can reach under bwrap, killing what a run leaves
behind at either level, and snapshot / changes / undo. The bwrap tests are skipped where bubblewrap is not
usable (the grader then runs at the process level)."""

import json
import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from course_admin import sandbox

needs_bwrap = pytest.mark.skipif(
    sandbox.level() != "bwrap", reason="bubblewrap is not installed or not usable here (see sandbox.level)"
)

PROBE = """\
import json, os, socket, sys
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as error:
        return type(error).__name__
def read(path):
    with open(path) as file:
        return file.read()
def write(path):
    with open(path, "w") as file:
        file.write("written")
"""

# forks a child that leaves the session and forks a grandchild (pid written to argv[1]) that sleeps a minute
DOUBLE_FORK = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".part", "w") as file:
            file.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".part", sys.argv[1])
        time.sleep(60)
    os._exit(0)
os.wait()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
"""


def make_run(tmp_path, level):
    """A run as the grader makes one: data to read (with a hidden folder and a hidden file in it), a
    checkout that is hidden, and a work folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data, checkout = tmp_path / "data", tmp_path / "checkout"
    (data / "secret").mkdir(parents=True)
    (data / "shared.txt").write_text("shared")
    (data / "secret" / "answer.txt").write_text("the answer")
    (data / "answers.txt").write_text("the answers")
    checkout.mkdir()
    (checkout / "solution.py").write_text("solution")
    root = tmp_path / "run"
    root.mkdir()
    hidden = [checkout, data / "secret", data / "answers.txt"]
    return sandbox.Run(root, readable=[data], writable=[root / "work"], hidden=hidden, level=level)


def python(run, code, *args, timeout=30):
    """Run `code` in the sandbox: (exit status, stdout, what finish killed). Its output goes to a file: a
    process left behind would hold a pipe open."""
    with open(run.root / "stdout.txt", "w+") as out:
        process = sandbox.start(run, [sys.executable, "-c", code, *map(str, args)], dict(os.environ), stdout=out)
        try:
            process.wait(timeout=timeout)
        finally:
            left = sandbox.finish(run, process)
        out.seek(0)
        return process.returncode, out.read(), left


def probe(run, code):
    status, out, _ = python(run, PROBE + textwrap.dedent(code))
    assert status == 0, out
    return json.loads(out.strip().splitlines()[-1])


def marked(token):
    """Live processes (not zombies) whose environment holds the run's token."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path("/proc", pid, "stat").read_text()
            environ = Path("/proc", pid, "environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX" and f"COURSE_GRADE_RUN={token}".encode() in environ.split(b"\0"):
            found.append(int(pid))
    return found


# --------------------------------------------------------------------------- bwrap


@needs_bwrap
def test_bwrap_no_network_but_own_loopback(tmp_path):
    run = make_run(tmp_path, "bwrap")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = probe(
            run,
            f"""
            outside = attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2).close())
            server = socket.create_server(("127.0.0.1", 0))  # a Jupyter kernel listens on its loopback
            inside = attempt(lambda: socket.create_connection(server.getsockname(), timeout=2).close())
            print(json.dumps({{"outside": outside, "inside": inside}}))
            """,
        )
    assert result == {"outside": "ConnectionRefusedError", "inside": "ok"}


@needs_bwrap
def test_bwrap_reads_and_writes_only_what_it_may_without_capabilities(tmp_path):
    run = make_run(tmp_path, "bwrap")
    name = f"sandbox-probe-{run.token}"
    try:
        result = probe(
            run,
            f"""
            print(json.dumps({{
                "prefix": attempt(lambda: write(os.path.join(sys.prefix, "{name}"))),
                "base prefix": attempt(lambda: write(os.path.join(sys.base_prefix, "{name}"))),
                "root": attempt(lambda: write("{run.root}/{name}")),
                "data": attempt(lambda: write("{tmp_path}/data/{name}")),
                "shared": read("{tmp_path}/data/shared.txt"),
                "work": attempt(lambda: write("result.txt")),
                "tmp": attempt(lambda: write(os.path.join(os.environ["TMPDIR"], "scratch.txt"))),
                "home": os.path.expanduser("~"),
                "TMPDIR": __import__("tempfile").gettempdir(),
                "cwd": os.getcwd(),
                "capabilities": read("/proc/self/status").split("CapEff:")[1].split()[0],
                "bounding": read("/proc/self/status").split("CapBnd:")[1].split()[0],
                "user": os.getuid(),
                "etc": sorted(os.listdir("/etc")),
                "shadow": attempt(lambda: read("/etc/shadow")),
                "passwd": attempt(lambda: read("/etc/passwd")),
                "who": __import__("getpass").getuser(),
            }}))
            """,
        )
    finally:
        for folder in (sys.prefix, sys.base_prefix):
            Path(folder, name).unlink(missing_ok=True)
    denied = {key: result[key] for key in ("prefix", "base prefix", "root", "data")}
    assert denied == dict.fromkeys(denied, "OSError")  # EROFS
    assert result["shared"] == "shared" and result["work"] == result["tmp"] == "ok"
    assert int(result["capabilities"], 16) == 0  # run by root, bwrap would keep them: a remount could undo read-only
    assert (run.root / "work" / "result.txt").read_text() == "written"
    assert not (run.root / "tmp" / "scratch.txt").exists()  # TMPDIR is a tmpfs of the run's: nothing kept
    assert result["shadow"] in ("FileNotFoundError", "PermissionError") and result["passwd"] == "ok"
    assert not {"shadow", "gshadow", "ssh", "sudoers", "shadow-"} & set(result["etc"])
    assert set(result["etc"]) <= set(sandbox.ETC)
    if os.geteuid() == 0:  # started by root: a user of its own, with no capabilities to get back
        assert result["user"] == run.uid and result["user"] != 0 and int(result["bounding"], 16) == 0
        assert result["who"] == "student"  # code that asks who it is gets an answer (torch's cache folders do)
    root = run.root.resolve()
    assert (result["home"], result["TMPDIR"], result["cwd"]) == (
        str(root / "home"),
        str(root / "tmp"),
        str(root / "work"),
    )


@needs_bwrap
def test_bwrap_hides_hidden_paths_and_shows_no_sys_path_entry_but_pythons(tmp_path, monkeypatch):
    """The grader run from a folder of submissions has that folder as sys.path[0]: the run must not see it."""
    run = make_run(tmp_path, "bwrap")
    (tmp_path / "private.txt").write_text("an instructor's file")
    monkeypatch.syspath_prepend(str(tmp_path))  # the folder the grader runs from, holding the checkout
    monkeypatch.chdir(tmp_path)
    result = probe(
        run,
        f"""
        print(json.dumps({{
            "private": attempt(lambda: read("{tmp_path}/private.txt")),
            "checkout": attempt(lambda: os.listdir("{tmp_path}/checkout")),
            "folder under a readable one": os.listdir("{tmp_path}/data/secret"),
            "file under a readable one": attempt(lambda: print(read("{tmp_path}/data/answers.txt"))),
            "readable": read("{tmp_path}/data/shared.txt"),
        }}))
        """,
    )
    assert result == {
        "private": "FileNotFoundError",
        "checkout": "FileNotFoundError",
        "folder under a readable one": [],
        "file under a readable one": "PermissionError",
        "readable": "shared",
    }


@needs_bwrap
def test_bwrap_unix_socket_from_outside(tmp_path):
    """The grader talks to the run's kernel through a UNIX socket in a writable folder."""
    run = make_run(tmp_path, "bwrap")
    (run.root / "work").mkdir()
    path = run.root / "work" / "grader.sock"
    replies = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        server.settimeout(20)

        def answer():
            connection, _ = server.accept()
            with connection, connection.makefile("rw") as stream:
                replies.append(stream.readline())
                stream.write("pong\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        code = f"""
            client = socket.socket(socket.AF_UNIX)
            client.connect("{path}")
            client.sendall(b"ping\\n")
            print(json.dumps(client.makefile().readline()))
            """
        assert probe(run, code) == "pong\n"
        thread.join(5)
    assert replies == ["ping\n"]


@needs_bwrap
def test_bwrap_escaped_processes_end(tmp_path):
    run = make_run(tmp_path, "bwrap")
    code = DOUBLE_FORK + "time.sleep(60)\n"  # still running when finish is called: a timeout
    (run.root / "work").mkdir()
    process = sandbox.start(run, [sys.executable, "-c", code, run.root / "work" / "grandchild"], dict(os.environ))
    try:
        deadline = time.monotonic() + 20
        while not (run.root / "work" / "grandchild").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(marked(run.token)) >= 3  # bwrap's init, the script, the grandchild in a session of its own
    finally:
        left = sandbox.finish(run, process)
    assert marked(run.token) == []
    assert left == []  # they ended with the sandbox's process namespace: none had to be found and killed


# --------------------------------------------------------------------------- the process level


def test_process_level_kills_and_reports_escaped(tmp_path):
    run = make_run(tmp_path, "process")
    status, _, left = python(run, DOUBLE_FORK, tmp_path / "grandchild")
    pid = int((tmp_path / "grandchild").read_text())
    assert status == 0
    assert [line.split(":")[0] for line in left] == [f"pid {pid}"] and "python" in left[0]
    assert marked(run.token) == []


def test_environment_is_private(tmp_path):
    run = make_run(tmp_path, "process")
    outer = {"PATH": os.environ["PATH"], "HOME": "/root", "no_proxy": "*", "NO_PROXY": "*"}
    env = sandbox.environment(run, outer)
    for key, folder in [("HOME", "home"), ("TMPDIR", "tmp"), ("TEMP", "tmp"), ("TMP", "tmp")]:
        assert env[key] == str(run.root / folder) and Path(env[key]).is_dir()
    for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "PYTHONUSERBASE"):
        assert Path(env[key]).is_relative_to(run.root / "home")
    assert env["COURSE_GRADE_RUN"] == run.token and len(run.token) >= 16
    assert env["PYTHONNOUSERSITE"] == env["HF_HUB_OFFLINE"] == "1"
    assert env["https_proxy"] == env["HTTP_PROXY"] == "http://127.0.0.1:9" and "no_proxy" not in env
    assert outer["HOME"] == "/root"  # not changed in place
    assert "https_proxy" not in sandbox.environment(sandbox.Run(run.root, [], [], level="bwrap"), outer)
    wrapped = sandbox.command(run, ["python", "-V"])  # as it is, under rlimits only
    assert wrapped[-3:] == ["--", "python", "-V"] and Path(wrapped[0]).name == "prlimit"


def test_level_choice(tmp_path, monkeypatch):
    assert sandbox.level("process") == "process"
    monkeypatch.setenv("COURSE_GRADE_SANDBOX", "process")
    assert sandbox.level() == "process"
    monkeypatch.delenv("COURSE_GRADE_SANDBOX")
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert sandbox.level() == sandbox.level("bwrap") == "process"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert sandbox.level() == "process"
    assert "network" in sandbox.fallback_warning() and "\n" not in sandbox.fallback_warning()


# --------------------------------------------------------------------------- snapshot, changes, undo


def test_snapshot_changes_undo(tmp_path):
    tree, outside = tmp_path / "tree", tmp_path / "outside.txt"
    (tree / "pkg" / "__pycache__").mkdir(parents=True)
    outside.write_text("outside")
    files = {"kept.txt": "kept", "swapped.txt": "swapped", "gone.txt": "gone", "other.txt": "other"}
    for name, text in files.items():
        (tree / name).write_text(text)
    (tree / "pkg" / "mod.py").write_text("x = 1")
    (tree / "link").symlink_to("kept.txt")
    os.utime(tree / "kept.txt", ns=(1_000_000_000, 1_000_000_000))
    before = sandbox.snapshot([tree], keep=lambda path: path.name != "other.txt")
    assert set(before.backup) == {str(tree / name) for name in files if name != "other.txt"} | {
        str(tree / "pkg/mod.py")
    }

    (tree / "kept.txt").write_text("KEPT")  # same size; the mtime put back: only the content tells
    os.utime(tree / "kept.txt", ns=(1_000_000_000, 1_000_000_000))
    (tree / "swapped.txt").unlink()
    (tree / "swapped.txt").symlink_to(outside)  # undo must not write through it
    (tree / "gone.txt").unlink()
    (tree / "other.txt").write_text("changed, no backup")
    (tree / "link").unlink()
    (tree / "link").symlink_to("elsewhere")
    (tree / "added.txt").write_text("added")
    (tree / "new" / "deeper").mkdir(parents=True)
    (tree / "new" / "deeper" / "file.py").write_text("")
    (tree / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"compiled")
    (tree / "stray.pyc").write_bytes(b"compiled")

    expected = [f"added {tree}/{name}" for name in ("added.txt", "new/", "new/deeper/file.py")]
    expected += [f"changed {tree / name}" for name in ("kept.txt", "link", "other.txt", "swapped.txt")]
    expected += [f"removed {tree / 'gone.txt'}"]
    assert sandbox.changes(before, [tree]) == sorted(expected)

    assert sandbox.undo(before, [tree]) == [f"changed {tree / 'other.txt'}"]
    assert sandbox.changes(before, [tree]) == [f"changed {tree / 'other.txt'}"]
    assert outside.read_text() == "outside"
    for name in ("kept.txt", "swapped.txt", "gone.txt"):
        assert (tree / name).read_bytes() == files[name].encode() and not (tree / name).is_symlink()
    assert (tree / "kept.txt").stat().st_mtime_ns == 1_000_000_000
    assert os.readlink(tree / "link") == "kept.txt"
    assert not (tree / "added.txt").exists() and not (tree / "new").exists()


# --------------------------------------------------------------------------- limits


@needs_bwrap
@pytest.mark.parametrize("how", ["cgroups", "rlimits"])
def test_a_run_is_held_to_its_limits_of_processes_disk_memory_and_cores(tmp_path, monkeypatch, how):
    """Each limit is small here and the probe asks for more: processes, a tmpfs, a file, memory, cores; with
    cgroups where the grader may make them, and with rlimits alone (cores are then not capped)."""
    if how == "rlimits":
        monkeypatch.setattr(sandbox, "make_cgroups", lambda run: [])
    elif not sandbox.make_cgroups(trial := make_run(tmp_path / "trial", "bwrap")):
        pytest.skip("no cgroup can be made here: the rlimits case covers this machine")
    else:
        sandbox.remove_cgroups(trial.cgroups)
    limits = sandbox.Limits(processes=24, memory=400 << 20, disk=16 << 20, cores=0.5)
    run = make_run(tmp_path, "bwrap")
    run.limits = limits
    code = """
    import subprocess, time
    def spawn():
        children = []
        try:
            for _ in range(60):
                children.append(subprocess.Popen(["sleep", "30"]))
            return "ok"
        except OSError as error:
            return type(error).__name__
        finally:
            for child in children:
                child.kill()
    def fill(path, megabytes):
        with open(path, "wb") as file:
            for _ in range(megabytes):
                file.write(b"x" * (1 << 20))
                file.flush()
    def memory():
        try:
            block = bytearray(900 << 20)
            block[:: 4096] = b"y" * len(block[:: 4096])
            return "ok"
        except MemoryError:
            return "MemoryError"
    def spin(seconds):
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            pass
        return time.process_time()
    print(json.dumps({
        "processes": spawn(),
        "tmpfs": attempt(lambda: fill(os.path.join(os.environ["TMPDIR"], "big"), 40)),
        "/tmp": attempt(lambda: fill("/tmp/big", 40)),
        "file": attempt(lambda: fill("big.bin", 40)),
        "cpu seconds in 2 s": spin(2.0),
    }), flush=True)
    print(memory())  # a memory cgroup's limit kills the process instead; an rlimit's raises MemoryError
    """
    status, out, _ = python(run, PROBE + textwrap.dedent(code))
    result, memory = json.loads(out.splitlines()[0]), out.splitlines()[1:]
    assert memory == ["MemoryError"] or status == -9 or status == 128 + 9, (status, out)
    assert result["processes"] == "BlockingIOError"  # fork: EAGAIN past the cap
    assert result["tmpfs"] == result["/tmp"] == "OSError"  # ENOSPC past the tmpfs's size
    assert result["file"] == "OSError"  # EFBIG past the largest file (Python ignores SIGXFSZ)
    assert (run.root / "work" / "big.bin").stat().st_size <= limits.disk
    if how == "cgroups" and "cpu" in sandbox._cgroup_bases():
        assert result["cpu seconds in 2 s"] < 1.5  # half a core
    for folder in run.cgroups:
        assert not folder.exists()  # removed by finish
