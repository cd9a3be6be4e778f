"""Where models and batches go, and in which precision they train there.

`get_device()` is the GPU when there is one, else the CPU; `COURSE_DEVICE` (cpu, cuda, cuda:1, mps) or
the `name` argument overrides it. Training and evaluation then follow the model: `training.train_step`
and `training.evaluate` move each batch to the device of the model's weights.

`resolve_precision(precision, device)` turns a config's precision into the one a run trains in there:
"auto" is fp32 on a CPU and 16 bits on a GPU; bf16 on a GPU without bf16 units (Colab's free T4, a V100)
becomes fp16 with loss scaling (`half_precision`), since such a GPU only emulates bf16, slowly.
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


# --------------------------------------------------------------------------- precision

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def bf16_supported(device) -> bool:
    """Whether `device` computes in bf16 natively. A CPU: yes (torch autocasts bf16 on any CPU). A CUDA GPU:
    from Ampere on (A100, RTX 30xx, L4, H100). Emulation does not count: a T4 or a V100 runs bf16 through
    fp32 units, much slower than fp16. Other devices (mps): yes, as autocast runs bf16 there."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the argument, which counted native bf16 only
        return bool(torch.cuda.is_bf16_supported())


def half_precision(device) -> str:
    """The 16-bit format to train in on `device`: "bf16" where it is native, else "fp16" (with loss scaling)."""
    return "bf16" if bf16_supported(device) else "fp16"


def resolve_precision(precision: str, device) -> str:
    """The precision a run that asks for `precision` trains in on `device`: "fp32", "bf16" or "fp16".

    "auto": fp32 on a CPU (bf16 autocast is slower there without bf16 units), `half_precision` on a GPU.
    "bf16" on a CUDA GPU without native bf16: "fp16", with loss scaling (`precision_notice` says so).
    "fp16" anywhere but on a CUDA GPU: DeviceError, as its loss scaler is CUDA-only. Anything else: as asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return half_precision(device) if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(
            f"precision='fp16' needs a CUDA GPU (its loss scaler is CUDA-only), and this device is "
            f"{device.type}: use bf16 or fp32"
        )
    if precision == "bf16" and not bf16_supported(device):
        return "fp16"
    return precision


def precision_notice(requested: str, resolved: str, device) -> str:
    """The line to log when a run trains in another precision than it asked for ("" when it is the same), e.g.
    "train.precision=bf16: Tesla T4 has no bf16; training in fp16 with loss scaling"."""
    if requested == resolved:
        return ""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"the {device.type.upper()}"
    if resolved == "fp16" and not bf16_supported(device):
        return f"train.precision={requested}: {name} has no bf16; training in fp16 with loss scaling"
    return f"train.precision={requested}: training in {resolved} on {name}"
