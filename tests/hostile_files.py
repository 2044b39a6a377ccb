"""Hostile files for the models folders, generated on the spot (no hostile bytes are committed).

:func:`write_all` writes every kind into a hypernetworks folder and a checkpoints folder and returns a
manifest: for each file what it is and what must happen to it. The tests (``tests/test_hostile_files.py``)
and the reliability record read the same manifest.

Every payload that would run code creates a marker file in the marker folder (``MARKER_DIR/<kind>``) when it
runs: a test proves that no code ran by finding that folder empty. What must happen (``Hostile.outcome``):

- ``refused``: the file is listed, its card and the API say ``error`` (a regular expression), loading it
  raises that error, nothing in it runs, and it allocates no more than the limits of
  :mod:`extension.safe_pickle`;
- ``hidden``: not listed at all (a link that leaves the folder, a dangling or looping link): never opened;
- ``works``: a clean network under an odd name (shell characters, unicode, dots): listed and usable;
- ``sidecar``: a clean network whose ``.optim`` sidecar is hostile: the network works, the sidecar is ignored.

The bombs are cheap to write: the 8 GiB deflate member is one 1 MiB block of zeros compressed once and
repeated (after a full flush, deflate's output for the same input is the same bytes), 8.5 MB on disk; the
others only claim sizes in a zip directory or a header.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import shlex
import struct
import zipfile
import zlib
from pathlib import Path

import torch

HYPERNETWORKS = "hypernetworks"
CHECKPOINTS = "Stable-diffusion"
OUTSIDE = "outside"
MARKERS = "markers"
SHELL_MARKER = "HOSTILE_SHELL_RAN"  # what a file name's $(touch ...) would create, relative to the cwd
BOMB_SIZE = 8 << 30  # what the deflate bomb inflates to


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One generated file and what must happen to it."""

    folder: str     # HYPERNETWORKS or CHECKPOINTS
    path: str       # relative to that folder (posix)
    kind: str       # short id, unique
    what: str       # what the file is, in words
    outcome: str    # refused | hidden | works | sidecar (see the module docstring)
    error: str = ""  # for "refused": a regular expression the error must match (case-insensitive)

    @property
    def name(self) -> str:
        """The name a listing gives it (the file stem, as AUTOMATIC1111 names hypernetworks)."""
        return os.path.splitext(os.path.basename(self.path))[0]


# -- pickles -------------------------------------------------------------------------------------------------
def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


TUPLE1, TUPLE2, REDUCE, POP, STOP = b"\x85", b"\x86", b"R", b"0", b"."


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payload(technique: str, marker: Path) -> bytes:
    """Pickle opcodes (protocol 2) that run code creating ``marker`` and leave one object on the stack."""
    command = f"touch {shlex.quote(str(marker))}"
    if technique == "os.system":
        return _global("os", "system") + _str(command) + TUPLE1 + REDUCE
    if technique == "posix.system-stack-global":  # protocol 4's STACK_GLOBAL instead of GLOBAL
        return (b"\x8c" + bytes([5]) + b"posix" + b"\x8c" + bytes([6]) + b"system" + b"\x93"
                + _str(command) + TUPLE1 + REDUCE)
    if technique == "builtins.exec":
        return _global("builtins", "exec") + _str(_touch_code(marker)) + TUPLE1 + REDUCE
    if technique == "builtins.eval":
        return _global("builtins", "eval") + _str(_touch_code(marker)) + TUPLE1 + REDUCE
    if technique == "importlib":  # getattr(importlib.import_module("os"), "system")(command)
        return (_global("builtins", "getattr") + _global("importlib", "import_module") + _str("os") + TUPLE1
                + REDUCE + _str("system") + TUPLE2 + REDUCE + _str(command) + TUPLE1 + REDUCE)
    if technique == "subprocess":
        return (_global("subprocess", "check_call") + b"(" + _str("touch") + _str(str(marker)) + b"l"
                + TUPLE1 + REDUCE)
    raise ValueError(technique)


def protocol0_pickle(marker: Path) -> bytes:
    """A text (protocol 0) pickle calling ``os.system`` through INST, as the oldest exploits are written."""
    return (b"(S'" + f"touch {shlex.quote(str(marker))}".encode() + b"'\nios\nsystem\n.")


class FakeStorage:
    """Pickled as torch pickles a storage: ``('storage', torch.FloatStorage, key, 'cpu', numel)``."""

    def __init__(self, key: str, numel: int, storage_type=None, legacy: bool = False):
        self.key, self.numel, self.legacy = key, numel, legacy
        self.storage_type = storage_type or torch.FloatStorage


class FakeTensor:
    """Pickled as ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())``."""

    def __init__(self, storage: FakeStorage, shape: tuple[int, ...]):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        import collections

        stride, acc = [], 1
        for size in reversed(self.shape):
            stride.insert(0, acc)
            acc *= size
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            pid = ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
            return pid + (None,) if obj.legacy else pid
        return None


