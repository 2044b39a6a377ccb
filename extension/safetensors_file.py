"""``.safetensors`` files read from an open handle, their header checked before any tensor is allocated.

The header is at most ``max_header`` bytes (a gigantic one is refused by its length field alone), strict
UTF-8 JSON, an object whose entries each have a known dtype, a shape of non-negative integers and
``data_offsets`` that span exactly ``shape x itemsize`` bytes, inside the file, overlapping no other entry.
Tensors are then read with ``readinto`` into buffers of exactly those sizes: reading a file allocates at most
the bytes it holds. Nothing is memory-mapped, so a file cut short while it is read is an error, not a crash.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import BinaryIO, Iterable

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}


class SafetensorsError(ValueError):
    """A ``.safetensors`` file that is truncated, corrupt or lies about its sizes (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # offsets in the file (the data offsets plus the header)
    end: int


@dataclasses.dataclass(frozen=True)
class Header:
    entries: dict[str, Entry]
    metadata: dict[str, str]
    size: int  # of the file


def _file_size(handle: BinaryIO) -> int:
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError):
        here = handle.tell()
        size = handle.seek(0, os.SEEK_END)
        handle.seek(here)
        return size


def read_header(handle: BinaryIO, max_header: int) -> Header:
    """The checked header of the ``.safetensors`` file open as ``handle`` (see the module docstring).

    Raises:
        SafetensorsError: naming what is wrong.
    """
    size = _file_size(handle)
    handle.seek(0)
    head = handle.read(8)
    if len(head) < 8:
        raise SafetensorsError("the file is truncated (it has no safetensors header)" if head else "the file is empty")
    (length,) = struct.unpack("<Q", head)
    if length > size - 8:
        raise SafetensorsError(f"the file is truncated or not a safetensors file (its header length field says "
                               f"{length:,} bytes, the file holds {size:,})")
    if length > max_header:
        raise SafetensorsError(f"its header is {length:,} bytes, more than the {max_header:,} any real file of this "
                               "kind needs; it was not read")
    raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SafetensorsError(f"corrupt safetensors header (not UTF-8 JSON: {str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise SafetensorsError("corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError("corrupt safetensors header (__metadata__ is not a map of strings)")
    start = 8 + length
    entries: dict[str, Entry] = {}
    for name, entry in header.items():
        entries[name] = _entry(name, entry, start, size)
    spans = sorted((e.begin, e.end, n) for n, e in entries.items() if e.end > e.begin)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise SafetensorsError(f"corrupt safetensors header (tensors {first!r} and {second!r} overlap)")
    return Header(entries, metadata, size)


def _entry(name: str, entry, start: int, size: int) -> Entry:
    if not isinstance(entry, dict):
        raise SafetensorsError(f"corrupt safetensors header (entry {name!r} is not an object)")
    dtype = DTYPES.get(entry.get("dtype"))
    if dtype is None:
        raise SafetensorsError(f"corrupt safetensors header (tensor {name!r} has an unknown dtype "
                               f"{str(entry.get('dtype'))[:20]!r})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 64:
        raise SafetensorsError(f"corrupt safetensors header (tensor {name!r} has an invalid shape)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int and o >= 0 for o in offsets) \
            or offsets[0] > offsets[1]:
        raise SafetensorsError(f"corrupt safetensors header (tensor {name!r} has invalid data_offsets)")
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if offsets[1] - offsets[0] != nbytes:
        raise SafetensorsError(f"corrupt safetensors header (tensor {name!r} of shape {tuple(shape)} needs "
                               f"{nbytes:,} bytes, its offsets span {offsets[1] - offsets[0]:,})")
    if start + offsets[1] > size:
        raise SafetensorsError(f"the file is truncated or corrupt ({size:,} bytes; tensor {name!r} ends at "
                               f"{start + offsets[1]:,})")
    return Entry(dtype, tuple(shape), start + offsets[0], start + offsets[1])


def read_tensors(handle: BinaryIO, header: Header, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors ``names`` (default: all) of a checked header, read from ``handle`` into new CPU tensors."""
    out = {}
    for name in (header.entries if names is None else names):
        entry = header.entries[name]
        buffer = torch.empty(entry.end - entry.begin, dtype=torch.uint8)
        handle.seek(entry.begin)
        if buffer.numel() and handle.readinto(buffer.numpy()) != buffer.numel():
            raise SafetensorsError(f"the file is truncated or corrupt (tensor {name!r} could not be read whole)")
        out[name] = buffer.view(entry.dtype).reshape(entry.shape) if buffer.numel() else \
            torch.empty(entry.shape, dtype=entry.dtype)
    return out
