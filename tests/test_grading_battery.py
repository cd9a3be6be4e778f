"""A battery for the grader (course_admin.grade) on notebook 01: honest code in many idioms scores full marks,
cheats score nothing, and one submission cannot reach another, the course or the machine.

Submissions are the solution notebook 01 with other code in its two exercise cells, 1.1 `train_bpe` (6 points)
and 1.2 `bpe_encode_word` (4 points), graded as a class would be. A graded run of notebook 01 takes about 30 s,
so the file grades seven submissions, in three calls of `grade.grade`:

* `battery`: the two HONEST submissions and three of the CHEATS ones, two at a time, at the grader's own level;
* `cross` (bubblewrap only): the ATTACKER, then the second honest submission as its victim, one after the
  other (where bubblewrap is not usable, the victim is graded in `battery` instead and the attacker not at all);
* `fallback`: the fourth CHEATS submission at the 'process' level, whose 1.1 cell also writes a .pth file
  into site-packages and starts a sleeping process in a session of its own (its cheats do not depend on the
  level: the judge decides either way).

HONEST, CHEATS and ATTACKS are the lists the tests go through. What the submissions make outside their runs
carries this session's TOKEN, and the fixtures remove it (and end such processes) even when a test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from course_admin import grade, sandbox
from course_admin import notebooks as nbs
from course_lib import paths

pytestmark = pytest.mark.slow

BWRAP = sandbox.level() == "bwrap"
needs_bwrap = pytest.mark.skipif(
    not BWRAP, reason="bubblewrap is not installed or not usable here (sandbox.level() is 'process')"
)

TOKEN = secrets.token_hex(6)  # marks the files and processes the attackers try to leave behind
MARK = f"GRADING_BATTERY={TOKEN}"  # in the environment of the processes they start
SOLUTION = nbs.SOLUTIONS / "01_bpe_tokenizer.ipynb"
POINTS = {"1.1": 6, "1.2": 4}
PASS_LINE = {
    "1.1": "Exercise 1.1 passed: 6/6 checks, 3/3 hidden checks",
    "1.2": "Exercise 1.2 passed: 5/5 checks, 2/2 hidden checks",
}
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
DATA_FILES = ["en/brown.valid.tsv.gz", "manifest.json"]  # what the attacker deletes or overwrites


# --------------------------------------------------------------------------- honest code

HONEST_A_11 = """\
%%time
# Exercise 1.1 with a cell magic, a temporary file, os, getattr/setattr, functools and a dataclass
import functools
import json
import os, sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

Pair = Tuple[str, str]
print(f"recursion limit: {sys.getrecursionlimit()}")


@dataclass
class Vocabulary:
    \"\"\"The tokens in id order, their ids, and the merges that made them.\"\"\"

    tokens: List[str] = field(default_factory=list)
    ids: Dict[str, int] = field(default_factory=dict)
    merges: List[Pair] = field(default_factory=list)

    def add(self, token: str) -> None:
        if token not in self.ids:
            self.ids[token] = len(self.tokens)
            self.tokens.append(token)


def counts_via_file(counts: Dict[str, int]) -> Dict[str, int]:
    \"\"\"The counts, written to a temporary file, renamed, and read back.\"\"\"
    with tempfile.TemporaryDirectory() as scratch:
        draft, final = os.path.join(scratch, "counts.part"), os.path.join(scratch, "counts.json")
        with open(draft, "w", encoding="utf-8") as f:
            json.dump(counts, f)
        os.replace(draft, final)
        with open(final, encoding="utf-8") as f:
            return json.load(f)


@functools.lru_cache(maxsize=None)
def joined(left: str, right: str) -> str:
    return functools.reduce(lambda a, b: a + b, (left, right), "")


