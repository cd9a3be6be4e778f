"""Run a command apart from the machine and from other runs: the grader's sandbox (course_admin.grade).

Two levels, `level()` picks one:

* ``bwrap``: the command runs under bubblewrap in namespaces of its own (no network but its own
  loopback, its own process ids, no capabilities, not even as root). It sees Python's folders, /usr and
  /etc read-only, an empty /tmp, the run's folder (`Run.root`) read-only, and only `Run.writable` and
  the run's home and temporary folders writable. Paths in `Run.hidden` are not there, or are covered.
* ``process``: a plain process in a session of its own. Nothing is isolated: the grader passes proxy
  settings that lead nowhere, and checks (`snapshot`, `changes`, `undo`) what the run may have changed.

Either way every process of a run carries ``COURSE_GRADE_RUN=<token>`` in its environment, and `finish`
kills whatever is left of the run, escaped processes included.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

LEVELS = ("bwrap", "process")
VARIABLE = "COURSE_GRADE_RUN"  # its value, the run's token, marks every process of a run
SYSTEM = ("/usr", "/bin", "/lib", "/lib64", "/etc")  # read-only in bwrap, symlinks (/bin -> usr/bin) kept
FLAGS = [
    "--unshare-all",  # namespaces of its own: no network but its loopback, its own process ids, ...
    "--unshare-user",  # ... a user namespace too, needed by the next flag
    "--disable-userns",  # and no more of them inside
    "--cap-drop",  # no capabilities: run by root, bwrap would keep them all (remount read-write, ...)
    "ALL",
    "--die-with-parent",  # ends with the bwrap process the grader started
    "--new-session",  # no way to type into the grader's terminal
]
NOWHERE = "http://127.0.0.1:9"  # the discard port: the process level's proxy


@dataclass
class Run:
    """One submission's sandbox. `root` is a fresh private folder, `writable` folders inside it that the
    run may write, `readable` more folders it may read, `hidden` paths it must not see."""

    root: Path
    readable: list[Path]
    writable: list[Path]
    hidden: list[Path] = field(default_factory=list)
    level: str = "bwrap"
    token: str = field(default_factory=lambda: secrets.token_hex(16))


def level(prefer: str | None = None) -> str:
    """'bwrap' if bubblewrap is on PATH and a trial run with our flags succeeds (cached per bwrap path),
    else 'process'. `prefer`, else $COURSE_GRADE_SANDBOX, may ask for 'process' (or 'bwrap', which is
    given only where it works). Never raises."""
    try:
        if (prefer or os.environ.get("COURSE_GRADE_SANDBOX")) == "process":
            return "process"
        bwrap = shutil.which("bwrap")
        return "bwrap" if bwrap and _works(bwrap) else "process"
    except Exception:
        return "process"


@functools.lru_cache(maxsize=None)
def _works(bwrap: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="course-sandbox-") as tmp:
        run = Run(Path(tmp), [], [])
        try:
            done = subprocess.run(
                command(run, [sys.executable, "-c", "import os"]),
                env=environment(run, dict(os.environ)),
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0


def fallback_warning() -> str:
    """The grader's one-line warning for the 'process' level."""
    return (
        "warning: bubblewrap (bwrap) is not usable here, so submissions run as plain processes: they can reach "
        "the network, and can write the course's environment, which is only checked and repaired after each run"
    )


