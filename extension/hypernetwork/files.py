"""Hypernetwork files: AUTOMATIC1111's ``.pt`` (and ``.ckpt``), ``.safetensors``, and the ``.optim`` sidecar.

This module reads and writes the in-memory form both formats share, AUTOMATIC1111's dict: ``{int width:
(K state dict, V state dict), "name": ..., "layer_structure": ..., ...}``; it knows nothing of the torch
modules built from it (:mod:`extension.hypernetwork.modules` does that, and calls here).

Reading is safe: pickles go through :mod:`extension.safe_pickle`, which builds nothing but plain containers
and tensors and refuses anything else without running it, and checks a file's zip directory and pickle
against :data:`LIMITS` before anything is unpacked; ``.safetensors`` through
:mod:`extension.safetensors_file`, which checks every header entry against the file before a tensor is
allocated. A listing (:func:`read_info`) reads headers and pickles only, never tensor data. ``.pt`` files
are written so that AUTOMATIC1111's own safety check accepts them (1.8 and 1.10 alike). Every failure is a
:class:`~extension.errors.HypernetworkError` that names the file and says what is wrong with it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any


from .. import safe_pickle, safetensors_file
from ..errors import HypernetworkError, NotAHypernetworkError, UnsafeFileError
from ..fileio import atomic_write, sha256_file
from .config import HypernetworkConfig

SUFFIXES = (".pt", ".safetensors", ".ckpt")
SAFETENSORS_FORMAT = "sd-webui-hypernetworks/1"
METADATA_KEYS = ("step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                 "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                 "last_layer_dropout", "optional_info", "optimizer_name")
# A real hypernetwork's .safetensors header is a few KB (a few dozen tensors and the metadata).
MAX_SAFETENSORS_HEADER = 2 << 20
# What a hypernetwork (or .optim) pickle may claim: tensors of at most 4 GiB in all (the largest in the wild are
# a few hundred MB) and a pickle within safe_pickle.HYPERNETWORK's limits.
LIMITS = safe_pickle.HYPERNETWORK
MAX_PICKLE_BYTES = LIMITS.max_unpacked


# -- reading -----------------------------------------------------------------------------------------------
def load_pickle(source, path, map_location="cpu") -> Any:
    """A ``.pt``/``.ckpt``/``.optim`` pickle (bytes, path or open file) as plain containers and tensors, or a
    clear error. ``map_location="meta"`` reads no tensor data (shapes only).

    Args:
        source: the pickle's bytes, its path, or a binary file open on it.
        path: the file the messages name.
        map_location: where tensors go (``"cpu"``, or ``"meta"`` for shapes without data).

    Raises:
        UnsafeFileError: the pickle would build something other than containers and tensors.
        HypernetworkError: the file is truncated, corrupt or beyond :data:`LIMITS`.
    """
    try:
        return safe_pickle.load(source, limits=LIMITS, map_location=map_location)
    except safe_pickle.PickleRefused as exc:
        raise UnsafeFileError(str(exc), path) from exc
    except safe_pickle.PickleUnreadable as exc:
        raise HypernetworkError(str(exc), path) from exc


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise HypernetworkError(f"cannot read the file ({exc.strerror or exc})", path) from exc


def _header(handle, path) -> safetensors_file.Header:
    try:
        return safetensors_file.read_header(handle, MAX_SAFETENSORS_HEADER)
    except safetensors_file.SafetensorsError as exc:
        raise HypernetworkError(str(exc), path) from None


def read_safetensors_header(path) -> tuple[dict, dict]:
    """Return ``(tensor entries, metadata)`` from a ``.safetensors`` header without reading the weights; the
    header is checked whole (sizes, offsets, dtypes) as a load would check it.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``({name: {"dtype": "float32", "shape": [...]}, ...}, {metadata key: text, ...})``.

    Raises:
        HypernetworkError: the file cannot be read or its header is malformed or too large.
    """
    with _open(Path(path)) as handle:
        header = _header(handle, path)
    entries = {name: {"dtype": str(e.dtype).removeprefix("torch."), "shape": list(e.shape)}
               for name, e in header.entries.items()}
    return entries, dict(header.metadata)


def _decode_metadata(metadata: dict) -> dict:
    out = {}
    for key in METADATA_KEYS:
        if key in metadata:
            try:
                out[key] = json.loads(metadata[key])
            except (ValueError, RecursionError):  # not JSON, or nested past the decoder's depth: the raw text
                out[key] = metadata[key]
    return out


# Metadata is shown on cards, written into infotexts and sent as JSON: it must be plain and shallow.
MAX_METADATA_DEPTH = 16
_TEXT_KEYS = ("name", "sd_checkpoint", "sd_checkpoint_name", "optional_info")


def short_repr(value, limit: int = 120) -> str:
    """``repr(value)``, bounded in depth and length (safe on any nesting).

    Args:
        value: anything.
        limit: the most characters returned (and shown of any one string).
    """
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
    return shown.repr(value)[:limit]


def _depth(value, limit: int) -> int:
    """How deep ``value`` nests (containers in containers), walked without recursion; stops past ``limit``."""
    stack, seen, deepest = [(value, 1)], set(), 0
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list, tuple, set, frozenset)) or id(item) in seen:
            continue
        seen.add(id(item))
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_metadata(state: dict, path) -> dict:
    """Refuse metadata nested past :data:`MAX_METADATA_DEPTH` (a pickle of 50,000 nested lists made every
    ``repr`` of it a RecursionError) or a ``step`` that is no number; make the text fields text."""
    for key in [k for k in state if type(k) is str]:
        value = state[key]
        if _depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
            raise HypernetworkError(f"malformed metadata: {short_repr(key, 60)} is nested more than "
                                    f"{MAX_METADATA_DEPTH} levels deep", path)
        if key == "step" and value is not None and not isinstance(value, (int, float, str)):
            raise HypernetworkError(f"malformed metadata: step {short_repr(value)}", path)
        if key in _TEXT_KEYS and value is not None and not isinstance(value, str):
            state[key] = short_repr(value, 2000)
    return state


def _safetensors_to_state(handle, path) -> dict:
    header = _header(handle, path)
    keys = list(header.entries)
    if not _looks_like_hypernetwork_keys(keys):
        if header.metadata.get("format") == SAFETENSORS_FORMAT:
            raise HypernetworkError("malformed tensor names (expected WIDTH.k.* and WIDTH.v.*)", path)
        raise _not_a_hypernetwork(keys, path)
    try:
        tensors = safetensors_file.read_tensors(handle, header)
    except (safetensors_file.SafetensorsError, OSError) as exc:
        raise HypernetworkError(str(exc), path) from exc
    state: dict[Any, Any] = _check_metadata(_decode_metadata(header.metadata), path)
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


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()


def _read(path: Path, handle, map_location="cpu") -> dict:
    if os.fstat(handle.fileno()).st_size == 0:
        raise HypernetworkError("the file is empty", path)
    if path.suffix.lower() == ".safetensors":
        return _safetensors_to_state(handle, path)
    state = load_pickle(handle, path, map_location=map_location)
    if not isinstance(state, dict):
        raise NotAHypernetworkError(f"this file is not a hypernetwork (it holds a {type(state).__name__}, "
                                    "not a dict of attention widths)", path)
    if not any(type(key) is int for key in state):
        raise _not_a_hypernetwork(state.keys(), path)
    return _check_metadata(state, path)


def read_state(path) -> tuple[dict, str]:
    """Read a hypernetwork file into AUTOMATIC1111's dict shape; return it with the file's sha256.

    The file is opened once: hashed in 1 MiB blocks, then read from the same handle, so what was hashed is what
    was read. Memory: at most the tensors' bytes (no more than the file holds, nor 4 GiB) plus a pickle or
    header within the limits (:data:`LIMITS`, :data:`MAX_SAFETENSORS_HEADER`).

    Args:
        path: a ``.pt``, ``.ckpt`` or ``.safetensors`` hypernetwork file.

    Returns:
        ``(state, sha256)``: AUTOMATIC1111's dict (weights not yet checked against the structure: see
        :func:`checked_state`) and the file's hex sha256.

    Raises:
        HypernetworkError: any problem with the file (:class:`~extension.errors.UnsafeFileError`,
            :class:`~extension.errors.NotAHypernetworkError` among them), naming it.
    """
    path = Path(path)
    with _open(path) as handle:
        sha256 = _sha256(handle)
        return _read(path, handle), sha256


def metadata_of(state: dict) -> dict:
    """The non-weight entries of AUTOMATIC1111's dict (its string keys).

    Args:
        state: AUTOMATIC1111's dict.
    """
    return {key: value for key, value in state.items() if type(key) is str}


def checked_state(state: dict, path=None) -> tuple[HypernetworkConfig, dict[int, tuple[dict, dict]]]:
    """The config a state describes (AUTOMATIC1111's defaults for missing keys) and its module weights,
    each checked against that config's layout.

    Args:
        state: AUTOMATIC1111's dict, as :func:`read_state` returns it.
        path: the file the messages name, or None.

    Returns:
        ``(config, {width: (K weights, V weights)})`` with the weights keyed ``linear.N.*``.

    Raises:
        HypernetworkError: malformed metadata, a structure AUTOMATIC1111 could never have built, or weights
            that do not fit it; naming ``path``.
    """
    try:
        pairs: dict[int, tuple[dict, dict]] = {}
        for size, pair in state.items():
            if type(size) is not int:
                continue
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(sd, dict) for sd in pair):
                raise HypernetworkError(f"the entry for width {size} is not a (K, V) pair of state dicts")
            if size <= 0:
                raise HypernetworkError(f"width {size} is not a positive size")
            pairs[size] = pair
        if not pairs:
            raise NotAHypernetworkError("this file is not a hypernetwork (it has no attention-width entries)")
        config = HypernetworkConfig.from_metadata(metadata_of(state), sizes=sorted(pairs))
        checked = {size: (config.check_weights(size, k), config.check_weights(size, v))
                   for size, (k, v) in pairs.items()}
    except HypernetworkError as exc:
        raise exc.with_path(path) from exc.__cause__
    except (TypeError, ValueError, AttributeError) as exc:
        raise HypernetworkError(f"malformed metadata ({exc})", path) from exc
    return config, checked


def read_optimizer_state(path, shorthash: str | None) -> tuple[str, dict] | None:
    """``(optimizer name, state dict)`` from ``path.optim`` when its recorded hash is ``shorthash`` (the hash
    of the file beside it), else None. A sidecar that cannot be read is ignored with a warning.

    Args:
        path: the hypernetwork file; its sidecar is ``path.optim``.
        shorthash: the first 10 hex digits of that file's sha256, or None (then nothing is returned).

    Returns:
        ``(optimizer name, optimizer state dict)``, or None when there is no sidecar, it links outside the
        file's folder, cannot be read, or was written for another file.
    """
    sidecar = Path(str(path) + ".optim")
    if not sidecar.exists():
        return None
    if sidecar.is_symlink() and not sidecar.resolve().is_relative_to(Path(path).resolve().parent):
        warnings.warn(f"ignoring optimizer state: {sidecar} links to a file outside its folder")
        return None
    try:
        saved = load_pickle(sidecar, sidecar)
    except HypernetworkError as exc:
        warnings.warn(f"ignoring optimizer state: {exc}")
        return None
    if not isinstance(saved, dict) or shorthash is None or saved.get("hash") != shorthash:
        return None
    state = saved.get("optimizer_state_dict")
    if not isinstance(state, dict) or not state:
        return None
    name = saved.get("optimizer_name")
    return (name if isinstance(name, str) and name else "AdamW"), state


# -- metadata without weights ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HypernetworkInfo:
    """What a listing shows about a file, read without building the network.

    Args:
        name: the name stored in the file, else the file's stem.
        config: the structure its metadata describes, with the widths it has weights for.
        step: the training steps it holds.
        sd_checkpoint: the short hash of the checkpoint it was trained on, as stored.
        sd_checkpoint_name: that checkpoint's name, as stored.
        optional_info: the file's free-text note.
        format: ``"pt"`` or ``"safetensors"``.
        sha256: the file's hash, when known.
    """

    name: str
    config: HypernetworkConfig
    step: int
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    optional_info: str | None
    format: str
    sha256: str | None = None  # a listing never hashes (the library hashes in the background)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.config.sizes

    @property
    def layer_structure(self) -> tuple[float, ...]:
        return self.config.layer_structure

    @property
    def activation_func(self) -> str | None:
        return self.config.activation_func

    @property
    def add_layer_norm(self) -> bool:
        return self.config.add_layer_norm

    @property
    def use_dropout(self) -> bool:
        return self.config.use_dropout

    def as_dict(self) -> dict:
        """Everything known, flat (the config's fields beside the file's)."""
        out = {"name": self.name, **dataclasses.asdict(self.config)}
        out.update(step=self.step, sd_checkpoint=self.sd_checkpoint, sd_checkpoint_name=self.sd_checkpoint_name,
                   optional_info=self.optional_info, format=self.format, sha256=self.sha256)
        return out


def _info(config: HypernetworkConfig, metadata: dict, path: Path, fmt: str, sha256: str | None) -> HypernetworkInfo:
    try:
        step = int(metadata.get("step") or 0)
    except (TypeError, ValueError, OverflowError):
        raise HypernetworkError(f"malformed metadata: step {short_repr(metadata.get('step'))}", path) from None
    text = lambda key: None if metadata.get(key) is None else str(metadata.get(key))  # noqa: E731
    return HypernetworkInfo(name=text("name") or path.stem, config=config, step=step,
                            sd_checkpoint=text("sd_checkpoint"), sd_checkpoint_name=text("sd_checkpoint_name"),
                            optional_info=text("optional_info"), format=fmt, sha256=sha256)


def read_info(path) -> HypernetworkInfo:
    """Metadata of a hypernetwork file, checked as far as it can be without its weights: the header of a
    ``.safetensors`` (every entry's size and offsets), the zip directory and pickle of a ``.pt`` (its tensors'
    shapes against the structure it describes; no tensor data is read, nor the file hashed).

    Args:
        path: a ``.pt``, ``.ckpt`` or ``.safetensors`` hypernetwork file.

    Returns:
        A :class:`HypernetworkInfo` (its ``sha256`` is None).

    Raises:
        HypernetworkError: the file is unreadable, unsafe, not a hypernetwork, or its structure is malformed.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        with _open(path) as handle:
            state = _read(path, handle, map_location="meta")
        config, _ = checked_state(state, path)
        return _info(config, metadata_of(state), path, "pt", None)
    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != SAFETENSORS_FORMAT and not _looks_like_hypernetwork_keys(header):
        raise _not_a_hypernetwork(header, path)
    meta = _check_metadata(_decode_metadata(metadata), path)
    sizes = sorted({int(key.split(".", 1)[0]) for key in header})
    if not sizes:
        raise NotAHypernetworkError("this file is not a hypernetwork (it has no attention-width entries)", path)
    try:
        config = HypernetworkConfig.from_metadata(meta, sizes=sizes)
    except HypernetworkError as exc:
        raise exc.with_path(path) from None
    return _info(config, meta, path, "safetensors", None)


# -- writing -----------------------------------------------------------------------------------------------
def write_state(state: dict, path) -> str:
    """Write AUTOMATIC1111's dict to ``path``, atomically: ``.safetensors`` with the metadata in its header,
    otherwise a ``.pt`` that AUTOMATIC1111 1.8 and 1.10 open. Returns the new file's sha256.

    Args:
        state: AUTOMATIC1111's dict (``{width: (K state dict, V state dict), "name": ..., ...}``).
        path: the file to write; its suffix chooses the format.

    Returns:
        The hex sha256 of the file written.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        tensors = {f"{size}.{'kv'[i]}.{key}": tensor
                   for size, pair in state.items() if type(size) is int
                   for i, sd in enumerate(pair) for key, tensor in sd.items()}
        metadata = {"format": SAFETENSORS_FORMAT}
        metadata.update({key: json.dumps(value) for key, value in metadata_of(state).items()})
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        safe_pickle.save(state, path)
    return sha256_file(path)


def write_optimizer_state(path, optimizer_name: str, shorthash: str, optimizer_state_dict: dict) -> Path:
    """Write ``path.optim`` (AUTOMATIC1111's sidecar), stamped with ``shorthash``: the hash of the file at
    ``path`` it belongs to (AUTOMATIC1111 stamps the hash of the file the network was loaded from, so its log
    copies never resume; we stamp the file beside it).

    Args:
        path: the hypernetwork file the sidecar belongs to.
        optimizer_name: the ``torch.optim`` class name.
        shorthash: the first 10 hex digits of the sha256 of the file at ``path``.
        optimizer_state_dict: ``optimizer.state_dict()``.

    Returns:
        The sidecar's path, ``path.optim`` (written atomically).
    """
    sidecar = Path(str(path) + ".optim")
    safe_pickle.save({"optimizer_name": optimizer_name, "hash": shorthash,
                      "optimizer_state_dict": optimizer_state_dict}, sidecar)
    return sidecar
