"""One seed for every random number generator the course uses.

Support layer: imports nothing from the course.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so a notebook or a run is the same each time."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