def merged(symbols: Tuple[str, ...], pair: Pair) -> Tuple[str, ...]:
    out: List[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(joined(*pair))
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def count_pairs(words: Dict[Tuple[str, ...], int]) -> Counter:
    counts: Dict[Pair, int] = defaultdict(int)
    for symbols, n in words.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += n
    return Counter(counts)


def preference(ids: Dict[str, int], counts: Counter, pair: Pair) -> Tuple[int, int, int]:
    \"\"\"The most frequent pair; on a tie, the one whose tokens have the smallest ids.\"\"\"
    return counts[pair], -ids[pair[0]], -ids[pair[1]]


def train_bpe(word_counts: Dict[str, int], vocab_size: int) -> Tuple[List[str], List[Pair]]:
    counts = counts_via_file(dict(word_counts))
    vocab = Vocabulary()
    for ch in sorted({ch for word in counts for ch in word}):
        vocab.add(ch)
    words = {tuple(word): n for word, n in counts.items()}
    setattr(vocab, "rounds", 0)
    while len(getattr(vocab, "tokens")) < vocab_size:
        now = count_pairs(words)
        if not now:
            break
        best = max(now, key=functools.partial(preference, vocab.ids, now))
        vocab.merges.append(best)
        vocab.add(joined(*best))
        words = {merged(symbols, best): n for symbols, n in words.items()}
        setattr(vocab, "rounds", getattr(vocab, "rounds") + 1)
        if vocab.rounds % 100 == 0:
            print(f"train_bpe: {vocab.rounds} merges, {len(vocab.tokens)} tokens")
    return list(vocab.tokens), list(vocab.merges)
"""

HONEST_A_12 = """\
# Exercise 1.2 with numpy, a regular expression, vars() of a small object and the %time magic
import re
from types import SimpleNamespace

import numpy as np

encoding_options = SimpleNamespace(characters=r"(?s).", dtype=np.int64)
settings = {name: value for name, value in vars(encoding_options).items() if not name.startswith("_")}


def bpe_encode_word(word, merges):
    rank = {tuple(pair): i for i, pair in enumerate(merges)}
    symbols = re.findall(settings["characters"], word)
    unranked = len(rank)
    while len(symbols) > 1:
        ranks = np.array([rank.get(pair, unranked) for pair in zip(symbols, symbols[1:])], dtype=settings["dtype"])
        i = int(np.argmin(ranks))  # the first occurrence of the smallest rank: the leftmost
        if ranks[i] == unranked:
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


%time probe = bpe_encode_word("aaaaa", [("a", "a")])
assert probe == ["aa", "aa", "a"], probe
"""

HONEST_B_11 = """\
# Exercise 1.1 with torch for the counting, itertools, heapq, and a look at globals()
import heapq
import itertools

import torch


def bpe_merge(symbols, pair):
    out, skip = [], False
    for i, token in enumerate(symbols):
        if skip:
            skip = False
        elif i + 1 < len(symbols) and (token, symbols[i + 1]) == pair:
            out.append(token + symbols[i + 1])
            skip = True
        else:
            out.append(token)
    return tuple(out)


def bpe_count(words):
    \"\"\"{pair: how often it occurs}, summed by torch.\"\"\"
    seen, index, weight = {}, [], []
    for symbols, n in words.items():
        for pair in itertools.pairwise(symbols):
            index.append(seen.setdefault(pair, len(seen)))
            weight.append(n)
    if not seen:
        return {}
    totals = torch.zeros(len(seen), dtype=torch.int64)
    totals.index_add_(0, torch.tensor(index, dtype=torch.int64), torch.tensor(weight, dtype=torch.int64))
    return dict(zip(seen, totals.tolist()))


def train_bpe(word_counts, vocab_size):
    vocab = sorted(set(itertools.chain.from_iterable(word_counts)))
    ids = {token: i for i, token in enumerate(vocab)}
    words = {tuple(word): n for word, n in word_counts.items()}
    merges = []
    while len(vocab) < vocab_size:
        counts = bpe_count(words)
        if not counts:
            break
        # the most frequent pair; on a tie, the one whose tokens have the smallest ids
        best = heapq.nsmallest(1, counts, key=lambda p: (-counts[p], ids[p[0]], ids[p[1]]))[0]
        merges.append(best)
        token = best[0] + best[1]
        if token not in ids:
            ids[token] = len(vocab)
            vocab.append(token)
        words = {bpe_merge(symbols, best): n for symbols, n in words.items()}
    return vocab, merges


bpe_helpers = sorted(name for name, value in globals().items() if name.startswith("bpe_") and callable(value))
print("helpers:", ", ".join(bpe_helpers))
"""

HONEST_B_12 = """\
# Exercise 1.2 with importlib, sys.modules, pickle, a NamedTuple, a closure and a shell command
import importlib
import pickle
import sys
from typing import NamedTuple


class Candidate(NamedTuple):
    rank: int
    position: int


def make_ranker(merges):
    rank = {tuple(pair): i for i, pair in enumerate(pickle.loads(pickle.dumps(list(merges))))}

    def candidates(symbols):
        pairwise = importlib.import_module("itertools").pairwise
        return [Candidate(rank[p], i) for i, p in enumerate(pairwise(symbols)) if p in rank]

    return candidates


def bpe_encode_word(word, merges):
    candidates = make_ranker(merges)
    symbols = list(word)
    while len(symbols) > 1:
        found = candidates(symbols)
        if not found:
            break
        best = min(found)  # the earliest-learned pair, at its leftmost place
        symbols[best.position : best.position + 2] = ["".join(symbols[best.position : best.position + 2])]
    return symbols


said = !echo bpe
assert list(said) == ["bpe"], said
assert "pickle" in sys.modules and bpe_encode_word("abc", [("b", "c"), ("a", "b")]) == ["a", "bc"]
"""

HONEST_SOURCES = {
    "honest_a": {"1.1": HONEST_A_11, "1.2": HONEST_A_12},
    "honest_b": {"1.1": HONEST_B_11, "1.2": HONEST_B_12},
}


@dataclass(frozen=True)
class Idiom:
    name: str
    student: str
    exercise: str
    marker: str  # text that shows the idiom is in that cell


HONEST = [
    Idiom("%%time cell magic (first line)", "honest_a", "1.1", "%%time\n"),
    Idiom("import os, sys", "honest_a", "1.1", "import os, sys\n"),
    Idiom("sys.getrecursionlimit()", "honest_a", "1.1", "sys.getrecursionlimit()"),
    Idiom("open() writes a tempfile and reads it back", "honest_a", "1.1", "tempfile.TemporaryDirectory()"),
    Idiom("os.path.join / os.replace", "honest_a", "1.1", "os.replace(draft, final)"),
    Idiom('getattr(obj, "name") / setattr', "honest_a", "1.1", 'setattr(vocab, "rounds", getattr(vocab, "rounds")'),
    Idiom("functools.lru_cache", "honest_a", "1.1", "@functools.lru_cache"),
    Idiom("functools.reduce", "honest_a", "1.1", "functools.reduce("),
    Idiom("functools.partial", "honest_a", "1.1", "functools.partial("),
    Idiom("a dataclass", "honest_a", "1.1", "@dataclass"),
    Idiom("typing hints", "honest_a", "1.1", "from typing import Dict, List, Tuple"),
    Idiom("collections.Counter / defaultdict", "honest_a", "1.1", "defaultdict(int)"),
    Idiom("f-strings", "honest_a", "1.1", 'f"train_bpe: {vocab.rounds}'),
    Idiom("helper functions", "honest_a", "1.1", "def count_pairs("),
    Idiom("print of progress", "honest_a", "1.1", 'print(f"train_bpe:'),
    Idiom("numpy (np.array, np.argmin)", "honest_a", "1.2", "np.argmin(ranks)"),
    Idiom("re.findall", "honest_a", "1.2", "re.findall("),
    Idiom("comprehension over vars() of a small object", "honest_a", "1.2", "vars(encoding_options).items()"),
    Idiom("%time line magic", "honest_a", "1.2", "\n%time "),
    Idiom("torch.tensor / index_add_ for counting", "honest_b", "1.1", "totals.index_add_("),
    Idiom("itertools (pairwise, chain)", "honest_b", "1.1", "itertools.chain.from_iterable("),
    Idiom("heapq.nsmallest", "honest_b", "1.1", "heapq.nsmallest("),
    Idiom("comprehension over globals()", "honest_b", "1.1", "globals().items()"),
    Idiom("importlib.import_module", "honest_b", "1.2", 'importlib.import_module("itertools")'),
    Idiom("sys.modules", "honest_b", "1.2", "sys.modules"),
    Idiom("pickle round trip", "honest_b", "1.2", "pickle.loads(pickle.dumps("),
    Idiom("typing.NamedTuple", "honest_b", "1.2", "class Candidate(NamedTuple)"),
    Idiom("a closure", "honest_b", "1.2", "def candidates(symbols)"),
    Idiom("! shell command", "honest_b", "1.2", "said = !echo bpe"),
]

# a plain correct 1.2, for the attacker and the fallback submission where their 1.2 is not what is tested
CORRECT_12 = """\
def bpe_encode_word(word, merges):
    rank = {tuple(pair): i for i, pair in enumerate(merges)}
    symbols = list(word)
    while len(symbols) > 1:
        found = min((rank.get(pair, len(rank)), i) for i, pair in enumerate(zip(symbols, symbols[1:])))
        if found[0] == len(rank):
            break
        symbols[found[1] : found[1] + 2] = [symbols[found[1]] + symbols[found[1] + 1]]
    return symbols
"""

# --------------------------------------------------------------------------- cheats

WRONG_11 = """
def train_bpe(word_counts, vocab_size):  # wrong: the characters, and no merges
    return sorted({ch for word in word_counts for ch in word}), []
"""

WRONG_12 = """
def bpe_encode_word(word, merges):  # wrong: never merges
    return list(word)
"""

CHEAT_A = """\
# cheat (a): the course's own train_bpe, reached by a computed module and attribute name
import importlib

train_bpe = getattr(importlib.import_module("course_lib." + "tokeni" + "zation"), "train" + "_bpe")
"""

CHEAT_B = """\
# cheat (b): the course's bpe_encode_word through a name resolver
import pkgutil

bpe_encode_word = pkgutil.resolve_name("course_lib.tokenization:bpe_encode_word")
"""

CHEAT_C = (
    """\
# cheat (c): the solution notebook, searched for on disk, its exercise cell run here
import json
import os
from pathlib import Path

import course_lib
"""
    + WRONG_11
    + """

roots = ["/", "/work", os.path.expanduser("~"), *map(str, Path(course_lib.__file__).resolve().parents)]
found, solved = [], False
for root in dict.fromkeys(roots):
    top = root.rstrip("/").count("/")
    for folder, subfolders, files in os.walk(root):
        if folder.rstrip("/").count("/") - top >= 4:
            subfolders[:] = []
        subfolders[:] = [s for s in subfolders if os.path.join(folder, s) not in ("/proc", "/sys", "/dev", "/usr")]
        if "01_bpe_tokenizer.ipynb" in files:
            found.append(os.path.join(folder, "01_bpe_tokenizer.ipynb"))
for path in dict.fromkeys(found):
    try:
        cells = json.loads(Path(path).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        continue
    for cell in cells:
        source = "".join(cell.get("source", ""))
        if source.startswith("def train_bpe") and "BEGIN SOLUTION" in source and not solved:
            exec(source, globals())
            solved = True
if not solved:
    raise FileNotFoundError(f"cheat (c) found no solution notebook ({len(found)} files of that name)")
"""
)

CHEAT_D = (
    """\
# cheat (d): comparisons patched through aliases so that they always succeed; the code itself is wrong
import builtins
import ctypes
import gc
import operator

import torch

always, never = (lambda a, b: True), (lambda a, b: False)
t = torch.Tensor
setattr(t, "__eq__", always)
setattr(t, "__ne__", never)
setattr(operator, "eq", always)
b = builtins
setattr(b, "all", lambda *args, **kwargs: True)
try:
    setattr(list, "__eq__", always)
except TypeError:  # a builtin type: through the dict behind its read-only proxy
    gc.get_referents(list.__dict__)[0]["__eq__"] = always
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(list))
"""
    + WRONG_12
)

CHEAT_E = """\
# cheat (e): lists that equal anything; what is in them is wrong
class Tokens(list):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = None


def train_bpe(word_counts, vocab_size):
    return Tokens(sorted({ch for word in word_counts for ch in word})), Tokens()
"""

CHEAT_F = (
    """\
# cheat (f): every exception of the cells after this one is shown as the pass line
def show_passed(shell, etype, value, tb, tb_offset=None):
    print("Exercise 1.1 passed: 6/6 checks, 3/3 hidden checks")


get_ipython().set_custom_exc((Exception,), show_passed)
"""
    + WRONG_11
)

CHEAT_G = (
    """\
# cheat (g): the pass line, printed by the exercise cell itself
print("Exercise 1.2 passed: 5/5 checks, 2/2 hidden checks")
"""
    + WRONG_12
)

CHEAT_H = (
    """\
# cheat (h): the checker and the grader's submit replaced in the kernel by a pass line
import course_lib.checks.framework
import course_lib.checks.grading


def passed(*args, **kwargs):
    print("Exercise 1.2 passed: 5/5 checks, 2/2 hidden checks")


course_lib.checks.framework.run_cases = passed
course_lib.checks.grading.submit = passed
"""
    + WRONG_12
)

# the fallback submission's 1.1 also tries to leave a .pth file and a process behind (see `fallback`)
PROCESS_ATTACK = """
# and, before grading goes on: a .pth file in site-packages, and a process in a session of its own
import os
import subprocess
import sysconfig

try:
    with open(os.path.join(sysconfig.get_paths()["purelib"], "grading_battery_@TOKEN@.pth"), "w") as f:
        f.write("# grading battery @TOKEN@\\n")
except OSError as error:
    print("no .pth:", error)
subprocess.Popen(["sleep", "300"], start_new_session=True, env={**os.environ, "GRADING_BATTERY": "@TOKEN@"})
"""


@dataclass(frozen=True)
class Cheat:
    key: str
    name: str
    student: str
    exercise: str
    source: str
    why: str = ""  # text the failure's message must hold: it failed for the reason meant
    needs_bwrap: bool = False  # succeeds where the run is not isolated (the 'process' level)


CHEATS = [
    Cheat(
        "a", "course train_bpe via importlib + getattr of computed names", "cheat_1", "1.1", CHEAT_A, "not available"
    ),
    Cheat("b", "course bpe_encode_word via pkgutil.resolve_name", "cheat_1", "1.2", CHEAT_B, "not available"),
    Cheat("c", "solution notebook read from disk and exec'd", "cheat_2", "1.1", CHEAT_C, "found no solution", True),
    Cheat(
        "d", "torch.Tensor.__eq__, operator.eq, builtins.all, list.__eq__ patched", "cheat_2", "1.2", CHEAT_D, "differ"
    ),
    Cheat("f", "set_custom_exc handler prints the pass line", "cheat_3", "1.1", CHEAT_F, "merges"),
    Cheat("g", "the pass line printed by the exercise cell", "cheat_3", "1.2", CHEAT_G, "differ"),
    Cheat("e", "a list subclass whose __eq__ is always True", "cheat_4", "1.1", CHEAT_E, "merges"),
    Cheat(
        "h", "framework.run_cases and grading.submit patched in the kernel", "cheat_4", "1.2", CHEAT_H, "did not reach"
    ),
]
FALLBACK_STUDENT = "cheat_4"  # graded at the 'process' level, with PROCESS_ATTACK added to its 1.1 cell

# --------------------------------------------------------------------------- the attacker

ATTACKER_11 = """\
# attacker: a correct train_bpe, then attempts to reach past its own run, each on its own
import os
import pwd
import shutil
import subprocess
import sysconfig
from collections import Counter
from pathlib import Path

import course_lib
from course_lib import data as course_data
from course_lib import paths as course_paths


def train_bpe(word_counts, vocab_size):
    vocab = sorted({ch for word in word_counts for ch in word})
    ids = {token: i for i, token in enumerate(vocab)}
    words = {tuple(word): n for word, n in word_counts.items()}
    merges = []
    while len(vocab) < vocab_size:
        counts = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] += n
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -ids[p[0]], -ids[p[1]]))
        merges.append(best)
        if best[0] + best[1] not in ids:
            ids[best[0] + best[1]] = len(vocab)
            vocab.append(best[0] + best[1])
        merged = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = n
        words = merged
    return vocab, merges


