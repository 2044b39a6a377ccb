"""AUTOMATIC1111's check of pickled files (``modules/safe.py``), restated from its rules, for tests.

AUTOMATIC1111 loads every ``.pt``/``.ckpt``/``.optim`` through ``safe.load``: a zip-format pickle passes only
when every member name matches its pattern (1.10 below; 1.8 and older accept only ``data/N``, ``version`` and
``data.pkl``), there is exactly one ``data.pkl``, and that pickle names only allowed globals; a legacy
(non-zip) pickle goes through the same restricted unpickler, five objects in a row. A file that fails is
refused as "possibly malicious" and never loads.
"""
from __future__ import annotations

import collections
import pickle
import re
import zipfile

ZIP_NAMES = {
    "1.8": re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$"),
    "1.10": re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$"),
}
DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "IntStorage"), ("torch", "LongStorage"),
    ("torch", "DoubleStorage"), ("torch", "ByteStorage"), ("torch", "float32"), ("torch", "BFloat16Storage"),
    ("torch.nn.modules.container", "ParameterDict"),
    ("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode"), ("__builtin__", "set"),
}


class Refused(Exception):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        if saved_id[0] != "storage":
            raise Refused(f"persistent id {saved_id[0]!r}")
        return None

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("__builtin__", "set"):
            return set
        if (module, name) in ALLOWED_GLOBALS:
            return lambda *args, **kwargs: None  # stand-in: nothing is built
        raise Refused(f"global '{module}/{name}' is forbidden")


def check(path, version: str) -> None:
    """Raise :class:`Refused` when AUTOMATIC1111 ``version`` ("1.8" or "1.10") would refuse the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for name in names:
                if not ZIP_NAMES[version].match(name):
                    raise Refused(f"bad file inside {path}: {name}")
            pickles = [n for n in names if DATA_PKL.match(n)]
            if len(pickles) != 1:
                raise Refused(f"{len(pickles)} data.pkl found in {path}")
            with archive.open(pickles[0]) as handle:
                _RestrictedUnpickler(handle).load()
    except zipfile.BadZipFile:
        with open(path, "rb") as handle:
            unpickler = _RestrictedUnpickler(handle)
            for _ in range(5):
                unpickler.load()