def torch_pickle(obj) -> bytes:
    """``data.pkl`` as ``torch.save`` writes it (protocol 2), for objects holding :class:`FakeTensor`."""
    out = io.BytesIO()
    _TorchPickler(out, protocol=2).dump(obj)
    return out.getvalue()


def inject(data_pkl: bytes, ops: bytes) -> bytes:
    """``data_pkl`` with ``ops`` run first (their result popped): a working file that also runs code."""
    assert data_pkl[:2] == b"\x80\x02"
    return b"\x80\x02" + ops + POP + data_pkl[2:]


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the first match of the regular expression ``old`` replaced by ``new``."""
    import re

    out, count = re.subn(old, lambda _: new, data, count=1)
    assert count == 1, old
    return out


# -- zip archives --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Member:
    name: str
    data: bytes = b""
    method: int = zipfile.ZIP_STORED
    size: int | None = None        # the uncompressed size the directory claims (default: the truth)
    crc: int | None = None
    offset_of: str | None = None   # point this directory entry at another member's local header (overlap)


def write_zip(members: list[Member]) -> bytes:
    """A zip written by hand, so that its directory can claim anything (zip64 sizes where needed)."""
    out = io.BytesIO()
    offsets: dict[str, int] = {}
    records = []
    for member in members:
        if member.offset_of is not None:
            records.append((member, offsets[member.offset_of], *records[[r[0].name for r in records]
                                                                      .index(member.offset_of)][2:]))
            continue
        name = member.name.encode()
        csize = len(member.data)
        size = len(member.data) if member.size is None else member.size
        crc = (zlib.crc32(member.data) if member.method == zipfile.ZIP_STORED else 0) if member.crc is None \
            else member.crc
        zip64 = size >= 0xFFFFFFFF or csize >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, csize) if zip64 else b""
        offsets[member.name] = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, member.method, 0, 33, crc,
                              0xFFFFFFFF if zip64 else csize, 0xFFFFFFFF if zip64 else size, len(name), len(extra)))
        out.write(name + extra)
        out.write(member.data)
        records.append((member, offsets[member.name], size, csize, crc))
    start = out.tell()
    for member, offset, size, csize, crc in records:
        name = member.name.encode()
        zip64 = size >= 0xFFFFFFFF or csize >= 0xFFFFFFFF or offset >= 0xFFFFFFFF
        extra = struct.pack("<HHQQQ", 1, 24, size, csize, offset) if zip64 else b""
        big = 0xFFFFFFFF
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if zip64 else 20, 0, member.method, 0, 33,
                              crc, big if zip64 else csize, big if zip64 else size, len(name), len(extra), 0, 0, 0,
                              0, big if zip64 else offset))
        out.write(name + extra)
    end = out.tell()
    count = len(records)
    if count >= 0xFFFF:
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, end - start, start))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, end - start, start, 0))
    else:
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, end - start, start, 0))
    return out.getvalue()


def deflate_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, cheaply: one 1 MiB block compressed once and repeated (after
    a full flush deflate starts afresh, so the same input gives the same bytes), then the rest."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(b"\0" * block) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(b"\0" * (size % block)) + compressor.flush()
    return chunk * (size // block) + rest


def png_of_zeros(width: int, height: int) -> bytes:
    """A black RGB PNG of ``width`` x ``height`` written without ever holding its pixels (a decompression bomb:
    a thousand times smaller than what it decodes to)."""
    raw = height * (1 + 3 * width)  # each row: filter byte 0, then the pixels
    adler = ((raw % 65521) << 16) | 1  # adler32 of ``raw`` zero bytes
    data = b"\x78\xda" + deflate_zeros(raw) + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def torch_zip(data_pkl: bytes, records: dict[str, bytes], prefix: str = "archive") -> bytes:
    """A zip-format PyTorch file: ``prefix/data.pkl``, ``prefix/data/KEY`` and ``prefix/version``."""
    members = [Member(f"{prefix}/data.pkl", data_pkl)]
    members += [Member(f"{prefix}/data/{key}", data) for key, data in records.items()]
    members.append(Member(f"{prefix}/version", b"3\n"))
    return write_zip(members)


def legacy_file(pickles: list[bytes], storages: list[tuple[int, bytes]]) -> bytes:
    """A legacy (non-zip) PyTorch file: five pickles in a row, then each storage as ``<q numel`` + bytes."""
    return b"".join(pickles) + b"".join(struct.pack("<q", numel) + data for numel, data in storages)


def legacy_header() -> list[bytes]:
    """The first three pickles of a legacy file (magic number, protocol version, system info)."""
    magic = 0x1950A86A20F9469CFC6C
    info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    return [pickle.dumps(magic, protocol=2), pickle.dumps(1001, protocol=2), pickle.dumps(info, protocol=2)]


# -- safetensors ---------------------------------------------------------------------------------------------
def safetensors_bytes(header: dict, data: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


# -- the clean networks --------------------------------------------------------------------------------------
def clean_network(seed: int = 0):
    """A small network for the demo model's widths (a ``[1, 2, 1]`` ReLU network, seeded)."""
    from extension.demo.architecture import ATTENTION_WIDTHS
    from extension.hypernetwork import Hypernetwork

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = Hypernetwork("clean", enable_sizes=list(ATTENTION_WIDTHS), layer_structure=[1, 2, 1],
                               activation_func="relu", weight_init="XavierNormal")
    return network