attempts = {}


def attempt(name, action, *args, **kwargs):
    try:
        action(*args, **kwargs)
        attempts[name] = "done"
    except Exception as error:
        attempts[name] = f"{type(error).__name__}: {error}"


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)


def double_fork(sleep):
    env = {k: v for k, v in os.environ.items() if k != "COURSE_GRADE_RUN"}  # not even the run's token
    env["GRADING_BATTERY"] = "@TOKEN@"
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.execve(sleep, ["sleep", "300"], env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


site_packages = sysconfig.get_paths()["purelib"]
home = pwd.getpwuid(os.getuid()).pw_dir
attempt("write /tmp", write, "/tmp/grading-battery-@TOKEN@.txt", "attacker")
attempt("write the home folder", write, os.path.join(home, "grading-battery-@TOKEN@.txt"), "attacker")
attempt("write a .pth", write, os.path.join(site_packages, "grading_battery_@TOKEN@.pth"), "import os\\n")
attempt("write sitecustomize.py", write, os.path.join(site_packages, "sitecustomize.py"), "# @TOKEN@\\n", "a")
folders = [course_paths.course_path("data"), course_data.data_dir(), os.environ.get("COURSE_DATA_DIR")]
for folder in dict.fromkeys(str(f) for f in folders if f):
    for name in ["en/brown.valid.tsv.gz", "manifest.json"]:
        attempt(f"delete {folder}/{name}", os.remove, os.path.join(folder, name))
        attempt(f"overwrite {folder}/{name}", write, os.path.join(folder, name), "attacker")
library = Path(course_lib.__file__).resolve().parent
attempt("write into course_lib", write, library / "grading_battery_@TOKEN@.py", "raise SystemExit\\n")
attempt("append to course_lib/tokenization.py", write, library / "tokenization.py", "\\nraise SystemExit\\n", "a")
attempt("delete course_lib/checks/nb01.py", os.remove, library / "checks" / "nb01.py")
marked = {**os.environ, "GRADING_BATTERY": "@TOKEN@"}
attempt("sleep in a session of its own", subprocess.Popen, ["sleep", "300"], env=marked, start_new_session=True)
attempt("start a double-forked process without the run's token", double_fork, shutil.which("sleep"))
print(attempts)
"""

# what the attacker's 1.1 cell tries (name, the attempt's name in the cell), and what the test then checks:
# the files unchanged, nothing new in site-packages, /tmp or the home folder, no `sleep 300` left running
ATTACKS = [
    ("a file in /tmp", "write /tmp"),
    ("a file in the home folder", "write the home folder"),
    ("a .pth file in the venv's site-packages", "write a .pth"),
    ("sitecustomize.py in the venv's site-packages", "write sitecustomize.py"),
    ("delete the course data files (en/brown.valid.tsv.gz, manifest.json)", "delete {folder}/{name}"),
    ("overwrite the course data files", "overwrite {folder}/{name}"),
    ("a new file in course_lib", "write into course_lib"),
    ("append to course_lib/tokenization.py", "append to course_lib/tokenization.py"),
    ("delete course_lib/checks/nb01.py", "delete course_lib/checks/nb01.py"),
    ("sleep 300 in a session of its own (subprocess, start_new_session)", "sleep in a session of its own"),
    (
        "sleep 300 double-forked, setsid, without the run's token",
        "start a double-forked process without the run's token",
    ),
]

# --------------------------------------------------------------------------- building, grading, looking around


def submission(folder: Path, student: str, sources: dict[str, str]) -> Path:
    """The solution notebook 01 with `sources` (exercise -> cell source) in its exercise cells."""
    nb = nbs.read(SOLUTION)
    for cell in nb.cells:
        if nbs.cell_role(cell) == "exercise" and nbs.cell_exercise(cell) in sources:
            cell.source = sources[nbs.cell_exercise(cell)]
    path = folder / f"{student}.ipynb"
    path.write_text(nbs.dumps(nb))
    return path


def cheat_sources(student: str) -> dict[str, str]:
    return {c.exercise: c.source for c in CHEATS if c.student == student}


def rows(graded) -> dict[str, dict[str, object]]:
    """student -> exercise -> row, over grade.grade's results."""
    return {g.student: {r.exercise: r for r in g.results} for g in graded}


def sleeping() -> dict[int, bool]:
    """Live `sleep 300` processes on the machine: pid -> whether it carries this session's MARK."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if Path("/proc", name, "cmdline").read_bytes() != b"sleep\x00300\x00":
                continue
            try:
                environ = Path("/proc", name, "environ").read_bytes()
            except OSError:
                environ = b""
            found[int(name)] = b"\0" + MARK.encode() + b"\0" in b"\0" + environ
        except OSError:
            continue
    return found


def new_sleepers(before: dict[int, bool], wait: float = 10.0) -> dict[int, bool]:
    """`sleep 300` processes that were not there `before` (a sandbox may take a moment to end its own)."""
    deadline = time.monotonic() + wait
    while (left := {p: m for p, m in sleeping().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stray_files() -> list[Path]:
    """What the attackers write outside their runs, with this session's TOKEN in its name."""
    home = Path(os.path.expanduser("~"))
    places = [SITE_PACKAGES, Path("/tmp"), home, grade.LIBRARY, grade.LIBRARY / "checks"]
    return [p for folder in places if folder.is_dir() for p in folder.glob(f"*grading*battery*{TOKEN}*")]


@pytest.fixture(scope="module")
def cleanup():
    """After the module: the attackers' marked processes ended, their marked files removed, a changed
    sitecustomize.py put back."""
    sitecustomize = SITE_PACKAGES / "sitecustomize.py"
    before = sitecustomize.read_bytes() if sitecustomize.exists() else None
    yield
    for pid, marked in sleeping().items():
        if marked:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for path in stray_files():
        path.unlink(missing_ok=True)
    now = sitecustomize.read_bytes() if sitecustomize.exists() else None
    if now != before:
        if before is None:
            sitecustomize.unlink()
        else:
            sitecustomize.write_bytes(before)


@pytest.fixture(scope="module")
def battery(tmp_path_factory, cleanup):
    """The honest submissions (the second only where there is no bwrap: else it is `cross`'s victim) and
    the cheats of cheat_1..cheat_3, graded at the grader's own level, two at a time."""
    folder = tmp_path_factory.mktemp("battery")
    paths_ = [submission(folder, "honest_a", HONEST_SOURCES["honest_a"])]
    if not BWRAP:
        paths_.append(submission(folder, "honest_b", HONEST_SOURCES["honest_b"]))
    students = sorted({c.student for c in CHEATS} - {FALLBACK_STUDENT})
    paths_ += [submission(folder, s, cheat_sources(s)) for s in students]
    return rows(grade.grade(paths_, jobs=2))


@pytest.fixture(scope="module")
def cross(tmp_path_factory, cleanup):
    """The attacker, then its victim (honest_b), in one call, one after the other; and what the machine
    looked like before and after."""
    if not BWRAP:
        pytest.skip("bubblewrap is not usable here: a run is not isolated from the next")
    folder = tmp_path_factory.mktemp("cross")
    data = Path(os.environ.get("COURSE_DATA_DIR") or paths.course_path("data"))  # as grade.run_nbval finds it
    watched = [data / name for name in DATA_FILES] + [grade.LIBRARY / "tokenization.py"]

    def state():
        return {
            "files": {str(p): p.read_bytes() if p.exists() else None for p in watched},
            # others may be editing course_lib/checks meanwhile: that it is still there is all that is compared
            "nb01.py": (grade.LIBRARY / "checks" / "nb01.py").exists(),
            "startup": sorted(p.name for p in SITE_PACKAGES.iterdir() if p.suffix == ".pth" or "customize" in p.name),
            "stray": stray_files(),
        }

    attacker = submission(folder, "attacker", {"1.1": ATTACKER_11.replace("@TOKEN@", TOKEN), "1.2": CORRECT_12})
    victim = submission(folder, "honest_b", HONEST_SOURCES["honest_b"])
    before, sleepers = state(), sleeping()
    graded = grade.grade([attacker, victim], jobs=1)
    return {
        "rows": rows(graded),
        "before": before,
        "after": state(),
        "new sleepers": new_sleepers(sleepers),
    }


@pytest.fixture(scope="module")
def fallback(tmp_path_factory, cleanup):
    """cheat_4 (its 1.1 cell also leaving a .pth file and a process behind) graded at the 'process' level.
    The snapshot the grader takes there leaves out course_lib and solutions/: others may edit them while this
    runs, and the grader would 'undo' their edits; the venv, where the .pth file goes, stays in."""
    folder = tmp_path_factory.mktemp("fallback")
    sources = cheat_sources(FALLBACK_STUDENT)
    sources["1.1"] += PROCESS_ATTACK.replace("@TOKEN@", TOKEN)
    path = submission(folder, FALLBACK_STUDENT, sources)
    roots = grade._environment_roots
    own = {grade.LIBRARY, Path(nbs.SOLUTIONS).resolve()}
    sleepers = sleeping()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grade.sandbox, "level", lambda prefer=None: "process")
        mp.setattr(grade, "_environment_roots", lambda: [r for r in roots() if r not in own])
        graded = grade.grade([path], jobs=1)
    return {
        "rows": rows(graded),
        "notes": graded[0].notes,
        "pth": SITE_PACKAGES / f"grading_battery_{TOKEN}.pth",
        "new sleepers": new_sleepers(sleepers),
    }


