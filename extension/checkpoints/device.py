"""Where models run and in what precision: ``--device`` and ``--precision``, decided once for the whole project.

CUDA when present, in fp16; otherwise the CPU in fp32. Used by checkpoint loading, generation and training.
"""
from __future__ import annotations

import re

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(arg: str | torch.device | None = None) -> torch.device:
    """``--device``: ``auto``/None picks CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    Args:
        arg: the flag's value, a ``torch.device``, or None.

    Raises:
        ValueError: an unknown device, or one this machine does not have.
    """
    if isinstance(arg, torch.device):
        arg = str(arg)
    value = (arg or "auto").strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu" or re.fullmatch(r"cpu:\d+", value):
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", value):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {arg}: CUDA is not available on this machine (use cpu or auto)")
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {arg}: there are only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(value)
    if value == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {arg}: MPS is not available on this machine")
        return torch.device("mps")
    raise ValueError(f"--device {arg!r}: expected auto, cpu, cuda, cuda:N or mps")


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "full": torch.float32,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(arg: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``--precision``: ``auto``/None is fp16 on CUDA and fp32 elsewhere; ``fp32``, ``fp16``, ``bf16`` force one.

    Args:
        arg: the flag's value (``half``, ``float32``... are accepted too), a ``torch.dtype``, or None.
        device: the device the models run on (decides ``auto``).

    Raises:
        ValueError: an unknown precision.
    """
    if isinstance(arg, torch.dtype):
        if arg not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"--precision {arg}: expected one of {', '.join(PRECISIONS)}")
        return arg
    value = (arg or "auto").strip().lower()
    if value == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if value not in _DTYPES:
        raise ValueError(f"--precision {arg!r}: expected one of {', '.join(PRECISIONS)}")
    return _DTYPES[value]