def write_clean(path: Path, seed: int = 0) -> Path:
    """A clean hypernetwork file (``.pt`` or ``.safetensors`` by suffix) for the demo model."""
    network = clean_network(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    network.save(path)
    return path


def _split_torch_zip(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pkl = next(archive.read(n) for n in archive.namelist() if n.endswith("/data.pkl"))
        records = {n.split("/data/", 1)[1]: archive.read(n) for n in archive.namelist() if "/data/" in n}
    return pkl, records


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# -- the folders ---------------------------------------------------------------------------------------------
REFUSED_CODE = r"refused to load.*(could run code|asks to build)"
CORRUPT = r"truncated|corrupt|not a readable"
BOMB = r"zip bomb|compressed|unpack|claims|more than"
HEADER = r"header|truncated|corrupt|offset"

TECHNIQUES = {  # payload(technique) -> what it does, in words
    "os.system": "calls os.system",
    "posix.system-stack-global": "calls posix.system, named through protocol 4's STACK_GLOBAL",
    "builtins.exec": "calls builtins.exec",
    "builtins.eval": "calls builtins.eval",
    "importlib": "calls getattr(importlib.import_module('os'), 'system')",
    "subprocess": "calls subprocess.check_call",
}


def _pickle_attacks(folder: Path, suffix: str, clean_pt: bytes, markers: Path, group: str, scope: str,
                    tensors_pkl=None) -> list[Hostile]:
    """Code-running pickles of every technique, written into ``folder`` with ``suffix``."""
    out: list[Hostile] = []
    pkl, records = _split_torch_zip(clean_pt)

    def add(filename, data, kind, what, outcome="refused", error=REFUSED_CODE):
        (folder / filename).write_bytes(data)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, outcome, error))

    for technique, words in TECHNIQUES.items():
        kind = f"reduce-{technique.replace('.', '-')}"
        marker = markers / f"{scope}-{kind}"
        add(f"{kind}{suffix}", torch_zip(inject(pkl, payload(technique, marker)), records), kind,
            f"a working file whose pickle first {words} (a __reduce__), creating a marker file")
    marker = markers / f"{scope}-in-storage"
    add(f"in-storage-type{suffix}", torch_zip(replace_once(pkl, rb"ctorch\nFloatStorage\n",
                                                           payload("os.system", marker)), records),
        "in-storage-type", "a tensor whose storage type (inside the persistent id) is an os.system call")
    marker = markers / f"{scope}-in-rebuild"
    add(f"in-tensor-rebuild{suffix}", torch_zip(replace_once(pkl, rb"ccollections\nOrderedDict\n(q.)?\)R",
                                                             payload("builtins.exec", marker)), records),
        "in-tensor-rebuild", "a tensor whose _rebuild_tensor_v2 arguments (its hooks) hold an exec call")
    marker = markers / f"{scope}-protocol0"
    add(f"protocol0{suffix}", protocol0_pickle(marker), "protocol0",
        "a bare protocol-0 (text) pickle: INST os.system")
    marker = markers / f"{scope}-protocol0-in-zip"
    add(f"protocol0-in-zip{suffix}", torch_zip(protocol0_pickle(marker), records), "protocol0-in-zip",
        "a zip-format file whose data.pkl is a protocol-0 INST os.system")
    marker = markers / f"{scope}-legacy"
    add(f"legacy-reduce{suffix}", legacy_file([b"\x80\x02" + payload("os.system", marker) + STOP]
                                              + legacy_header()[1:], []),
        "legacy-reduce", "a legacy (non-zip) file whose first pickle (the magic number) calls os.system")
    return out


