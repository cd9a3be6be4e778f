"""Where models and batches go, and in which precision they train there.

`get_device()` is the GPU when there is one, else the CPU; `COURSE_DEVICE` (cpu, cuda, cuda:1, mps) or
the `name` argument overrides it. Training and evaluation then follow the model: `training.train_step`
and `training.evaluate` move each batch to the device of the model's weights.

`resolve_precision(precision, device, hidden_size=)` turns a config's precision into the one a run trains in
there: "auto" is `auto_precision(device, hidden_size=)`, chosen from what the hardware reports and, on a CPU
with AMX, the model's size: bf16 on a GPU with bf16 units, fp16 with loss scaling on a GPU without them
(Colab's free T4, a V100: they only emulate bf16, slowly), bf16 on a CPU with AMX matrix units for a model of
hidden size 256 or more, fp32 for smaller models there and on any other CPU. bf16 asked for on a GPU without
bf16 units becomes fp16.

Why, on a CPU (measured with the course's training step, two threads, fp32 and bf16 autocast interleaved in
one process: `benchmarks/precision.py`, results in `benchmarks/results/`):
* without AMX, bf16 is slower: with AVX512-BF16 alone a step of the 256 x 4 speed model took 0.86 s against
  fp32's 0.65 s (`speed_cpu_avx512bf16.json`); with no bf16 instructions it was 12.9x slower (issue 24);
* with AMX it depends on the size (two runs, `precision_cpu_amx.json` and `_2.json`): bf16 was 0.51-0.52x
  fp32's speed for the demo's 128 x 1 model, 0.86-0.87x for notebook 04's and 0.51-1.00x at hidden 128-192,
  but 1.01-1.37x at hidden 256 (the more tokens per batch, the more) and 1.17-2.21x at 384-512: at hidden
  128 the matrices are too small for the tiles to repay the casts autocast adds.
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


def cpu_bf16_units() -> dict:
    """What torch reports about this CPU's bf16 hardware: {"amx": AMX tiles (bf16 matrix units),
    "avx512_bf16": bf16 dot-product instructions}. False where torch cannot tell."""

    def ask(name):
        try:
            return bool(getattr(torch.cpu, name)())
        except Exception:  # a torch without the check, or a CPU it cannot query
            return False

    return {"amx": ask("_is_amx_tile_supported"), "avx512_bf16": ask("_is_avx512_bf16_supported")}


def bf16_supported(device) -> bool:
    """Whether `device` computes in bf16 natively, fast enough to train in. A CUDA GPU: from Ampere on (A100,
    RTX 30xx, L4, H100); emulation does not count (a T4 or a V100 runs bf16 through fp32 units, much slower
    than fp16). A CPU: with AMX (`cpu_bf16_units`); AVX512-BF16 alone measured slower than fp32 (module
    docstring; with AMX, bf16 pays only for large enough models: `auto_precision`). Other devices (mps): yes,
    as autocast runs bf16 there."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_bf16_units()["amx"]
    if device.type != "cuda":
        return True
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the argument, which counted native bf16 only
        return bool(torch.cuda.is_bf16_supported())


def half_precision(device) -> str:
    """The 16-bit format to train in on `device`: "fp16" (with loss scaling) on a CUDA GPU without bf16 units,
    else "bf16" (the only 16-bit format a CPU trains in; whether it pays there is `auto_precision`'s question)."""
    device = torch.device(device)
    return "fp16" if device.type == "cuda" and not bf16_supported(device) else "bf16"


AMX_BF16_MIN_HIDDEN = 256  # the smallest hidden size at which bf16 measured faster than fp32 on an AMX CPU


def auto_precision(device, hidden_size: int | None = None) -> tuple[str, str]:
    """(precision, why): what "auto" trains in on `device`, and the reason in words, from what the hardware
    reports. A CUDA GPU: bf16 with bf16 units, else fp16 with loss scaling. A CPU: bf16 with AMX when the
    model's `hidden_size` is at least AMX_BF16_MIN_HIDDEN (unknown: fp32), else fp32. Other devices: fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if bf16_supported(device):
            return "bf16", f"{name} has bf16 units"
        return "fp16", f"{name} has no bf16 units (it would emulate bf16, slowly); fp16 needs loss scaling"
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units["amx"]:
            measured = "bf16 measured 0.51-1.00x the speed of fp32 at hidden 128-192 on such a CPU, 1.01-1.37x at 256"
            if hidden_size is not None and hidden_size >= AMX_BF16_MIN_HIDDEN:
                return (
                    "bf16",
                    f"this CPU has AMX bf16 matrix units (as torch reports), and hidden size {hidden_size}: {measured}",
                )
            size = f"hidden size {hidden_size}" if hidden_size is not None else "no model size given"
            return "fp32", f"this CPU has AMX bf16 matrix units (as torch reports), but {size}: {measured}"
        if units["avx512_bf16"]:
            return "fp32", (
                "this CPU has AVX512-BF16 but no AMX (as torch reports); bf16 measured 0.76x the speed of fp32 "
                "on such a CPU"
            )
        return "fp32", "this CPU has no bf16 units: no AMX, no AVX512-BF16 (as torch reports)"
    return "fp32", f"the course trains in fp32 on {device.type}"


def resolve_precision(precision: str, device, hidden_size: int | None = None) -> str:
    """The precision a run that asks for `precision` trains in on `device`: "fp32", "bf16" or "fp16".

    "auto": `auto_precision(device, hidden_size)` (bf16 or fp16 on a GPU; on a CPU with AMX bf16 for a model of
    hidden size 256 or more, else fp32; fp32 on other CPUs).
    "bf16" on a CUDA GPU without native bf16: "fp16", with loss scaling (`precision_notice` says so); on a
    CPU it stays bf16, as asked, even where it is slow.
    "fp16" anywhere but on a CUDA GPU: DeviceError, as its loss scaler is CUDA-only. Anything else: as asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return auto_precision(device, hidden_size)[0]
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(
            f"precision='fp16' needs a CUDA GPU (its loss scaler is CUDA-only), and this device is "
            f"{device.type}: use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cuda" and not bf16_supported(device):
        return "fp16"
    return precision


def precision_notice(requested: str, resolved: str, device, hidden_size: int | None = None) -> str:
    """The line to log when a run trains in another precision than it asked for ("" when it is the same), e.g.
    "train.precision=bf16: Tesla T4 has no bf16; training in fp16 with loss scaling"."""
    if requested == resolved:
        return ""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"the {device.type.upper()}"
    if resolved == "fp16" and not bf16_supported(device):
        return f"train.precision={requested}: {name} has no bf16; training in fp16 with loss scaling"
    why = f" ({auto_precision(device, hidden_size)[1]})" if requested == "auto" else ""
    return f"train.precision={requested}: training in {resolved} on {name}{why}"
