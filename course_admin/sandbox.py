"""Run a command apart from the machine and from other runs: the grader's sandbox (course_admin.grade).

Two levels, `level()` picks one:

* ``bwrap``: the command runs under bubblewrap in namespaces of its own (no network but its own
  loopback, its own process ids, no capabilities). Started by root, it runs as a user id of its own
  (`Run.uid`, one per run, never root: `setpriv` inside the sandbox); started by anyone else, as that user
  in a user namespace. It sees the interpreter's own folders (prefixes and the stdlib and site-packages
  folders: never the current folder or other `sys.path` entries), /usr, the parts of /etc a Python process
  needs (`ETC`: not shadow, gshadow, ssh/, ...) read-only, the run's folder (`Run.root`) read-only,
  `Run.writable` read-write, and its home, its temporary folder, /tmp and `Run.scratch` as empty tmpfs of at
  most `Limits.disk` bytes each. Paths in `Run.hidden` are not there, or are covered.
* ``process``: a plain process in a session of its own, as the grader's user. Nothing is isolated: the
  grader passes proxy settings that lead nowhere, and checks (`snapshot`, `changes`, `undo`) what the run
  may have changed.

Either way every process of a run carries ``COURSE_GRADE_RUN=<token>`` in its environment, `limits_for`
caps what the run may take (`Limits`: processes, memory, disk, cores; cgroups where the grader may make
them, else rlimits), and `finish` kills whatever is left of the run, escaped processes included.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

LEVELS = ("bwrap", "process")
VARIABLE = "COURSE_GRADE_RUN"  # its value, the run's token, marks every process of a run
SYSTEM = ("/usr", "/bin", "/lib", "/lib64")  # read-only in bwrap, symlinks (/bin -> usr/bin) kept
# what of /etc a run sees (read-only): the loader's cache, users and groups (no passwords: those are in
# shadow), name resolution, time zone, certificates, fonts, MIME types, the alternatives /usr/bin points into
ETC = (
    "passwd", "group", "hosts", "host.conf", "nsswitch.conf", "gai.conf", "protocols", "services", "localtime",
    "timezone", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates", "fonts",
    "mime.types", "locale.alias", "os-release", "debian_version", "magic", "magic.mime", "terminfo",
)  # fmt: skip
COMMON = [
    "--die-with-parent",  # ends with the bwrap process the grader started
    "--new-session",  # no way to type into the grader's terminal
]
# started by root: namespaces but no user namespace; only what setpriv needs to become the run's user, which
# then drops every capability, the bounding set too
AS_ROOT = [
    "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
    "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
]  # fmt: skip
# started by another user: a user namespace of its own (needed by --disable-userns), no capabilities
AS_USER = ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
NOWHERE = "http://127.0.0.1:9"  # the discard port: the process level's proxy


@dataclass
class Limits:
    """What one run may take. `processes`: at once (a cgroup's pids.max, else RLIMIT_NPROC of the run's own
    user); `memory`: bytes, its processes together (a memory cgroup), else each process's data (RLIMIT_DATA);
    `disk`: bytes, each tmpfs it writes (bwrap) and the largest file it may write (RLIMIT_FSIZE); `cores`:
    how many cores' time it may use at once (a cpu cgroup's quota; None: no cap), so that runs graded side by
    side share the machine."""

    processes: int = 256
    memory: int = 6 << 30
    disk: int = 1 << 30
    cores: float | None = None


@dataclass
class Run:
    """One submission's sandbox. `root` is a fresh private folder, `writable` folders inside it that the
    run may write (kept), `scratch` folders inside it that are empty tmpfs under bwrap (nothing kept; plain
    folders at the process level), `readable` more folders it may read, `hidden` paths it must not see.
    `uid`: the user a bwrap run runs as when the grader is root (one of its own, never root)."""

    root: Path
    readable: list[Path]
    writable: list[Path]
    hidden: list[Path] = field(default_factory=list)
    level: str = "bwrap"
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    scratch: list[Path] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    cgroups: list[Path] = field(default_factory=list)  # made by `start`, removed by `finish`
    uid: int | None = field(default_factory=lambda: 3_000_000 + secrets.randbelow(1_000_000) if _root() else None)

    @property
    def temporary(self) -> list[Path]:
        """Its home and temporary folders and `scratch`: tmpfs under bwrap."""
        return [Path(self.root, "home"), Path(self.root, "tmp"), *self.scratch]


def _root() -> bool:
    return os.geteuid() == 0


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


def python_folders() -> list[str]:
    """The interpreter's own folders: its prefixes, where its executable is, its stdlib and site-packages.
    Never the current folder or any other `sys.path` entry (a folder of submissions, an instructor's files)."""
    folders = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)]
    folders.append(os.path.dirname(os.path.realpath(sys.executable)))  # where a venv's python points
    folders += [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    folders += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return list(dict.fromkeys(os.path.abspath(f) for f in folders))


def _identity_files(run: Run) -> dict[str, Path]:
    """For a run with a user of its own: /etc/passwd and /etc/group with that user (`student`, home the run's
    HOME) and its group added, written once into the run's folder; {} otherwise. Code that asks who it is
    (getpass.getuser(), torch's cache folders) needs an answer."""
    if run.uid is None:
        return {}
    files = {}
    entries = {
        "passwd": f"student:x:{run.uid}:{run.uid}:course grader run:{Path(run.root, 'home')}:/bin/sh\n",
        "group": f"student:x:{run.uid}:\n",
    }
    for name, entry in entries.items():
        target = Path(run.root, f".etc-{name}")
        if not target.exists():
            try:
                host = Path("/etc", name).read_text()
            except OSError:
                host = ""
            target.write_text(host + ("" if host.endswith("\n") or not host else "\n") + entry)
        files[name] = target
    return files


def _mounts(run: Run) -> list[str]:
    """bwrap's mount arguments. Each is ordered by the depth of its path, so a deeper one lies on top of
    the one that holds it; at the same path the later kind below wins (/tmp over a Python folder /tmp, a
    readable folder over a hidden one). The folders that lead to a mount are made world-readable (started
    by root, bwrap would make them private to root)."""
    hidden = [os.path.realpath(p) for p in run.hidden if os.path.lexists(p)]
    ops: list[tuple[int, int, list[str]]] = []  # (depth, rank, arguments)
    bound: list[str] = []  # folders bound read-only for Python, fewer parts first
    size = ["--size", str(run.limits.disk)]

    def add(rank: int, path: str, *arguments: str) -> None:
        ops.append((len(Path(path).parts), rank, list(arguments)))

    for top in SYSTEM:
        if os.path.islink(top):
            add(0, top, "--symlink", os.readlink(top), top)
    paths = [p for p in SYSTEM if os.path.isdir(p) and not os.path.islink(p)]  # then Python's, even if hidden:
    for path in sorted([*paths, *python_folders()], key=lambda p: len(Path(os.path.realpath(p)).parts)):
        real = os.path.realpath(path)
        shown = any(_inside(real, b) and not any(_inside(h, b) and _inside(real, h) for h in hidden) for b in bound)
        if shown or not os.path.exists(real):  # shown: by a bind of a folder holding it, with no cover between
            continue
        bound.append(real)
        add(0, real, "--ro-bind", real, real)
        alias = os.path.abspath(path)
        if alias != real and os.path.realpath(os.path.dirname(alias)) == os.path.dirname(alias):
            add(0, alias, "--ro-bind", real, alias)  # e.g. a venv reached through a symlink
    identity = _identity_files(run)
    for name in ETC:
        path = os.path.join("/etc", name)
        if name in identity:  # with the run's own user and group in them
            add(0, path, "--ro-bind", str(identity[name]), path)
        elif os.path.exists(path):  # a link is bound as what it points to
            add(0, path, "--ro-bind", os.path.realpath(path), path)
    add(1, "/dev", "--dev", "/dev")
    add(1, "/proc", "--proc", "/proc")
    add(1, "/tmp", "--perms", "1777", *size, "--tmpfs", "/tmp")
    root = os.path.realpath(run.root)
    readable = [root] + [os.path.realpath(p) for p in run.readable if os.path.exists(p)]
    writable = [os.path.realpath(p) for p in run.writable]
    temporary = [os.path.realpath(p) for p in run.temporary]
    for path in readable:
        add(3, path, "--ro-bind", path, path)
    for path in writable:
        add(4, path, "--bind", path, path)
    for path in temporary:
        add(4, path, "--perms", "1777", *size, "--tmpfs", path)
    covers = []
    for path in hidden:  # under a bound folder: covered, an empty read-only folder or a file that cannot be read
        if any(_inside(path, b) for b in [*bound, *readable, *writable]):
            if os.path.isdir(path):
                add(2, path, "--tmpfs", path)
                covers += ["--remount-ro", path]  # last: deeper mounts need their mount points made first
            else:
                add(2, path, "--ro-bind", "/dev/null", path)
    mounted = [*SYSTEM, *bound, *readable, *writable, "/dev", "/proc"]  # binds: what is in them exists
    leading = {str(a) for _, _, arguments in ops for a in Path(arguments[-1]).parents if str(a) != "/"}
    for folder in leading:
        if not any(_inside(folder, m) for m in mounted):
            add(-1, folder, "--perms", "0755", "--dir", folder)
    ops.sort(key=lambda op: op[:2])
    return [argument for _, _, arguments in ops for argument in arguments] + covers


def _cwd(run: Run) -> Path:
    work = Path(run.root, "work")
    return work if work.is_dir() else Path(run.root)


def command(run: Run, argv: list[str], cgroups: list[Path] = ()) -> list[str]:
    """`argv` wrapped for the run's level: for 'bwrap', under bubblewrap (see the module's docstring), as
    `run.uid` if set, in `root/work` if it exists, else in `root`; for 'process', as it is. Either way under
    the rlimits of `limits_for` and, first, in the `cgroups` folders given (their `cgroup.procs`). Readable
    folders that do not exist are left out; writable ones must exist (`start` makes them)."""
    inner = list(argv)
    if run.level == "bwrap":
        if run.uid is not None:
            drop = ["--reuid", str(run.uid), "--regid", str(run.uid), "--clear-groups"]
            inner = [
                shutil.which("setpriv") or "setpriv",
                *drop,
                "--bounding-set",
                "-all",
                "--inh-caps",
                "-all",
                "--",
                *inner,
            ]
        flags = COMMON + (AS_ROOT if run.uid is not None else AS_USER)
        cwd = os.path.realpath(_cwd(run))
        inner = [shutil.which("bwrap") or "bwrap", *flags, *_mounts(run), "--chdir", cwd, "--", *inner]
    rlimits = [f"--{name}={value}:{value}" for name, value in rlimits_for(run, bool(cgroups)).items()]
    if rlimits:
        inner = [shutil.which("prlimit") or "prlimit", *rlimits, "--", *inner]
    if cgroups:  # the shell joins the cgroups, then becomes the command: everything the run starts is in them
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
        inner = ["/bin/sh", "-c", join, "sh", *[str(Path(c, "cgroup.procs")) for c in cgroups], "--", *inner]
    return inner


def rlimits_for(run: Run, in_cgroups: bool) -> dict[str, int]:
    """prlimit's options for the run: the largest file it may write; unless it is in cgroups, how many
    processes its own user may have (only where it has a user of its own) and each process's data."""
    limits = {"fsize": run.limits.disk}
    if not in_cgroups:
        if run.uid is not None and run.level == "bwrap":
            limits["nproc"] = run.limits.processes
        limits["data"] = run.limits.memory
    return limits


# --------------------------------------------------------------------------- cgroups


def _cgroup_bases() -> dict[str, Path]:
    """Controller -> the folder of this process's own cgroup that holds it (cgroup v1: memory, pids, cpu;
    v2: one folder for all), for those whose folder exists; {} if there are none."""
    bases = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        _, controllers, where = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in ("memory", "pids", "cpu"):
                bases[controller] = Path("/sys/fs/cgroup", controller, where.lstrip("/"))
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            bases.setdefault("v2", Path("/sys/fs/cgroup", where.lstrip("/")))
    if bases.keys() - {"v2"}:
        bases.pop("v2", None)  # v1 controllers mounted: the v2 hierarchy beside them holds none of them
    return {controller: base for controller, base in bases.items() if base.is_dir()}


def _settings(controller: str, limits: Limits) -> dict[str, str]:
    period = 100_000
    quota = str(int(limits.cores * period)) if limits.cores else None
    v1 = {
        "memory": {"memory.limit_in_bytes": str(limits.memory)},
        "pids": {"pids.max": str(limits.processes)},
        "cpu": {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": quota} if quota else {},
    }
    v2 = {"memory.max": str(limits.memory), "pids.max": str(limits.processes)} | (
        {"cpu.max": f"{quota} {period}"} if quota else {}
    )
    return v2 if controller == "v2" else v1[controller]


def make_cgroups(run: Run) -> list[Path]:
    """A cgroup per controller for the run, under the grader's own, with `run.limits` set; the folders made.
    Where the grader may not make one (not root, a read-only cgroup file system, a controller not enabled),
    none: the rlimits of `command` stand in. `remove_cgroups` removes them."""
    made = []
    for controller, base in _cgroup_bases().items():
        folder = base / f"course-grade-{run.token}"
        try:
            folder.mkdir()
        except OSError:
            continue
        made.append(folder)
        try:
            for name, value in _settings(controller, run.limits).items():
                if controller == "v2" and not Path(folder, name).exists():
                    raise OSError(f"{name}: controller not enabled")
                Path(folder, name).write_text(value)
        except OSError:
            remove_cgroups(made)
            return []
    return made


def remove_cgroups(folders: list[Path], wait: float = 5.0) -> None:
    """Remove the run's cgroups once their processes are gone (waits at most `wait` seconds)."""
    deadline = time.monotonic() + wait
    for folder in folders:
        while True:
            try:
                folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


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
    """Start `argv` in the run, in a session of its own, with `environment(run, env)`, in cgroups of its own
    where they can be made (`make_cgroups`); makes the writable folders (the run's user's). The working folder
    is that of `command` unless `cwd` is given."""
    env = environment(run, env)
    for folder in run.writable:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if run.uid is not None and run.level == "bwrap":
            for path in [Path(folder), *Path(folder).rglob("*")]:
                os.chown(path, run.uid, run.uid, follow_symlinks=False)
    run.cgroups = make_cgroups(run)
    popen_kwargs.setdefault("cwd", _cwd(run))
    popen_kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(command(run, argv, run.cgroups), env=env, **popen_kwargs)
    except BaseException:
        remove_cgroups(run.cgroups)
        raise


def _processes(group: int, marker: bytes | None, uid: int | None = None) -> list[int]:
    """Live processes (not zombies) in process group `group`, or whose environment holds `marker`, or whose
    real user is `uid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
            state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if state in "ZX":
                continue
            if (
                int(pgrp) == group
                or uid is not None
                and Path("/proc", name).stat().st_uid == uid
                or marker
                and marker in b"\0" + Path("/proc", name, "environ").read_bytes()
            ):
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
    while (found := _processes(process.pid, marker, run.uid)) and time.monotonic() < deadline:
        for pid in found:
            if pid in left or time.monotonic() - start >= grace:
                left.setdefault(pid, _describe(pid))
                _kill(pid)
        time.sleep(0.02)
    remove_cgroups(run.cgroups)
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