def _zip_attacks(folder: Path, suffix: str, clean_pt: bytes, group: str, scope: str) -> list[Hostile]:
    out: list[Hostile] = []
    pkl, records = _split_torch_zip(clean_pt)
    key = sorted(records)[0]

    def add(filename, data, kind, what, error=BOMB):
        (folder / filename).write_bytes(data)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, "refused", error))

    bomb = deflate_zeros(BOMB_SIZE)
    add(f"zip-bomb{suffix}", write_zip([Member("archive/data.pkl", pkl),
                                        *[Member(f"archive/data/{k}", v) for k, v in records.items() if k != key],
                                        Member(f"archive/data/{key}", bomb, zipfile.ZIP_DEFLATED, size=BOMB_SIZE),
                                        Member("archive/version", b"3\n")]),
        "zip-bomb", f"a deflated member of {BOMB_SIZE >> 30} GiB of zeros in {len(bomb) / 1e6:.1f} MB, "
                    "its directory honest")
    add(f"zip-bomb-lying{suffix}",
        write_zip([Member("archive/data.pkl", pkl),
                   *[Member(f"archive/data/{k}", v) for k, v in records.items() if k != key],
                   Member(f"archive/data/{key}", bomb, zipfile.ZIP_DEFLATED, size=len(records[key])),
                   Member("archive/version", b"3\n")]),
        "zip-bomb-lying", "the same deflated 8 GiB stream, its directory claiming the tensor's true size")
    add(f"zip-bomb-pickle{suffix}",
        write_zip([Member("archive/data.pkl", deflate_zeros(1 << 30), zipfile.ZIP_DEFLATED, size=1 << 30),
                   *[Member(f"archive/data/{k}", v) for k, v in records.items()],
                   Member("archive/version", b"3\n")]),
        "zip-bomb-pickle", "data.pkl itself a deflated member of 1 GiB")
    add(f"stored-overclaim{suffix}",
        write_zip([Member("archive/data.pkl", pkl),
                   *[Member(f"archive/data/{k}", v, size=(BOMB_SIZE if k == key else None))
                     for k, v in records.items()],
                   Member("archive/version", b"3\n")]),
        "stored-overclaim", "a stored (uncompressed) member whose directory entry claims 8 GiB in a small file")
    block = b"\0" * (1 << 20)
    count = 512
    overlap_pkl = torch_pickle({i: FakeTensor(FakeStorage(str(i), len(block) // 4), (len(block) // 4,))
                                for i in range(count)})
    add(f"zip-overlap{suffix}",
        write_zip([Member("archive/data.pkl", overlap_pkl), Member("archive/data/0", block),
                   *[Member(f"archive/data/{i}", offset_of="archive/data/0") for i in range(1, count)],
                   Member("archive/version", b"3\n")]),
        "zip-overlap", f"{count} directory entries sharing one 1 MiB stored member ({count} MiB unpacked "
                       "from 1 MiB)")
    claim = torch_pickle({0: ({"linear.0.weight": FakeTensor(FakeStorage("0", 1 << 31), (1 << 31,))}, {})})
    add(f"numel-overclaim{suffix}", torch_zip(claim, {"0": b"\0" * 16}), "numel-overclaim",
        "a pickle claiming an 8 GiB storage whose record holds 16 bytes", error=r"claims [\d,]+ bytes for tensor")
    add(f"pickle-bomb{suffix}", torch_zip(b"\x80\x02" + b"\x8f" * (2 << 20) + b".", {}), "pickle-bomb",
        "a 2 MiB data.pkl of EMPTY_SET opcodes (470 MB of Python sets if unpickled)", error=r"pickle")
    many = 70000
    add(f"many-members{suffix}",
        write_zip([Member("archive/data.pkl", pkl)] + [Member(f"archive/data/{i}") for i in range(many)]),
        "many-members", f"a zip directory of {many} entries", error=r"members|entries|directory")
    # A legacy file claiming a 16 GiB storage, with 16 bytes of it (its sizes are in no directory).
    huge = FakeStorage("0", 1 << 32, legacy=True)
    obj = torch_pickle({0: ({"linear.0.weight": FakeTensor(huge, (1 << 32,))}, {})})
    add(f"legacy-huge-storage{suffix}",
        legacy_file(legacy_header() + [obj, pickle.dumps(["0"], protocol=2)], [(1 << 32, b"\0" * 16)]),
        "legacy-huge-storage", "a legacy (non-zip) file whose storage claims 16 GiB, holding 16 bytes",
        error=r"claims [\d,]+ bytes of tensor data")
    return out


def _metadata_attacks(folder: Path, clean_pt: bytes, clean_st: bytes, group: str, scope: str) -> list[Hostile]:
    """Clean networks whose metadata is nested or cyclic beyond what any repr, card or JSON can take."""
    out: list[Hostile] = []
    pkl, records = _split_torch_zip(clean_pt)
    assert pkl.endswith(b"u.")  # the top dict's last SETITEMS, still open: a pair added before it joins the dict

    def with_pair(key: str, value_ops: bytes) -> bytes:
        return torch_zip(pkl[:-2] + _str(key) + value_ops + b"u.", records)

    def add(filename, data, kind, what, outcome="refused", error=r"malformed metadata"):
        (folder / filename).write_bytes(data)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, outcome, error if outcome == "refused" else ""))

    depth = 50_000
    add("deep-metadata.pt", with_pair("optional_info", b"]" * depth + b"a" * (depth - 1)), "deep-metadata",
        f"optional_info {depth:,} lists deep (every repr of it raised RecursionError and broke the cards panel)")
    add("cyclic-metadata.pt", with_pair("optional_info", b"]q\x00h\x00a"), "cyclic-metadata",
        "optional_info a list that contains itself: shown as text", outcome="works")
    add("step-list.pt", with_pair("step", b"]" + b"(" + b"K\x01" * 50_000 + b"e"), "step-list",
        "step a list of 50,000 numbers (its repr was the error message)")
    header_len = struct.unpack("<Q", clean_st[:8])[0]
    header = json.loads(clean_st[8:8 + header_len])
    body = clean_st[8 + header_len:]

    def st_with(key: str, value: str) -> bytes:
        return safetensors_bytes({**header, "__metadata__": {**header["__metadata__"], key: value}}, body)

    add("st-deep-json.safetensors", st_with("optional_info", "[" * 100_000 + "]" * 100_000), "st-deep-json",
        "a .safetensors whose optional_info is JSON 100,000 levels deep (past the decoder's depth: kept as text)",
        outcome="works")
    add("st-nested-metadata.safetensors", st_with("optional_info", "[" * 40 + "]" * 40), "st-nested-metadata",
        "a .safetensors whose optional_info is JSON 40 levels deep")
    return out


