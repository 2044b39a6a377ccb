"""Hypernetwork files: AUTOMATIC1111's ``.pt`` (and ``.ckpt``), ``.safetensors``, and the ``.optim`` sidecar.

Reading is safe: pickles go through ``torch.load(weights_only=True)``, which builds nothing but plain
containers and tensors and refuses anything else without running it. Every failure is a
:class:`~extension.errors.HypernetworkError` that names the file and says what is wrong with it.

The in-memory form shared by both formats is AUTOMATIC1111's dict: ``{int width: (K state dict, V state
dict), "name": ..., "layer_structure": ..., ...}``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import HypernetworkError, NotAHypernetworkError, UnsafeFileError
from .modules import Hypernetwork, parse_dropout_structure, validate_structure

SUFFIXES = (".pt", ".safetensors", ".ckpt")
SAFETENSORS_FORMAT = "sd-webui-hypernetworks/1"
METADATA_KEYS = ("step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                 "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                 "last_layer_dropout", "optional_info", "optimizer_name")
_MAX_HEADER = 100 * 1024 * 1024


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading -----------------------------------------------------------------------------------------------
def _load_pickle(data: bytes, path) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise UnsafeFileError(
                "refused to load: the file's pickle asks to build objects other than plain containers and "
                "tensors (it could run code). Nothing in it was executed.", path) from exc
        raise HypernetworkError(f"not a readable PyTorch file ({exc})", path) from exc
    except (EOFError, zipfile.BadZipFile, struct.error) as exc:
        raise HypernetworkError(f"the file is truncated or corrupt ({type(exc).__name__}: {exc})", path) from exc
    except RuntimeError as exc:
        raise HypernetworkError(f"the file is truncated or corrupt ({exc})", path) from exc
    except Exception as exc:  # any other failure of a malformed file is still the file's fault
        raise HypernetworkError(f"not a readable PyTorch file ({type(exc).__name__}: {exc})", path) from exc


def read_safetensors_header(path) -> tuple[dict, dict]:
    """Return ``(tensor entries, metadata)`` from a ``.safetensors`` header without reading the weights."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise HypernetworkError("the file is truncated (no safetensors header)", path)
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER):
            raise HypernetworkError("the file is truncated or not a safetensors file (header length out of range)",
                                    path)
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HypernetworkError(f"corrupt safetensors header ({exc})", path) from exc
    if not isinstance(header, dict):
        raise HypernetworkError("corrupt safetensors header (not a JSON object)", path)
    metadata = header.pop("__metadata__", None) or {}
    end = max((entry.get("data_offsets", [0, 0])[1] for entry in header.values() if isinstance(entry, dict)),
              default=0)
    if 8 + length + end > size:
        raise HypernetworkError(f"the file is truncated ({size} bytes, the header needs {8 + length + end})", path)
    return header, metadata


def _decode_metadata(metadata: dict) -> dict:
    out = {}
    for key in METADATA_KEYS:
        if key in metadata:
            try:
                out[key] = json.loads(metadata[key])
            except json.JSONDecodeError:
                out[key] = metadata[key]
    return out


def _safetensors_to_state(data: bytes, path) -> dict:
    from safetensors.torch import load as load_safetensors

    header_len = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else None
    if header_len is None or header_len > len(data) - 8:
        raise HypernetworkError("the file is truncated or not a safetensors file", path)
    try:
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        tensors = load_safetensors(data)
    except Exception as exc:
        raise HypernetworkError(f"the file is truncated or corrupt ({exc})", path) from exc
    if not _looks_like_hypernetwork_keys(tensors):
        if metadata.get("format") == SAFETENSORS_FORMAT:
            raise HypernetworkError("malformed tensor names (expected WIDTH.k.* and WIDTH.v.*)", path)
        raise _not_a_hypernetwork(tensors, path)
    state: dict[Any, Any] = _decode_metadata(metadata)
    pairs: dict[int, tuple[dict, dict]] = {}
    for key, tensor in tensors.items():
        dim, which, param = key.split(".", 2)
        pairs.setdefault(int(dim), ({}, {}))[0 if which == "k" else 1][param] = tensor
    state.update(sorted(pairs.items()))
    return state


def _looks_like_hypernetwork_keys(tensors: dict) -> bool:
    return bool(tensors) and all(
        len(parts := key.split(".", 2)) == 3 and parts[0].isdigit() and parts[1] in ("k", "v") for key in tensors)


def _not_a_hypernetwork(keys, path) -> NotAHypernetworkError:
    names = [str(k) for k in keys]
    joined = " ".join(names[:2000])
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."))
           for k in names) or "state_dict" in names:
        kind = "a Stable Diffusion checkpoint (put it in models/Stable-diffusion)"
    elif "lora_up" in joined or "lora_down" in joined or "lora_A" in joined or "lora_B" in joined:
        kind = "a LoRA, not a hypernetwork"
    elif any(k in names for k in ("string_to_param", "emb_params", "clip_l", "clip_g", "string_to_token")):
        kind = "a textual-inversion embedding, not a hypernetwork"
    else:
        kind = "not a hypernetwork (it has no attention-width entries)"
    return NotAHypernetworkError(f"this file is {kind}", path)


