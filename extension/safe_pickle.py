"""PyTorch pickles (``.pt``, ``.ckpt``, ``.optim``): read without running code, written so AUTOMATIC1111 opens them.

Reading goes through ``torch.load(weights_only=True)``, which builds nothing but plain containers and tensors
and refuses any other global without calling it. Before that, the zip directory of a zip-format file is
checked, so that a member which claims to be huge (a zip bomb) is refused without being inflated.

Writing produces a zip that AUTOMATIC1111's ``modules/safe.py`` accepts. It checks every member name of a
zip-format pickle against ``^([^/]+)/((data/\\d+)|version|byteorder|.data/serialization_id|(data\\.pkl))$``
(1.10; 1.8 and older accept only ``data/N``, ``version`` and ``data.pkl``), while current torch also writes
``.format_version``, ``.storage_alignment``, ``byteorder`` and ``.data/serialization_id``: a file saved with
plain ``torch.save`` is refused there as "possibly malicious". :func:`dumps` writes only ``data.pkl``,
``data/N`` and ``version`` (what torch wrote in the 1.x days, and what every torch still reads), uncompressed,
each record aligned to 64 bytes as torch aligns them.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch

from .fileio import atomic_write_bytes

ARCHIVE = "archive"
ALIGNMENT = 64
_KEEP = ("data.pkl", "version")          # besides data/N
_PAD_EXTRA_ID = b"FB"                     # the extra-field id torch itself uses for alignment padding
# A member may unpack to at most this many times its stored size unless it is stored (torch never compresses).
MAX_COMPRESSION_RATIO = 20


class PickleRefused(Exception):
    """The pickle asks to build objects other than plain containers and tensors (it could run code)."""


class PickleUnreadable(Exception):
    """Not a readable PyTorch file: truncated, corrupt, or too large to unpack safely."""


# -- reading ---------------------------------------------------------------------------------------------------
def check_zip_directory(source, *, max_unpacked: int | None = None) -> None:
    """Refuse a zip-format pickle whose directory promises more than it should, before anything is inflated.

    Args:
        source: bytes or a path.
        max_unpacked: the most bytes all members together may unpack to (None: no overall limit).

    Raises:
        PickleUnreadable: a compressed member that would expand more than :data:`MAX_COMPRESSION_RATIO`
            times, or members larger than ``max_unpacked`` in all. Files that are not zips pass unchecked.
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    try:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
            return  # legacy (non-zip) pickles, or not a zip at all: torch.load says what it is
        with archive:
            total = 0
            for info in archive.infolist():
                total += info.file_size
                if info.compress_type != zipfile.ZIP_STORED and \
                        info.file_size > max(1 << 20, MAX_COMPRESSION_RATIO * info.compress_size):
                    raise PickleUnreadable(
                        f"member {info.filename!r} would unpack from {info.compress_size:,} to {info.file_size:,} "
                        "bytes (a zip bomb?); PyTorch never compresses its files, so it was not unpacked")
            if max_unpacked is not None and total > max_unpacked:
                raise PickleUnreadable(f"its members would unpack to {total:,} bytes, more than the "
                                       f"{max_unpacked:,} allowed for this kind of file; nothing was unpacked")
    finally:
        handle.close()


def load(source, *, allowed_globals: Iterable = (), max_unpacked: int | None = None) -> Any:
    """Unpickle a PyTorch file into plain containers and CPU tensors, running no code from it.

    Args:
        source: the file's bytes, or its path.
        allowed_globals: ``(object, "module.name")`` pairs the pickle may name besides tensors, for inert
            stand-ins (checkpoints carry a few training-metadata globals).
        max_unpacked: see :func:`check_zip_directory`.

    Raises:
        PickleRefused: the pickle names a global that is not allowed (nothing in it was executed).
        PickleUnreadable: anything else that stops it loading.
    """
    check_zip_directory(source, max_unpacked=max_unpacked)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source)
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = foreign_globals(source)
        if names is None:
            raise PickleUnreadable("the file is truncated or corrupt (its pickle cannot be read)") from exc
        if names:
            raise PickleRefused(f"refused to load: the file's pickle asks to build {', '.join(names[:5])}, not "
                                "plain containers and tensors (it could run code); nothing in it was executed") \
                from exc
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Unsupported")), "an unsupported instruction")
        raise PickleUnreadable(f"not a readable PyTorch file: its pickle uses what the safe loader does not read "
                               f"({detail[:200]}); PyTorch's own files never do") from exc
    except (EOFError, zipfile.BadZipFile, struct.error) as exc:
        raise PickleUnreadable(f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    except (RuntimeError, ValueError, OSError, MemoryError) as exc:
        raise PickleUnreadable(f"the file is truncated or corrupt ({str(exc)[:300]})") from exc
    except Exception as exc:  # any other failure of a malformed file is still the file's fault
        raise PickleUnreadable(f"not a readable PyTorch file ({type(exc).__name__}: {str(exc)[:300]})") from exc


_SAFE_MODULES = ("torch", "collections", "_codecs", "numpy")
_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING")


def foreign_globals(source) -> list[str] | None:
    """The globals a pickle names outside torch and plain containers (what would run code), read with
    ``pickletools`` without executing anything; None when the pickle cannot be parsed at all.

    Zip-format files are read member ``*/data.pkl``; other files as a sequence of pickles (the legacy format).
    """
    import pickletools

    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            info = archive.getinfo(member) if member else None
            if info is None or info.file_size > (64 << 20):
                return None
            data = archive.read(member)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        pass
    found: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in _STRING_OPS:
                    strings.append(str(arg))
                elif opcode.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - any parse failure means "not a readable pickle"
        if not found:
            return None
    return [name for name in dict.fromkeys(found) if name.split(".", 1)[0] not in _SAFE_MODULES]


# -- writing ---------------------------------------------------------------------------------------------------
def _padding(offset: int, name: str) -> bytes:
    """An extra field that puts the data of a local entry at ``offset`` on a multiple of :data:`ALIGNMENT`."""
    start = offset + 30 + len(name.encode())
    pad = (-start) % ALIGNMENT
    if pad == 0:
        return b""
    if pad < 4:  # an extra field needs its 4-byte header
        pad += ALIGNMENT
    return _PAD_EXTRA_ID + struct.pack("<H", pad - 4) + b"\0" * (pad - 4)


def dumps(obj: Any) -> bytes:
    """``torch.save`` of ``obj``, keeping only the records AUTOMATIC1111 1.8 and 1.10 accept.

    Args:
        obj: plain containers (dict, list, tuple), numbers, strings, None and tensors.

    Returns:
        The bytes of a zip-format PyTorch file with members ``archive/data.pkl``, ``archive/data/N`` and
        ``archive/version`` only; ``torch.load`` (with or without ``weights_only``) reads it.
    """
    raw = io.BytesIO()
    torch.save(obj, raw)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as source, \
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            record = info.filename.split("/", 1)[1]
            if record not in _KEEP and not (record.startswith("data/") and record[5:].isdigit()):
                continue
            name = f"{ARCHIVE}/{record}"
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_STORED
            entry.extra = _padding(out.tell(), name)
            target.writestr(entry, source.read(info.filename))
    return out.getvalue()


def save(obj: Any, path) -> Path:
    """Write ``obj`` to ``path`` as :func:`dumps` makes it, atomically (see :func:`extension.fileio.atomic_write`)."""
    return atomic_write_bytes(os.fspath(path), dumps(obj))