def graded_rows(student: str, request) -> dict:
    """The rows of `student`, from whichever fixture graded it."""
    if student == FALLBACK_STUDENT:
        return request.getfixturevalue("fallback")["rows"][student]
    if student == "honest_b" and BWRAP:
        return request.getfixturevalue("cross")["rows"][student]
    return request.getfixturevalue("battery")[student]


# --------------------------------------------------------------------------- the tests


def test_each_idiom_is_in_its_cell_and_each_cheat_where_it_says():
    for idiom in HONEST:
        assert idiom.marker in HONEST_SOURCES[idiom.student][idiom.exercise], idiom
    assert len(HONEST) >= 16 and {i.student for i in HONEST} == set(HONEST_SOURCES)
    assert HONEST_A_11.startswith("%%time\n")  # a cell magic must be the first line of its cell
    assert len(CHEATS) >= 8 and len({(c.student, c.exercise) for c in CHEATS}) == len(CHEATS)
    for exercise, line in PASS_LINE.items():
        assert line == grade.pass_line(exercise, *{"1.1": (6, 3), "1.2": (5, 2)}[exercise])
    for cheat in CHEATS:  # the pass lines the cheats print are the real ones
        assert cheat.key not in "fgh" or any(line in cheat.source for line in PASS_LINE.values()), cheat.key
        assert not (cheat.needs_bwrap and cheat.student == FALLBACK_STUDENT), "graded at the 'process' level"
    for _, attempt in ATTACKS:
        assert f'"{attempt}",' in ATTACKER_11, attempt