def read_state(path) -> tuple[dict, str]:
    """Read a hypernetwork file into AUTOMATIC1111's dict shape; return it with the file's sha256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HypernetworkError(f"cannot read the file ({exc.strerror or exc})", path) from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        raise HypernetworkError("the file is empty", path)
    if path.suffix.lower() == ".safetensors":
        return _safetensors_to_state(data, path), sha256
    state = _load_pickle(data, path)
    if not isinstance(state, dict):
        raise NotAHypernetworkError(f"this file is not a hypernetwork (it holds a {type(state).__name__}, "
                                    "not a dict of attention widths)", path)
    if not any(type(key) is int for key in state):
        raise _not_a_hypernetwork(state.keys(), path)
    return state, sha256


def hypernetwork_from_state(state: dict, path=None, name: str | None = None) -> Hypernetwork:
    """Build a :class:`Hypernetwork` from AUTOMATIC1111's dict, with its defaults for missing keys."""
    hn = Hypernetwork()
    hn.filename = str(path) if path is not None else None
    hn.name = name or (Path(path).stem if path is not None else None)
    try:
        hn.layer_structure = list(state.get("layer_structure") or [1, 2, 1])
        hn.optional_info = state.get("optional_info")
        hn.activation_func = state.get("activation_func")
        hn.weight_init = state.get("weight_initialization", "Normal")
        hn.add_layer_norm = bool(state.get("is_layer_norm", False))
        dropout = state.get("dropout_structure")
        hn.dropout_structure = list(dropout) if dropout is not None else None
        hn.use_dropout = (True if hn.dropout_structure is not None and any(hn.dropout_structure)
                          else bool(state.get("use_dropout", False)))
        hn.activate_output = bool(state.get("activate_output", True))
        hn.last_layer_dropout = bool(state.get("last_layer_dropout", False))
        if hn.dropout_structure is None:
            hn.dropout_structure = parse_dropout_structure(hn.layer_structure, hn.use_dropout, hn.last_layer_dropout)
    except TypeError as exc:
        raise HypernetworkError(f"malformed metadata ({exc})", path) from exc
    if hn.activation_func is not None and not isinstance(hn.activation_func, str):
        raise HypernetworkError(f"malformed activation_func {hn.activation_func!r}", path)
    try:
        validate_structure(hn.layer_structure, hn.dropout_structure, hn.activation_func)
        for size, pair in state.items():
            if type(size) is not int:
                continue
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(sd, dict) for sd in pair):
                raise HypernetworkError(f"the entry for width {size} is not a (K, V) pair of state dicts")
            if size <= 0:
                raise HypernetworkError(f"width {size} is not a positive size")
            hn.layers[size] = (hn._module(size, pair[0]), hn._module(size, pair[1]))
    except HypernetworkError as exc:
        raise exc.with_path(path) from exc.__cause__
    if not hn.layers:
        raise NotAHypernetworkError("this file is not a hypernetwork (it has no attention-width entries)", path)
    hn.name = state.get("name") or hn.name
    hn.step = int(state.get("step") or 0)
    hn.sd_checkpoint = state.get("sd_checkpoint")
    hn.sd_checkpoint_name = state.get("sd_checkpoint_name")
    hn.optimizer_name = state.get("optimizer_name")
    hn.eval()
    return hn


def load_hypernetwork(path) -> Hypernetwork:
    """Load a hypernetwork file (``.pt``, ``.ckpt`` or ``.safetensors``) and its ``.optim`` sidecar."""
    return load_hypernetwork_into(Hypernetwork(), path)


def load_hypernetwork_into(hn: Hypernetwork, path) -> Hypernetwork:
    """AUTOMATIC1111's ``Hypernetwork.load``: fill ``hn`` from the file (its ``name`` wins when the file has one)."""
    state, sha256 = read_state(path)
    loaded = hypernetwork_from_state(state, path, name=hn.name)
    hn.__dict__.update(loaded.__dict__)
    hn.sha256, hn._shorthash = sha256, sha256[:10]
    _read_optimizer_sidecar(hn, path)
    return hn


def _read_optimizer_sidecar(hn: Hypernetwork, path) -> None:
    """Keep the saved optimizer state only when the sidecar's hash names this very file."""
    hn.optimizer_state_dict = None
    sidecar = Path(str(path) + ".optim")
    if sidecar.exists():
        try:
            saved = _load_pickle(sidecar.read_bytes(), sidecar)
        except HypernetworkError as exc:
            warnings.warn(f"ignoring optimizer state: {exc}")
            saved = {}
        if isinstance(saved, dict) and saved.get("hash") == hn.shorthash():
            hn.optimizer_state_dict = saved.get("optimizer_state_dict")
            hn.optimizer_name = saved.get("optimizer_name", "AdamW")
    if not hn.optimizer_state_dict:
        hn.optimizer_name = "AdamW"


