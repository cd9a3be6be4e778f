"""torch.cuda as a machine with one GPU would answer it, for the precision tests on a machine without one.
Nothing runs on the fake GPU: the tests ask which precision a `torch.device("cuda")` gets, never move a tensor."""

import torch

T4 = "Tesla T4"  # Colab's free GPU: no bf16 units (it emulates bf16, slowly)
A100 = "NVIDIA A100-SXM4-40GB"  # bf16 units


def fake_gpu(monkeypatch, name: str = T4, native_bf16: bool = False) -> None:
    """One CUDA GPU called `name`. Like torch >= 2.3, `is_bf16_supported()` counts emulation unless asked not
    to: on a T4 it answers True, and False only with including_emulation=False."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16 or including_emulation
    )
