"""The pytest plugin each grading run loads (as `course_grade_progress`, copied into the run): it tells the
grader, through the pipe whose descriptor $COURSE_GRADE_PROGRESS_FD names, when each notebook cell starts
and how it ended, one JSON line each ({"cell": 3, "event": "start"}, {"cell": 3, "event": "end", "outcome":
"failed", "text": ...}). The grader's watchdog ends a run whose cell outlives the time limit, whatever the
cell does with signals or output, and grades from these lines. The variable is removed before the kernel
starts, and the kernel does not inherit the descriptor (Jupyter starts it with close_fds)."""

import json
import os
import re

_FD = os.environ.pop("COURSE_GRADE_PROGRESS_FD", None)
_OUT = os.fdopen(int(_FD), "w", buffering=1) if _FD else None  # line-buffered: each line as it happens


def _cell(nodeid: str) -> int | None:
    found = re.search(r"Cell (\d+)$", nodeid)
    return int(found.group(1)) if found else None


def _say(**record) -> None:
    if _OUT is not None and record["cell"] is not None:
        _OUT.write(json.dumps(record) + "\n")


def pytest_runtest_logstart(nodeid, location):
    _say(cell=_cell(nodeid), event="start")


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _say(cell=_cell(report.nodeid), event="end", outcome=report.outcome, text=report.longreprtext[-20000:])
