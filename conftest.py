"""Settings for every pytest run, unit tests and nbval alike (nbval's kernels inherit this environment)."""

import os
import tempfile

# offline, always: nothing in the test suite may reach a model or data hub
os.environ.setdefault("COURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_PROFILE", "ci")
# bitwise-reproducible matrix products across processes: Intel MKL otherwise may round differently with the
# memory alignment of its inputs, which differs from process to process (the resume tests compare losses exactly)
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
# what notebooks write (tokenizers, checkpoints, token stores) goes to a scratch folder, not into the repo; one
# per pytest-xdist worker: a solution notebook and its student copy may run at the same time on two workers,
# and must not rewrite each other's files (notebook 05 memory-maps token files that the other would truncate)
os.environ.setdefault("COURSE_WORK_DIR", tempfile.mkdtemp(prefix="course-work-"))
# under pytest-xdist (`-n 2`), each worker and the kernels it starts get one math thread, so that two
# workers on two cores do not fight over them
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["COURSE_WORK_DIR"] = os.path.join(os.environ["COURSE_WORK_DIR"], os.environ["PYTEST_XDIST_WORKER"])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first, then the notebooks, then the rest, each file's items in their own order:
    with `-n 2 --dist loadfile --no-loadscope-reorder` (make test) the two workers then take the long files
    early and end on short ones, instead of one worker finishing a long notebook while the other waits.
    (Without --no-loadscope-reorder, pytest-xdist hands out files by their number of tests, most first:
    replayed with one run's per-test times of 2026-12-08, that order left one worker 175 s behind the other,
    this one 1 s. The suite keeps both cores busy either way, so the gain is the idle end, not more speed.)"""
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}

    def rank(item):
        path = item.nodeid.split("::")[0]
        return 0 if path in slow_files else 1 if path.endswith(".ipynb") else 2

    items.sort(key=rank)  # a stable sort: the order within a file (a notebook's cells) is kept