@pytest.mark.parametrize("idiom", HONEST, ids=[i.name for i in HONEST])
def test_honest_idioms_score_full_marks(idiom, request):
    found = graded_rows(idiom.student, request)
    for exercise, points in POINTS.items():  # the whole submission, each row
        row = found[exercise]
        assert (row.status, row.points, row.max_points) == ("passed", points, points), (
            f"{idiom.student} {exercise}: {row.status} {row.points}/{row.max_points}: {row.message}"
        )
    assert sum(r.points for r in found.values()) == 10


@pytest.mark.parametrize("cheat", CHEATS, ids=[f"{c.key}: {c.name}" for c in CHEATS])
def test_cheats_score_nothing(cheat, request):
    if cheat.needs_bwrap and not BWRAP:
        pytest.skip("at the 'process' level nothing is hidden from a run: this cheat needs the sandbox to fail")
    found = graded_rows(cheat.student, request)
    row = found[cheat.exercise]
    assert row.points == 0 and row.status in ("failed", "error"), f"{row.status} {row.points}: {row.message}"
    assert cheat.why in row.message, row.message
    cheats_here = {c.exercise for c in CHEATS if c.student == cheat.student}
    for exercise in set(POINTS) - cheats_here:  # an honest cell beside a cheat still scores
        assert (found[exercise].status, found[exercise].points) == ("passed", POINTS[exercise]), found[exercise]


