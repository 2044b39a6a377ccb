"""PyTorch pickles (``.pt``, ``.ckpt``, ``.optim``): read without running code or unbounded memory, written so
AUTOMATIC1111 opens them.

Reading checks the file before :func:`torch.load` sees it, from one open handle:

- a zip-format file: its directory is read by hand first (at most :attr:`Limits.max_members` entries, 16 MiB
  of directory); every member must be *stored* (PyTorch never compresses, so a compressed member, the stuff of
  zip bombs, is refused without being inflated), lie wholly inside the file, and overlap no other member (so
  the members together never claim more bytes than the file holds); their total is at most
  :attr:`Limits.max_unpacked`;
- its pickle (``data.pkl``, or the pickles at the start of a legacy non-zip file) is at most
  :attr:`Limits.max_pickle_bytes`, and is walked with :mod:`pickletools` (nothing built, nothing run): at
  most :attr:`Limits.max_pickle_ops` opcodes, of which at most :attr:`Limits.max_pickle_objects` build an
  object (a 2 MiB pickle of empty sets would otherwise build 470 MB of them), and no global outside torch's
  and the caller's allowed ones: a pickle naming ``os.system`` is refused before anything unpickles it;
- then ``torch.load(weights_only=True)`` reads it, which builds nothing but plain containers and tensors.

So reading a file allocates at most its tensors' bytes (never more than the file holds, nor
``max_unpacked``) plus what a pickle within the limits builds (measured in ``tests/test_hostile_files.py``).

Writing produces a zip that AUTOMATIC1111's ``modules/safe.py`` accepts. It checks every member name of a
zip-format pickle against ``^([^/]+)/((data/\\d+)|version|byteorder|.data/serialization_id|(data\\.pkl))$``
(1.10; 1.8 and older accept only ``data/N``, ``version`` and ``data.pkl``), while current torch also writes
``.format_version``, ``.storage_alignment``, ``byteorder`` and ``.data/serialization_id``: a file saved with
plain ``torch.save`` is refused there as "possibly malicious". :func:`dumps` writes only ``data.pkl``,
``data/N`` and ``version`` (what torch wrote in the 1.x days, and what every torch still reads), uncompressed,
each record aligned to 64 bytes as torch aligns them.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import torch

from .fileio import atomic_write_bytes

ARCHIVE = "archive"
ALIGNMENT = 64
_KEEP = ("data.pkl", "version")          # besides data/N
_PAD_EXTRA_ID = b"FB"                     # the extra-field id torch itself uses for alignment padding
MAX_ZIP_DIRECTORY = 16 << 20              # bytes of central directory read at most


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one file may make the reader allocate, checked before anything is unpacked."""

    max_unpacked: int | None      # bytes of all members together (None: only what the file holds)
    max_pickle_bytes: int         # the pickle stream (data.pkl, or a legacy file's pickles)
    max_pickle_ops: int           # opcodes in it
    max_pickle_objects: int       # opcodes in it that build an object (containers, calls, memo entries)
    max_members: int              # zip directory entries


# Hypernetworks and ``.optim`` sidecars: a real one has a few dozen tensors (a pickle of a few KB, ~2000
# opcodes) and weighs up to a few hundred MB.
HYPERNETWORK = Limits(max_unpacked=4 << 30, max_pickle_bytes=4 << 20, max_pickle_ops=1 << 18,
                      max_pickle_objects=1 << 16, max_members=1 << 14)
# Checkpoints: up to a few thousand tensors (SDXL with EMA and optimizer states: ~10k, ~200k opcodes).
CHECKPOINT = Limits(max_unpacked=None, max_pickle_bytes=64 << 20, max_pickle_ops=1 << 21,
                    max_pickle_objects=1 << 19, max_members=1 << 16)


class PickleRefused(Exception):
    """The pickle asks to build objects other than plain containers and tensors (it could run code)."""


class PickleUnreadable(Exception):
    """Not a readable PyTorch file: truncated, corrupt, or too large to unpack safely."""