def _damage_attacks(folder: Path, suffix: str, clean_pt: bytes, clean_st: bytes | None, group: str,
                    scope: str) -> list[Hostile]:
    out: list[Hostile] = []

    def add(filename, data, kind, what, error=CORRUPT):
        (folder / filename).write_bytes(data)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, "refused", error))

    add(f"empty{suffix}", b"", "empty", "an empty file", error=r"empty|truncated|corrupt")
    add(f"truncated-half{suffix}", clean_pt[: len(clean_pt) // 2], "truncated-half",
        "a clean file cut in half (its zip directory lost)")
    add(f"truncated-tail{suffix}", clean_pt[:-30], "truncated-tail", "a clean file missing its last 30 bytes")
    with zipfile.ZipFile(io.BytesIO(clean_pt)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
        data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        start = clean_pt.rindex(b"PK\x01\x02")
    add(f"bitflip-pickle{suffix}", _flip(clean_pt, data_start, 3), "bitflip-pickle",
        "a clean file with one bit flipped in its pickle's first opcode")
    add(f"bitflip-directory{suffix}", _flip(clean_pt, start + 42 + 3, 6), "bitflip-directory",
        "a clean file with one bit flipped in the last directory entry's local-header offset")
    add(f"garbage{suffix}", bytes(range(256)) * 16, "garbage", "4 KB of bytes that are no file format")
    if clean_st is None:
        return out
    st = ".safetensors"
    add(f"st-truncated{st}", clean_st[: len(clean_st) - 100], "st-truncated", "a clean .safetensors missing 100 bytes",
        error=HEADER)
    add(f"st-bitflip-header{st}", _flip(clean_st, 12, 1), "st-bitflip-header",
        "a clean .safetensors with a bit flipped in its JSON header", error=HEADER)
    return out


def _safetensors_attacks(folder: Path, group: str, scope: str, header_cap: int, tensor_name: str) -> list[Hostile]:
    out: list[Hostile] = []

    def add(filename, data, kind, what, error=HEADER):
        (folder / filename).write_bytes(data)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, "refused", error))

    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    data = b"\0" * 16
    add("st-offsets-beyond.safetensors", safetensors_bytes({tensor_name: {**entry, "data_offsets": [0, 1 << 40]}},
                                                           data),
        "st-offsets-beyond", "a header whose data_offsets reach 1 TiB past a 16-byte body")
    add("st-shape-lie.safetensors", safetensors_bytes({tensor_name: {**entry, "shape": [1 << 20, 1 << 20]}}, data),
        "st-shape-lie", "a header claiming a 2^20 x 2^20 tensor in 16 bytes")
    add("st-overlap.safetensors",
        safetensors_bytes({tensor_name: entry, tensor_name.replace("weight", "bias"): entry}, data),
        "st-overlap", "two tensors sharing the same 16 bytes (offsets overlap)")
    add("st-negative.safetensors", safetensors_bytes({tensor_name: {**entry, "data_offsets": [16, 0]}}, data),
        "st-negative", "data_offsets that run backwards")
    add("st-bad-dtype.safetensors", safetensors_bytes({tensor_name: {**entry, "dtype": "X99"}}, data),
        "st-bad-dtype", "an unknown dtype")
    add("st-length-lie.safetensors", safetensors_bytes({tensor_name: entry}, data, length=1 << 62),
        "st-length-lie", "a header length field of 2^62 bytes")
    pad = header_cap + (1 << 20)
    add("st-gigantic-header.safetensors",
        safetensors_bytes({"__metadata__": {"pad": "x" * pad}, tensor_name: entry}, data),
        "st-gigantic-header", f"a real JSON header of {pad / 2**20:.0f} MiB (more than the "
                              f"{header_cap / 2**20:.0f} MiB allowed)")
    add("st-not-json.safetensors", struct.pack("<Q", 16) + b"\xff\xfe{{{{not json" + data,
        "st-not-json", "a header that is not UTF-8 JSON")
    add("st-not-object.safetensors", safetensors_bytes([1, 2, 3], data), "st-not-object",  # type: ignore[arg-type]
        "a header that is JSON but a list")
    return out