# -- metadata without weights ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HypernetworkInfo:
    """What a listing shows about a file, read without building the network."""

    name: str
    sizes: tuple[int, ...]
    layer_structure: tuple[float, ...]
    activation_func: str | None
    add_layer_norm: bool
    use_dropout: bool
    dropout_structure: tuple[float, ...]
    activate_output: bool
    weight_init: str
    step: int
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    optional_info: str | None
    format: str
    sha256: str | None = None  # known when the whole file had to be read anyway (pickles)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _info_from_state(state: dict, path: Path, fmt: str, sha256: str | None) -> HypernetworkInfo:
    hn = hypernetwork_from_state(state, path)
    return HypernetworkInfo(
        name=hn.name, sizes=tuple(hn.sizes()), layer_structure=tuple(hn.layer_structure),
        activation_func=hn.activation_func, add_layer_norm=hn.add_layer_norm, use_dropout=hn.use_dropout,
        dropout_structure=tuple(hn.dropout_structure), activate_output=hn.activate_output, weight_init=hn.weight_init,
        step=hn.step, sd_checkpoint=hn.sd_checkpoint, sd_checkpoint_name=hn.sd_checkpoint_name,
        optional_info=hn.optional_info, format=fmt, sha256=sha256)


def read_info(path) -> HypernetworkInfo:
    """Metadata of a hypernetwork file. For ``.safetensors`` only the header is read; pickles must be read whole
    (and are then checked as fully as a load would)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        state, sha256 = read_state(path)
        return _info_from_state(state, path, "pt", sha256)
    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != SAFETENSORS_FORMAT and not _looks_like_hypernetwork_keys(header):
        raise _not_a_hypernetwork(header, path)
    meta = _decode_metadata(metadata)
    sizes = sorted({int(key.split(".", 1)[0]) for key in header})
    if not sizes:
        raise NotAHypernetworkError("this file is not a hypernetwork (it has no attention-width entries)", path)
    layer_structure = meta.get("layer_structure") or [1, 2, 1]
    dropout = meta.get("dropout_structure")
    use_dropout = True if dropout and any(dropout) else bool(meta.get("use_dropout", False))
    if dropout is None:
        dropout = parse_dropout_structure(layer_structure, use_dropout, bool(meta.get("last_layer_dropout", False)))
    try:
        validate_structure(layer_structure, dropout, meta.get("activation_func"))
    except HypernetworkError as exc:
        raise exc.with_path(path) from None
    return HypernetworkInfo(
        name=meta.get("name") or path.stem, sizes=tuple(sizes), layer_structure=tuple(layer_structure),
        activation_func=meta.get("activation_func"), add_layer_norm=bool(meta.get("is_layer_norm", False)),
        use_dropout=use_dropout, dropout_structure=tuple(dropout),
        activate_output=bool(meta.get("activate_output", True)),
        weight_init=meta.get("weight_initialization", "Normal"), step=int(meta.get("step") or 0),
        sd_checkpoint=meta.get("sd_checkpoint"), sd_checkpoint_name=meta.get("sd_checkpoint_name"),
        optional_info=meta.get("optional_info"), format="safetensors")


# -- writing -----------------------------------------------------------------------------------------------
def to_state(hn: Hypernetwork) -> dict:
    """AUTOMATIC1111's dict for ``hn``: plain dicts of contiguous fp32 CPU tensors, then the metadata."""
    state: dict[Any, Any] = {}
    for size, pair in sorted(hn.layers.items()):
        state[int(size)] = tuple(
            {key: value.detach().to("cpu", torch.float32).contiguous().clone()
             for key, value in module.state_dict().items()} for module in pair)
    state.update(hn.metadata())
    return state


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_hypernetwork(hn: Hypernetwork, path, optimizer_state_dict=None) -> None:
    """Write ``hn`` to ``path``: ``.safetensors`` with the metadata in its header, otherwise AUTOMATIC1111's
    ``.pt``. With ``optimizer_state_dict``, also write ``path.optim`` stamped with the new file's hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = to_state(hn)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        tensors = {f"{size}.{'kv'[i]}.{key}": tensor
                   for size, pair in state.items() if type(size) is int
                   for i, sd in enumerate(pair) for key, tensor in sd.items()}
        metadata = {"format": SAFETENSORS_FORMAT}
        metadata.update({key: json.dumps(value) for key, value in state.items() if type(key) is str})
        _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        _atomic_write(path, lambda tmp: torch.save(state, tmp))
    hn.filename = str(path)
    hn.sha256 = sha256_file(path)
    hn._shorthash = hn.sha256[:10]
    optimizer_state_dict = optimizer_state_dict or None
    if optimizer_state_dict is not None:
        sidecar = {"optimizer_name": hn.optimizer_name or "AdamW", "hash": hn._shorthash,
                   "optimizer_state_dict": optimizer_state_dict}
        _atomic_write(Path(str(path) + ".optim"), lambda tmp: torch.save(sidecar, tmp))
