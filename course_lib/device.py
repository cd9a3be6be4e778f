"""Where models and batches go: one function, used by every notebook and command line.

`get_device()` is the GPU when there is one, else the CPU; `COURSE_DEVICE` (cpu, cuda, cuda:1, mps) or
the `name` argument overrides it. Training and evaluation then follow the model: `training.train_step`
and `training.evaluate` move each batch to the device of the model's weights.
"""

from __future__ import annotations

import os

import torch


class DeviceError(ValueError):
    """A device name that is not one, or a device this machine does not have; the message names it."""


def get_device(name: str | None = None) -> torch.device:
    """The device to train on: `name`, else $COURSE_DEVICE, else "auto" (cuda if available, else cpu)."""
    name = name or os.environ.get("COURSE_DEVICE") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"device {name!r} (COURSE_DEVICE or a config's device) is not a device: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise DeviceError(f"device {name!r} asks for a CUDA GPU, but torch sees none ({build}); use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"device {name!r} asks for Apple's MPS, which this machine or torch does not have; use auto or cpu"
        )
    return device