def _symlink_attacks(folder: Path, outside: Path, suffix: str, group: str, scope: str,
                     secret_file: Path) -> list[Hostile]:
    out: list[Hostile] = []

    def link(filename, target, kind, what):
        (folder / filename).symlink_to(target)
        out.append(Hostile(group, filename, f"{scope}:{kind}", what, "hidden"))

    link(f"escape{suffix}", secret_file, "symlink-out", "a link to a valid file outside the folder")
    link(f"escape-relative{suffix}", os.path.relpath(secret_file, folder), "symlink-out-relative",
         "a relative link (../..) to a valid file outside the folder")
    link("escape-dir", outside, "symlink-dir-out", "a link to the folder outside (its files must not be listed)")
    link(f"dangling{suffix}", outside / "missing", "symlink-dangling", "a link to nothing")
    link(f"loop{suffix}", f"loop{suffix}", "symlink-loop", "a link to itself")
    return out


def write_hypernetworks(folder: Path, outside: Path, markers: Path) -> list[Hostile]:
    """Every kind of hostile hypernetwork file into ``folder`` (``outside`` holds what links point at)."""
    from extension.hypernetwork.files import MAX_SAFETENSORS_HEADER
    from extension.safe_pickle import dumps as safe_dumps

    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    group, scope = HYPERNETWORKS, "hn"
    tmp = outside / "clean.pt"
    write_clean(tmp)
    clean_pt = tmp.read_bytes()
    write_clean(outside / "clean.safetensors")
    clean_st = (outside / "clean.safetensors").read_bytes()
    out = [Hostile(group, "good.pt", f"{scope}:good", "a clean network for the demo model", "works"),
           Hostile(group, "good_st.safetensors", f"{scope}:good-safetensors", "a clean .safetensors network",
                   "works")]
    (folder / "good.pt").write_bytes(clean_pt)
    (folder / "good_st.safetensors").write_bytes(clean_st)
    out += _pickle_attacks(folder, ".pt", clean_pt, markers, group, scope)
    out += _zip_attacks(folder, ".pt", clean_pt, group, scope)
    out += _damage_attacks(folder, ".pt", clean_pt, clean_st, group, scope)
    out += _safetensors_attacks(folder, group, scope, MAX_SAFETENSORS_HEADER, "48.k.linear.0.weight")
    out += _metadata_attacks(folder, clean_pt, clean_st, group, scope)
    secret = outside / "secret.pt"
    secret.write_bytes(clean_pt)
    (outside / "secret.txt").write_text("SECRET TEXT OUTSIDE THE FOLDER", encoding="utf-8")
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside / "secret.png")
    out += _symlink_attacks(folder, outside, ".pt", group, scope, secret)
    # A clean network whose description and preview are links out of the folder: it works, they are not read.
    (folder / "linked_extras.pt").write_bytes(clean_pt)
    (folder / "linked_extras.txt").symlink_to(outside / "secret.txt")
    (folder / "linked_extras.png").symlink_to(outside / "secret.png")
    out.append(Hostile(group, "linked_extras.pt", f"{scope}:symlink-description-preview",
                       "a clean network whose NAME.txt and NAME.png link to files outside the folder", "works"))
    # A clean network whose preview is a PNG bomb (12000 x 12000 black pixels, 432 MB decoded, 0.4 MB on disk).
    (folder / "preview_bomb.pt").write_bytes(clean_pt)
    (folder / "preview_bomb.preview.png").write_bytes(png_of_zeros(12000, 12000))
    out.append(Hostile(group, "preview_bomb.pt", f"{scope}:preview-bomb",
                       "a clean network whose preview is a 12000 x 12000 PNG in 0.4 MB (432 MB decoded): the card "
                       "shows no preview", "works"))
    # Clean networks whose descriptions are 2 GiB (sparse files: nothing on disk): a card reads their start.
    for stem, suffix in (("huge_description", ".txt"), ("huge_json_description", ".json")):
        (folder / f"{stem}.pt").write_bytes(clean_pt)
        with open(folder / f"{stem}{suffix}", "wb") as handle:
            handle.write(b'{"description": "' if suffix == ".json" else b"A long story. ")
            handle.truncate(2 << 30)
        out.append(Hostile(group, f"{stem}.pt", f"{scope}:{stem.replace('_', '-')}",
                           f"a clean network whose {suffix} description is 2 GiB (sparse): the card shows its "
                           "first 64 KiB" + (" (JSON: nothing)" if suffix == ".json" else ""), "works"))
    # Odd names, clean contents.
    for kind, filename, what in (
            ("name-dots", "dots..in..name.pt", "dots (..) inside the name"),
            ("name-unicode", "ünïcödé 网络 🎨.pt", "accents, CJK and an emoji in the name"),
            ("name-rtl", "evil\u202egnp.pt", "a right-to-left override in the name"),
            ("name-shell", f"$(touch {SHELL_MARKER}); `touch {SHELL_MARKER}` | & ' \" <img src=x onerror=alert(1)>.pt",
             "shell substitutions, quotes and HTML in the name"),
            ("name-newline", "new\nline.pt", "a newline in the name")):
        (folder / filename).write_bytes(clean_pt)
        out.append(Hostile(group, filename, f"{scope}:{kind}", f"a clean network with {what}", "works"))
    undecodable = os.fsencode(str(folder)) + b"/bad-\xff\xfe-bytes.pt"
    with open(undecodable, "wb") as handle:
        handle.write(clean_pt)
    out.append(Hostile(group, os.fsdecode(undecodable)[len(str(folder)) + 1:], f"{scope}:name-not-utf8",
                       "a clean network whose file name is not valid UTF-8 (it could not be shown, sent as JSON "
                       "or typed in a prompt)", "hidden"))
    # The sidecar: a clean network, its .optim hostile.
    (folder / "with_optim.pt").write_bytes(clean_pt)
    pkl, records = _split_torch_zip(clean_pt)
    (folder / "with_optim.pt.optim").write_bytes(
        torch_zip(inject(pickle.dumps({"hash": "x", "optimizer_name": "AdamW"}, protocol=2),
                         payload("os.system", markers / f"{scope}-optim")), {}))
    out.append(Hostile(group, "with_optim.pt", f"{scope}:optim-sidecar",
                       "a clean network whose .optim sidecar calls os.system", "sidecar"))
    (folder / "with_linked_optim.pt").write_bytes(clean_pt)
    (outside / "secret.pt.optim").write_bytes(safe_dumps({"hash": "x", "optimizer_name": "AdamW"}))
    (folder / "with_linked_optim.pt.optim").symlink_to(outside / "secret.pt.optim")
    out.append(Hostile(group, "with_linked_optim.pt", f"{scope}:optim-sidecar-link",
                       "a clean network whose .optim sidecar links to a file outside the folder (not read)",
                       "sidecar"))
    return out