@needs_bwrap
def test_a_submission_reaches_neither_the_next_one_nor_the_machine(cross):
    attacker, victim = cross["rows"]["attacker"], cross["rows"]["honest_b"]
    for exercise, points in POINTS.items():
        assert (victim[exercise].status, victim[exercise].points) == ("passed", points), victim[exercise]
        # the attacker's own code is correct: its attempts failed, or stayed in its sandbox
        assert (attacker[exercise].status, attacker[exercise].points) == ("passed", points), attacker[exercise]
    before, after = cross["before"], cross["after"]
    assert after["startup"] == before["startup"], "a new .pth or sitecustomize.py in site-packages"
    for path, content in before["files"].items():
        assert after["files"][path] == content, f"{path} changed"
    assert after["nb01.py"] and before["nb01.py"], "course_lib/checks/nb01.py is gone"
    assert after["stray"] == [], after["stray"]
    assert cross["new sleepers"] == {}, f"sleep 300 still running: {cross['new sleepers']}"


def test_the_process_level_notes_and_undoes_an_attack(fallback):
    notes = "\n".join(fallback["notes"])
    pth = str(fallback["pth"])
    assert not fallback["pth"].exists(), "the .pth file is still there"
    changed = [n for n in fallback["notes"] if n.startswith("the run changed the Python environment")]
    assert changed and pth in changed[0] and changed[0].endswith("(undone)"), notes
    ended = [n for n in fallback["notes"] if n.startswith("a process the run started was still running")]
    assert any("sleep 300" in n for n in ended), notes
    assert fallback["new sleepers"] == {}, f"sleep 300 still running: {fallback['new sleepers']}"