# -- checking before reading ----------------------------------------------------------------------------------
_BUILTINS_ALLOWED = {"builtins.set", "builtins.bytearray", "builtins.complex"}
_ALLOWED_ROOTS = ("torch", "collections", "_codecs")
_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING")
_PUT_OPS = ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE")
_GET_OPS = ("GET", "BINGET", "LONG_BINGET")
# Opcodes that build an object or a memo entry (a few bytes of pickle, up to ~250 bytes of memory each).
_OBJECT_OPS = frozenset({"EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET", "DICT", "LIST", "TUPLE", "TUPLE1", "TUPLE2",
                         "TUPLE3", "FROZENSET", "MARK", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "OBJ", "INST",
                         "BINPERSID", "PERSID", "GLOBAL", "STACK_GLOBAL", "ADDITEMS", *_PUT_OPS})
_LEGACY_PICKLES = 5  # magic number, protocol, system info, the object, the storage keys
_MARK = object()


def _storage_bytes() -> dict[str, int]:
    """Element size of each storage type a pickle may name (``FloatStorage``: 4); others count 1 byte."""
    import warnings

    sizes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage's deprecation
        for cls in torch._storage_classes:
            try:
                sizes[cls.__name__] = cls.dtype.itemsize
            except Exception:  # noqa: BLE001 - the untyped storage has no dtype
                sizes[cls.__name__] = 1
    return sizes


_STORAGE_BYTES = _storage_bytes()


class _Global(str):
    """A global's name on the symbolic stack (a storage type, in a persistent id)."""


def _global_name(module: str, name: str) -> str:
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    return f"{module}.{name}"


def _opcode_table() -> dict[str, tuple]:
    """Per opcode name: (builds an object, items popped below a mark or -1, items popped, items pushed)."""
    table = {}
    for op in pickletools.opcodes:
        before = op.stack_before
        mark = before.index(pickletools.markobject) if pickletools.markobject in before else -1
        table[op.name] = (op.name in _OBJECT_OPS, mark, len(before), len(op.stack_after))
    return table


_OPCODES = _opcode_table()


@dataclasses.dataclass
class _PickleScan:
    """What walking a pickle stream's opcodes found (nothing was built or run)."""

    globals: list[str]
    storages: dict[str, int]  # persistent storage key -> bytes its id claims
    error: str | None         # why the stream is malformed, if it is
    end: int = 0              # where the pickles ended in the stream


def scan_pickle(data: bytes, limits: Limits, *, pickles: int = 1) -> _PickleScan:
    """Walk up to ``pickles`` pickles at the start of ``data`` with :func:`pickletools.genops`, building
    nothing: the globals they name and the storages their persistent ids claim (a small symbolic stack follows
    strings, numbers and tuples through the memo, so that protocol 4's ``STACK_GLOBAL`` is named too), and
    what is malformed.

    Raises:
        PickleUnreadable: more opcodes, or more object-building opcodes, than ``limits`` allow.
    """
    stream = io.BytesIO(data)
    found: list[str] = []
    storages: dict[str, int] = {}
    ops = objects = 0
    max_ops, max_objects = limits.max_pickle_ops, limits.max_pickle_objects
    memo: dict[int, Any] = {}
    table = _OPCODES
    for index in range(pickles):
        if stream.tell() >= len(data):
            return _PickleScan(found, storages, None if index else "the pickle is empty", stream.tell())
        stack: list[Any] = []
        push, pop = stack.append, stack.pop
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                ops += 1
                name = opcode.name
                builds, mark, n_before, n_after = table[name]
                if builds:
                    objects += 1
                    if objects > max_objects:
                        break
                if ops > max_ops:
                    break
                if name in _PUT_OPS:
                    memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else None
                    continue
                value = None
                if name in ("GLOBAL", "INST"):
                    value = _Global(_global_name(*str(arg).split(" ", 1)))
                    found.append(value)
                elif name == "STACK_GLOBAL":
                    module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                    value = _Global(_global_name(module, attr) if isinstance(module, str) and isinstance(attr, str)
                                    else "(a global named by computed strings)")
                    found.append(value)
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3") and len(stack) >= n_before:
                    value = tuple(stack[-n_before:])
                elif name == "BINPERSID" and stack:
                    _storage_claim(stack[-1], storages)
                if mark >= 0:
                    items = []
                    while stack and stack[-1] is not _MARK:
                        items.append(pop())
                    if stack:
                        pop()
                    if name == "TUPLE":
                        value = tuple(reversed(items))
                    if mark:
                        del stack[max(0, len(stack) - mark):]
                elif n_before:
                    del stack[max(0, len(stack) - n_before):]
                if n_after == 1:
                    if arg is not None and value is None and name not in _PUT_OPS:
                        value = memo.get(arg) if name in _GET_OPS else arg
                    push(_MARK if name == "MARK" else value)
                elif n_after:
                    stack.extend([value] * n_after)
            else:
                continue
            raise PickleUnreadable(
                f"its pickle is larger than any real file of this kind (more than {max_ops:,} instructions or "
                f"{max_objects:,} objects: a pickle bomb?); it was not unpickled")
        except ValueError as exc:  # an unknown opcode, a short argument, no STOP
            return _PickleScan(found, storages, str(exc)[:200], stream.tell())
    return _PickleScan(found, storages, None, stream.tell())