def write_checkpoints(folder: Path, outside: Path, markers: Path) -> list[Hostile]:
    """Every kind of hostile single-file checkpoint into ``folder``."""
    from extension.checkpoints.weights import MAX_SAFETENSORS_HEADER

    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    group, scope = CHECKPOINTS, "ckpt"
    from extension.safe_pickle import dumps

    clean_pt = dumps({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.ones(4, 4, 3, 3)}})
    out = _pickle_attacks(folder, ".ckpt", clean_pt, markers, group, scope)
    out += _zip_attacks(folder, ".ckpt", clean_pt, group, scope)
    out += _damage_attacks(folder, ".ckpt", clean_pt, None, group, scope)
    out += _safetensors_attacks(folder, group, scope, MAX_SAFETENSORS_HEADER,
                                "model.diffusion_model.input_blocks.0.0.weight")
    secret = outside / "secret.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(4, 4, 3, 3)}, str(secret))
    out += _symlink_attacks(folder, outside, ".safetensors", group, scope, secret)
    out += _diffusers_attacks(folder, clean_pt, markers, secret, group, scope)
    return out


def _diffusers_attacks(folder: Path, clean_pt: bytes, markers: Path, secret: Path, group: str,
                       scope: str) -> list[Hostile]:
    """Diffusers folders (``model_index.json`` and component folders) holding a hostile weight file."""
    from safetensors.torch import save_file

    out: list[Hostile] = []
    pkl, records = _split_torch_zip(clean_pt)

    def model(name: str, what: str, error: str, files: dict[str, bytes | Path]):
        root = folder / name
        (root / "unet").mkdir(parents=True)
        (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
        (root / "unet" / "config.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, str(root / "text_encoder.safetensors"))
        for rel, content in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                target.symlink_to(content)
            else:
                target.write_bytes(content)
        out.append(Hostile(group, name, f"{scope}:{name}", what, "refused", error))

    model("diffusers-code", "a diffusers folder whose unet .bin calls os.system", REFUSED_CODE,
          {"unet/diffusion_pytorch_model.bin": torch_zip(inject(pkl, payload("os.system", markers / "diffusers")),
                                                         records)})
    model("diffusers-bomb", "a diffusers folder whose unet .bin is the 8 GiB zip bomb", BOMB,
          {"unet/diffusion_pytorch_model.bin": write_zip([
              Member("archive/data.pkl", pkl), Member("archive/data/0", deflate_zeros(BOMB_SIZE),
                                                      zipfile.ZIP_DEFLATED, size=BOMB_SIZE),
              Member("archive/version", b"3\n")])})
    model("diffusers-link", "a diffusers folder whose unet weights link to a file outside the folder",
          r"outside", {"unet/diffusion_pytorch_model.safetensors": secret})
    model("diffusers-header", "a diffusers folder whose unet .safetensors header claims 2^62 bytes", HEADER,
          {"unet/diffusion_pytorch_model.safetensors": safetensors_bytes({"w": {"dtype": "F32", "shape": [4],
                                                                                 "data_offsets": [0, 16]}},
                                                                           b"\0" * 16, length=1 << 62)})
    return out


def write_all(root) -> dict:
    """Write every hostile file under ``root``: ``hypernetworks/``, ``Stable-diffusion/`` (checkpoints),
    ``outside/`` (what links point at: must never be read) and ``markers/`` (empty unless code ran).

    Returns:
        The manifest: ``{"root", "hypernetworks", "checkpoints", "outside", "markers", "shell_marker",
        "files": [Hostile as a dict, ...]}``.
    """
    root = Path(root)
    markers = root / MARKERS
    markers.mkdir(parents=True, exist_ok=True)
    outside = root / OUTSIDE
    files = write_hypernetworks(root / HYPERNETWORKS, outside / "hn", markers)
    files += write_checkpoints(root / CHECKPOINTS, outside / "ckpt", markers)
    return {"root": str(root), "hypernetworks": str(root / HYPERNETWORKS), "checkpoints": str(root / CHECKPOINTS),
            "outside": str(outside), "markers": str(markers), "shell_marker": SHELL_MARKER,
            "files": [dataclasses.asdict(f) | {"name": f.name} for f in files]}


def markers_found(manifest: dict) -> list[str]:
    """Markers that payloads created (must be empty): in the marker folder, and the shell marker a file
    name's ``$(touch ...)`` would create in the current folder or beside the files."""
    found = sorted(p.name for p in Path(manifest["markers"]).iterdir())
    for where in (Path.cwd(), Path(manifest["hypernetworks"]), Path(manifest["checkpoints"])):
        if (where / manifest["shell_marker"]).exists():
            found.append(str(where / manifest["shell_marker"]))
    return found


# -- measuring -------------------------------------------------------------------------------------------------
def _memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process, in MiB (Linux)."""
    import re

    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux 4.0+)


def measure(manifest: dict) -> list[dict]:
    """Read every listed file as the server would, one at a time, each under a fresh peak-RSS mark: for a
    hypernetwork its listing (``read_info``) then its load; for a checkpoint ``read_state_dict``. Run it in a
    process of its own (the peak is the process's).

    Returns:
        One record per file and step: ``kind``, ``step``, ``seconds``, ``peak_mb`` (peak RSS above the RSS
        before the step), ``outcome`` (``ok`` or the error's first 300 characters).
    """
    import gc
    import time
    import warnings

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: F401 - imported before
    # measuring, as a server has them: their import is not the file's cost

    from extension.checkpoints.convert import load_diffusers_folder
    from extension.checkpoints.weights import read_state_dict
    from extension.hypernetwork import load_hypernetwork, read_info
    from extension.tokenizer import clip_tokenizer  # noqa: F401

    records = []
    for item in manifest["files"]:
        if item["outcome"] == "hidden":
            continue
        if item["folder"] == HYPERNETWORKS:
            path = Path(manifest["hypernetworks"]) / item["path"]
            steps = (("list", read_info), ("load", load_hypernetwork))
        else:
            path = Path(manifest["checkpoints"]) / item["path"]
            steps = (("load", load_diffusers_folder if path.is_dir() else read_state_dict),)
        for step, function in steps:
            gc.collect()
            before = _memory_mb("VmRSS")
            _reset_peak()
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = function(path)
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded: what the user would see
                outcome, result = f"{type(exc).__name__}: {exc}"[:300], None
            seconds = time.perf_counter() - start
            del result
            records.append({"kind": item["kind"], "step": step, "seconds": round(seconds, 4),
                            "peak_mb": round(max(0.0, _memory_mb("VmHWM") - before), 1), "outcome": outcome})
    return records


if __name__ == "__main__":
    # python tests/hostile_files.py write FOLDER            write every kind, print the manifest (JSON)
    # python tests/hostile_files.py measure MANIFEST.json   read each file in this process, print the records
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    command, argument = sys.argv[1], sys.argv[2]
    if command == "write":
        print(json.dumps(write_all(argument), indent=1))
    elif command == "measure":
        print(json.dumps(measure(json.loads(Path(argument).read_text())), indent=1))
    else:
        raise SystemExit(f"unknown command {command!r}: write FOLDER | measure MANIFEST.json")