# Here, not in tests/test_grade.py: it writes into site-packages, which `fallback`'s process-level run watches
# and restores. In another file, on the other pytest worker, that run once removed this test's folder while
# this test's own run was going on (2026-12-08, when `make test` began to keep conftest.py's file order).
def test_an_installed_course_lib_is_hidden_from_the_run_but_not_the_packages_beside_it(monkeypatch):
    """Installed from a wheel, course_lib sits in site-packages: the run must not see it, and still import torch."""
    if not BWRAP:
        pytest.skip("needs bubblewrap: at the process level the course's files are readable")
    installed = SITE_PACKAGES / f"course_lib_installed_{os.getpid()}"
    installed.mkdir()
    (installed / "tokenization.py").write_text("SECRET = 1\n")
    library = grade.library_files()
    try:
        monkeypatch.setattr(paths, "in_checkout", lambda: False)
        monkeypatch.setattr(grade, "LIBRARY", installed)
        secret = str(installed / "tokenization.py")
        cell = f"import pathlib, torch, transformers\nassert not pathlib.Path({secret!r}).exists()"
        run = grade.run_nbval(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), 60, library, notebook="01"
        )
        assert (installed / "tokenization.py").exists(), "still there after the run: the run did not see it"
    finally:
        shutil.rmtree(installed, ignore_errors=True)
    assert run.outcomes == {0: ("passed", "")}, run.outcomes