# --------------------------------------------------------------------------- the command and its environment


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _mounts(run: Run) -> list[str]:
    """bwrap's mount arguments. Each is ordered by the depth of its path, so a deeper one lies on top of
    the one that holds it; at the same path the later kind below wins (/tmp over a sys.path entry /tmp,
    a readable folder over a hidden one)."""
    hidden = [os.path.realpath(p) for p in run.hidden if os.path.lexists(p)]
    ops: list[tuple[int, int, list[str]]] = []  # (depth, rank, arguments)
    bound: list[str] = []  # folders bound read-only for Python, fewer parts first

    def add(rank: int, path: str, *arguments: str) -> None:
        ops.append((len(Path(path).parts), rank, list(arguments)))

    for top in SYSTEM:
        if os.path.islink(top):
            add(0, top, "--symlink", os.readlink(top), top)
    paths = [p for p in SYSTEM if os.path.isdir(p) and not os.path.islink(p)]  # then Python's, even if hidden:
    paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    paths.append(os.path.dirname(os.path.realpath(sys.executable)))  # where a venv's python points
    visible = [p for p in sys.path if os.path.isabs(p) and not any(_inside(os.path.realpath(p), h) for h in hidden)]
    for path in sorted([*paths, *visible], key=lambda p: len(Path(os.path.realpath(p)).parts)):
        real = os.path.realpath(path)
        shown = any(_inside(real, b) and not any(_inside(h, b) and _inside(real, h) for h in hidden) for b in bound)
        if shown or not os.path.exists(real):  # shown: by a bind of a folder holding it, with no cover between
            continue
        bound.append(real)
        add(0, real, "--ro-bind", real, real)
        alias = os.path.abspath(path)
        if alias != real and os.path.realpath(os.path.dirname(alias)) == os.path.dirname(alias):
            add(0, alias, "--ro-bind", real, alias)  # e.g. a venv reached through a symlink
    for path, flag in [("/dev", "--dev"), ("/proc", "--proc"), ("/tmp", "--tmpfs")]:
        add(1, path, flag, path)
    root = os.path.realpath(run.root)
    readable = [root] + [os.path.realpath(p) for p in run.readable if os.path.exists(p)]
    writable = [os.path.realpath(p) for p in [*run.writable, Path(root, "home"), Path(root, "tmp")]]
    for path in readable:
        add(3, path, "--ro-bind", path, path)
    for path in writable:
        add(4, path, "--bind", path, path)
    covers = []
    for path in hidden:  # under a bound folder: covered, an empty read-only folder or a file that cannot be read
        if any(_inside(path, b) for b in [*bound, *readable, *writable]):
            if os.path.isdir(path):
                add(2, path, "--tmpfs", path)
                covers += ["--remount-ro", path]  # last: deeper mounts need their mount points made first
            else:
                add(2, path, "--ro-bind", "/dev/null", path)
    ops.sort(key=lambda op: op[:2])
    return [argument for _, _, arguments in ops for argument in arguments] + covers


def _cwd(run: Run) -> Path:
    work = Path(run.root, "work")
    return work if work.is_dir() else Path(run.root)


def command(run: Run, argv: list[str]) -> list[str]:
    """`argv` wrapped for the run's level: unchanged for 'process'; for 'bwrap', under bubblewrap (see
    the module's docstring), in `root/work` if it exists, else in `root`. Readable folders that do not
    exist are left out; writable ones must exist (`start` makes them)."""
    if run.level != "bwrap":
        return list(argv)
    cwd = os.path.realpath(_cwd(run))
    return [shutil.which("bwrap") or "bwrap", *FLAGS, *_mounts(run), "--chdir", cwd, "--", *argv]


