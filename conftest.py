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
# what notebooks write (tokenizers, checkpoints) goes to a scratch folder, not into the repo
os.environ.setdefault("COURSE_WORK_DIR", tempfile.mkdtemp(prefix="course-work-"))
# under pytest-xdist (`-n 2`), each worker and the kernels it starts get one math thread, so that two
# workers on two cores do not fight over them
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
