"""Third-party output the course silences, in one place: transformers' load reports and progress bars,
and DeepSpeed's start-up chatter.

Support layer: imports nothing from the course.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings


def no_progress_bars() -> None:
    """No transformers progress bars ("Writing model shards", "Loading weights") between our lines."""
    from transformers.utils import logging as hf_logging  # here: transformers takes seconds to import

    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def transformers_quiet():
    """Silence transformers' warnings and progress bars inside the block (its load report lists every
    MISSING key when a head is new), and restore them after."""
    from transformers.utils import logging as hf_logging  # here: transformers takes seconds to import

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def import_deepspeed(keep_shm_op: bool = False):
    """`import deepspeed`, quiet: its logger at WARNING, no FutureWarning about torch collectives it calls
    by their old names, and none of the compiler errors it prints while it probes which C++ ops this
    machine could build. keep_shm_op=False marks its shared-memory collective op unusable (see
    `distributed`)."""
    import deepspeed  # here: DeepSpeed takes seconds to import and only notebook 07 needs it

    if getattr(deepspeed, "_course_quiet", False):
        return deepspeed
    deepspeed.utils.logger.setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore",
        category=FutureWarning,
        message=r".*torch.distributed.(all_gather_into_tensor|reduce_scatter_tensor).*deprecated",
    )
    # the probes' expected failures (no libaio, say) go from the compiler straight to file descriptor 2
    stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        compatible = deepspeed.ops.__compatible_ops__
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)
    if not keep_shm_op:
        compatible["deepspeed_shm_comm"] = False
    deepspeed._course_quiet = True
    return deepspeed