def environment(run: Run, env: dict[str, str]) -> dict[str, str]:
    """`env` for the run: home, temporary, cache, config and Jupyter folders of its own under `root`
    (made here), no user site-packages, Hugging Face offline, the run's token, and, at the 'process'
    level, proxies that lead nowhere."""
    home, tmp = Path(run.root, "home"), Path(run.root, "tmp")
    folders = {
        "HOME": home,
        "TMPDIR": tmp,
        "TEMP": tmp,
        "TMP": tmp,
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "JUPYTER_CONFIG_DIR": home / ".jupyter",
        "JUPYTER_DATA_DIR": home / ".local" / "share" / "jupyter",
        "JUPYTER_RUNTIME_DIR": home / ".local" / "share" / "jupyter" / "runtime",
        "IPYTHONDIR": home / ".ipython",
        "PYTHONUSERBASE": home / ".local",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {**env, **{key: str(folder) for key, folder in folders.items()}}
    env.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env[VARIABLE] = run.token
    if run.level != "bwrap":
        env.update({key: NOWHERE for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")})
        for key in ("no_proxy", "NO_PROXY", "all_proxy"):
            env.pop(key, None)
    return env


# --------------------------------------------------------------------------- running and ending a run


def start(run: Run, argv: list[str], env: dict[str, str], **popen_kwargs) -> subprocess.Popen:
    """Start `argv` in the run, in a session of its own, with `environment(run, env)`; makes the writable
    folders. The working folder is that of `command` unless `cwd` is given."""
    env = environment(run, env)
    for folder in run.writable:
        Path(folder).mkdir(parents=True, exist_ok=True)
    popen_kwargs.setdefault("cwd", _cwd(run))
    popen_kwargs["start_new_session"] = True
    return subprocess.Popen(command(run, argv), env=env, **popen_kwargs)


def _processes(group: int, marker: bytes | None) -> list[int]:
    """Live processes (not zombies) in process group `group`, or whose environment holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
            state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if state in "ZX":
                continue
            if int(pgrp) == group or marker and marker in b"\0" + Path("/proc", name, "environ").read_bytes():
                found.append(int(name))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def _describe(pid: int) -> str:
    try:
        text = Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"pid {pid}: {text[:200] or '?'}"


def _kill(pid: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def finish(run: Run, process: subprocess.Popen, grace: float = 1.0, wait: float = 10.0) -> list[str]:
    """End the run: kill its process group (and so `process`, if it still runs), then every process whose
    environment holds the run's token. Returns what had to be killed after `process` had ended, as
    'pid 123: python -c ...': processes left in its group, and those that escaped it (setsid, a double
    fork) and are still there `grace` seconds after the group was killed (the time a bwrap sandbox takes
    to end with its process namespace). Waits at most `wait` seconds for them to go."""
    marker = f"\0{VARIABLE}={run.token}\0".encode()
    ended = process.poll() is not None
    left = {pid: _describe(pid) for pid in _processes(process.pid, None)} if ended else {}
    _kill(process.pid, group=True)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass
    start, deadline = time.monotonic(), time.monotonic() + wait
    while (found := _processes(process.pid, marker)) and time.monotonic() < deadline:
        for pid in found:
            if pid in left or time.monotonic() - start >= grace:
                left.setdefault(pid, _describe(pid))
                _kill(pid)
        time.sleep(0.02)
    return [left[pid] for pid in sorted(left)]


# --------------------------------------------------------------------------- what a run must not change


@dataclass
class Snapshot:
    """Files under some roots: path -> (size, mtime_ns), or a symlink's target; the contents and modes
    of those kept to undo a change; the folders."""

    files: dict[str, tuple[int, int] | str]
    backup: dict[str, bytes]
    modes: dict[str, int] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)


def _walk(roots: Iterable[Path]) -> tuple[dict[str, tuple[int, int] | str], dict[str, int], set[str]]:
    """(files, their modes, folders) under `roots`, without __pycache__ folders and .pyc files."""
    files, modes, folders = {}, {}, set()
    stack = [str(root) for root in roots if os.path.isdir(root) and not os.path.islink(root)]
    while stack:
        folder = stack.pop()
        folders.add(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    files[entry.path] = os.readlink(entry.path)
                elif entry.is_dir():
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.is_file() and not entry.name.endswith(".pyc"):
                    stat = entry.stat(follow_symlinks=False)
                    files[entry.path] = (stat.st_size, stat.st_mtime_ns)
                    modes[entry.path] = stat.st_mode & 0o7777
            except OSError:
                continue
    return files, modes, folders


def snapshot(roots: Iterable[Path], keep: Callable[[Path], bool] = lambda path: False) -> Snapshot:
    """The files under `roots`, with the contents of those `keep(path)` says to back up."""
    files, modes, folders = _walk(roots)
    backup = {
        path: Path(path).read_bytes() for path, value in files.items() if type(value) is tuple and keep(Path(path))
    }
    return Snapshot(files, backup, {path: modes[path] for path in backup}, folders)


def _same(before: Snapshot, path: str, now) -> bool:
    if now != before.files[path]:
        return False
    try:
        return path not in before.backup or Path(path).read_bytes() == before.backup[path]
    except OSError:
        return False


def changes(before: Snapshot, roots: Iterable[Path]) -> list[str]:
    """'added X', 'changed X', 'removed X' for files, 'added X/' and 'removed X/' for the outermost
    folders, since `before`; sorted."""
    files, _, folders = _walk(roots)
    lines = [f"added {path}" for path in files.keys() - before.files.keys()]
    lines += [f"removed {path}" for path in before.files.keys() - files.keys()]
    lines += [f"changed {path}" for path in files.keys() & before.files.keys() if not _same(before, path, files[path])]
    for kind, new in [("added", folders - before.folders), ("removed", before.folders - folders)]:
        lines += [f"{kind} {path}/" for path in new if os.path.dirname(path) not in new]
    return sorted(lines)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def undo(before: Snapshot, roots: Iterable[Path]) -> list[str]:
    """Undo the changes since `before`: remove added files and folders, remake removed folders and
    symlinks, restore changed or removed files that are backed up (content, mode, mtime; as new files,
    never written through what is there now). Returns, as `changes` words them, what could not be undone:
    changed or removed files without a backup, and anything that failed."""
    files, _, folders = _walk(roots)
    failed = []
    for path in sorted(files.keys() - before.files.keys()) + sorted(folders - before.folders, reverse=True):
        try:
            _remove(path)
        except OSError as error:
            failed.append(f"added {path} ({error.strerror})")
    for folder in sorted(before.folders - folders):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            failed.append(f"removed {folder}/ ({error.strerror})")
    for path, value in sorted(before.files.items()):
        if path in files and _same(before, path, files[path]):
            continue
        line = f"{'changed' if path in files else 'removed'} {path}"
        if type(value) is tuple and path not in before.backup:
            failed.append(line)
            continue
        try:
            _remove(path)
            if type(value) is str:
                os.symlink(value, path)
                continue
            fresh = Path(path).with_name(f".{Path(path).name}.{secrets.token_hex(4)}.restore")
            fresh.write_bytes(before.backup[path])
            os.chmod(fresh, before.modes.get(path, 0o644))
            os.utime(fresh, ns=(value[1], value[1]))
            os.replace(fresh, path)
        except OSError as error:
            failed.append(f"{line} ({error.strerror})")
    return failed