def _storage_claim(pid, storages: dict[str, int]) -> None:
    """Record the bytes a persistent id ``('storage', type, key, location, numel, ...)`` claims."""
    if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
        kind = str(pid[1]).rsplit(".", 1)[-1]
        storages[str(pid[2])] = max(0, pid[4]) * _STORAGE_BYTES.get(kind, 1)


def foreign(names: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """The names among ``names`` that torch's safe loader would refuse (neither torch's nor ``allowed``)."""
    allowed = set(allowed)
    return [name for name in dict.fromkeys(names)
            if name not in allowed and name not in _BUILTINS_ALLOWED and name.split(".", 1)[0] not in _ALLOWED_ROOTS]


def _file_size(handle: BinaryIO) -> int:
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        here = handle.tell()
        size = handle.seek(0, os.SEEK_END)
        handle.seek(here)
        return size


def _zip_directory(handle: BinaryIO, size: int, limits: Limits) -> tuple[int, int, int] | None:
    """``(entries, directory size, directory offset)`` from the end records, or None for a file with none."""
    tail_len = min(size, 22 + 0xFFFF)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0 and pos + 22 > len(tail):
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    if pos < 0:
        return None
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<IHHHHIIH", tail[pos:pos + 22])
    at = size - tail_len + pos
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        if at < 20:
            raise PickleUnreadable("the file is truncated or corrupt (its zip64 directory locator is missing)")
        handle.seek(at - 20)
        sig, _, record_at, _ = struct.unpack("<IIQI", handle.read(20))
        if sig != 0x07064B50 or record_at + 56 > size:
            raise PickleUnreadable("the file is truncated or corrupt (its zip64 directory locator is invalid)")
        handle.seek(record_at)
        record = handle.read(56)
        sig, _, _, _, _, _, _, entries, cd_size, cd_offset = struct.unpack("<IQHHIIQQQQ", record)
        if sig != 0x06064B50:
            raise PickleUnreadable("the file is truncated or corrupt (its zip64 directory record is invalid)")
    if entries > limits.max_members:
        raise PickleUnreadable(f"its zip directory lists {entries:,} members, more than the {limits.max_members:,} "
                               "any real file of this kind has; nothing was unpacked")
    if cd_size > MAX_ZIP_DIRECTORY or cd_offset + cd_size > size:
        raise PickleUnreadable(f"the file is truncated or corrupt (its zip directory claims {cd_size:,} bytes at "
                               f"offset {cd_offset:,} in a file of {size:,})")
    return entries, cd_size, cd_offset


def _check_zip(handle: BinaryIO, size: int, limits: Limits) -> tuple[bytes, dict[str, int]]:
    """Check a zip-format file's directory against the file and ``limits``; return its ``data.pkl`` and the
    size of each storage record (``{key: bytes}``)."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError) as exc:
        raise PickleUnreadable(f"the file is truncated or corrupt (its zip directory cannot be read: {exc})") \
            from exc
    infos = archive.infolist()
    if not infos:
        raise PickleUnreadable("the file is an empty zip archive, not a PyTorch file")
    names: set[str] = set()
    spans = []
    total = 0
    for info in infos:
        if info.filename in names:
            raise PickleUnreadable(f"its zip directory lists {info.filename!r} twice (a PyTorch file never does)")
        names.add(info.filename)
        if info.compress_type != zipfile.ZIP_STORED:
            raise PickleUnreadable(
                f"member {info.filename!r} is compressed ({info.compress_size:,} bytes that would unpack to "
                f"{info.file_size:,}: a zip bomb?); PyTorch never compresses its files, so it was not unpacked")
        handle.seek(info.header_offset)
        local = handle.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise PickleUnreadable(f"the file is truncated or corrupt (member {info.filename!r} has no local header)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        end = start + info.file_size
        if info.compress_size != info.file_size or end > size:
            raise PickleUnreadable(
                f"member {info.filename!r} claims {info.file_size:,} bytes at offset {start:,}, but the file holds "
                f"{size:,} (truncated, or a zip bomb); nothing was unpacked")
        spans.append((info.header_offset, end, info.filename))
        total += info.file_size
    spans.sort()
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise PickleUnreadable(
                f"members {first!r} and {second!r} overlap (their data is shared, so they would unpack to more than "
                "the file holds: a zip bomb); nothing was unpacked")
    if limits.max_unpacked is not None and total > limits.max_unpacked:
        raise PickleUnreadable(f"its members would unpack to {total:,} bytes, more than the "
                               f"{limits.max_unpacked:,} allowed for this kind of file; nothing was unpacked")
    prefix = infos[0].filename.split("/", 1)[0]
    pickle_info = next((i for i in infos if i.filename == f"{prefix}/data.pkl"), None)
    if pickle_info is None:
        raise PickleUnreadable(f"not a PyTorch file (the zip has no {prefix}/data.pkl)")
    if pickle_info.file_size > limits.max_pickle_bytes:
        raise PickleUnreadable(f"its pickle is {pickle_info.file_size:,} bytes, more than the "
                               f"{limits.max_pickle_bytes:,} any real file of this kind needs; it was not unpickled")
    handle.seek(pickle_info.header_offset)
    local = handle.read(30)
    handle.seek(pickle_info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30])))
    records = {i.filename[len(prefix) + 6:]: i.file_size for i in infos if i.filename.startswith(f"{prefix}/data/")}
    return handle.read(pickle_info.file_size), records


def _pickle_data(handle: BinaryIO, size: int, limits: Limits) -> tuple[str, bytes, int, dict[str, int] | None]:
    """``(kind, the pickle stream, how many pickles it holds, the zip's record sizes)``, the zip directory
    checked (a zip-format file is told as torch tells it: by its first four bytes)."""
    handle.seek(0)
    head = handle.read(4)
    if not head:
        raise PickleUnreadable("the file is empty")
    if head == b"PK\x03\x04":
        if _zip_directory(handle, size, limits) is None:
            raise PickleUnreadable("the file is truncated or corrupt (it begins as a zip archive, but the zip "
                                   "directory at its end is missing: was it cut short?)")
        data, records = _check_zip(handle, size, limits)
        return "zip", data, 1, records
    handle.seek(0)
    return "legacy", handle.read(limits.max_pickle_bytes), _LEGACY_PICKLES, None


def check(handle: BinaryIO, limits: Limits, allowed: Iterable[str] = ()) -> str:
    """Check an open PyTorch file before :func:`torch.load` reads it (see the module docstring).

    Returns:
        ``"zip"`` or ``"legacy"``.

    Raises:
        PickleRefused: its pickle names a global that torch's safe loader and ``allowed`` do not allow.
        PickleUnreadable: truncated, corrupt, or beyond ``limits``.
    """
    size = _file_size(handle)
    kind, data, pickles, records = _pickle_data(handle, size, limits)
    scan = scan_pickle(data, limits, pickles=pickles)
    names = foreign(scan.globals, allowed)
    if names:
        raise PickleRefused(f"refused to load: the file's pickle asks to build {', '.join(names[:5])}, not plain "
                            "containers and tensors (it could run code); nothing in it was executed")
    if scan.error and kind == "legacy" and len(data) >= limits.max_pickle_bytes < size:
        raise PickleUnreadable(f"its pickles are longer than the {limits.max_pickle_bytes:,} bytes any real file of "
                               "this kind needs; it was not unpickled")
    if scan.error:
        raise PickleUnreadable(f"the file is truncated or corrupt (its pickle cannot be read: {scan.error})")
    claimed = sum(scan.storages.values())
    if records is not None:
        for key, nbytes in scan.storages.items():
            if nbytes > records.get(key, 0):
                raise PickleUnreadable(f"its pickle claims {nbytes:,} bytes for tensor data {key!r}, whose record "
                                       f"holds {records.get(key, 0):,} (truncated or corrupt); nothing was unpacked")
    elif claimed > size - scan.end:
        raise PickleUnreadable(f"its pickle claims {claimed:,} bytes of tensor data, the file holds {size:,} "
                               "(truncated or corrupt); nothing was allocated")
    if limits.max_unpacked is not None and claimed > limits.max_unpacked:
        raise PickleUnreadable(f"its tensors would take {claimed:,} bytes, more than the {limits.max_unpacked:,} "
                               "allowed for this kind of file; nothing was unpacked")
    return kind


def _torch_error(exc: Exception) -> PickleUnreadable | PickleRefused:
    """What a failure of ``torch.load`` on a checked file means, in words."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, pickle.UnpicklingError):
        detail = next((line for line in lines if line.startswith("Unsupported")), None)
        if detail and "global" in detail.lower():
            return PickleRefused(f"refused to load: the file's pickle asks for what the safe loader refuses "
                                 f"({detail[:200]}); nothing in it was executed")
        return PickleUnreadable(f"not a readable PyTorch file: its pickle uses what the safe loader does not read "
                                f"({(detail or lines[0] if lines else 'unknown')[:200]}); PyTorch's own files never do")
    text = " ".join(lines)
    if "can't allocate memory" in text or isinstance(exc, MemoryError):
        return PickleUnreadable("the file is corrupt: its pickle claims a tensor larger than memory (a legacy file's "
                                "storage sizes are not in any directory); nothing was kept")
    first = lines[0] if lines else type(exc).__name__
    return PickleUnreadable(f"the file is truncated or corrupt ({first[:300]})")


def load(source, *, allowed_globals: Iterable = (), limits: Limits = HYPERNETWORK, map_location="cpu") -> Any:
    """Unpickle a PyTorch file into plain containers and tensors, running no code from it.

    Args:
        source: the file's bytes, its path, or a binary file open for reading (read from where it is, seekable).
        allowed_globals: ``(object, "module.name")`` pairs the pickle may name besides tensors, for inert
            stand-ins (checkpoints carry a few training-metadata globals).
        limits: what the file may claim (:data:`HYPERNETWORK` or :data:`CHECKPOINT`), checked before it is read.
        map_location: where tensors go; ``"meta"`` reads the pickle alone (shapes and metadata, no tensor data)
            from a zip-format file.

    Raises:
        PickleRefused: the pickle names a global that is not allowed (nothing in it was executed).
        PickleUnreadable: anything else that stops it loading, limits included.
    """
    if isinstance(source, (bytes, bytearray)):
        return _load(io.BytesIO(source), allowed_globals, limits, map_location)
    if hasattr(source, "read"):
        return _load(source, allowed_globals, limits, map_location)
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise PickleUnreadable(f"cannot read the file ({exc.strerror or exc})") from exc
    with handle:
        return _load(handle, allowed_globals, limits, map_location)


def _load(handle: BinaryIO, allowed_globals, limits: Limits, map_location) -> Any:
    allowed_globals = list(allowed_globals)
    try:
        check(handle, limits, [name for _, name in allowed_globals])
    except (OSError, struct.error, EOFError) as exc:
        raise PickleUnreadable(f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    handle.seek(0)
    try:
        with torch.serialization.safe_globals(allowed_globals):
            # torch.serialization.load, not torch.load: AUTOMATIC1111 rebinds torch.load to a wrapper of its own
            # (modules/safe.py) that reads the handle a second time from where its check left it.
            return torch.serialization.load(handle, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a checked file that still fails is the file's fault
        raise _torch_error(exc) from exc


def foreign_globals(source) -> list[str] | None:
    """The globals a pickle (bytes or a path) names that torch's safe loader refuses (what would run code),
    read with :mod:`pickletools` without executing anything; None when the file cannot be parsed at all."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with handle:
        try:
            _, data, pickles, _ = _pickle_data(handle, _file_size(handle), CHECKPOINT)
            scan = scan_pickle(data, CHECKPOINT, pickles=pickles)
        except (PickleUnreadable, OSError, struct.error):
            return None
    names = foreign(scan.globals)
    return names if names or not scan.error else None


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
