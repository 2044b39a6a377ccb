"""Reading a single-file checkpoint's tensors (``.safetensors``, or a ``.ckpt`` pickle read safely).

Pickles go through :mod:`extension.safe_pickle` (with its checkpoint limits), ``.safetensors`` through
:mod:`extension.safetensors_file` (the header checked whole before any tensor is allocated). A few
training-metadata globals that old ``.ckpt`` files carry (the PyTorch Lightning callback state, numpy
scalars) are replaced by inert placeholders, as AUTOMATIC1111's own safe unpickler allows them. Every failure
is a :class:`~extension.errors.ModelError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import safe_pickle, safetensors_file
from ..errors import ModelError
from .detect import SD1_TEXT_PREFIX, describe_non_checkpoint


# A checkpoint's .safetensors header lists a few thousand tensors (SDXL: ~300 KB); 8 MiB leaves room for
# large models and embedded metadata, and bounds what parsing it allocates.
MAX_SAFETENSORS_HEADER = 8 << 20


class _Inert:
    """Stands in for harmless training metadata in old ``.ckpt`` pickles; builds nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert(*args, **kwargs):
    return None


# Globals that AUTOMATIC1111's own safe unpickler accepts in checkpoints and that carry no weights: the
# PyTorch Lightning callback state and numpy scalars (``global_step``, scores). They are mapped to inert
# placeholders, so allowing them lets no code run.
_INERT_GLOBALS = [
    (_Inert, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_inert, "numpy.core.multiarray.scalar"),
    (_inert, "numpy._core.multiarray.scalar"),
    (_Inert, "numpy.dtype"),
] + [(_Inert, f"numpy.dtypes.{n}DType") for n in (
    "Bool", "Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float16", "Float32",
    "Float64", "Long", "ULong", "LongLong", "ULongLong")]


def _load_pickle_checkpoint(path: Path) -> dict:
    try:
        return safe_pickle.load(path, allowed_globals=_INERT_GLOBALS, limits=safe_pickle.CHECKPOINT)
    except safe_pickle.PickleRefused as exc:
        raise ModelError(f"{path}: {exc}. Convert it to .safetensors with a tool you trust.") from exc
    except safe_pickle.PickleUnreadable as exc:
        raise ModelError(f"{path}: {exc}") from exc


def _safetensors(path: Path, names_only: bool = False):
    try:
        with open(path, "rb") as handle:
            header = safetensors_file.read_header(handle, MAX_SAFETENSORS_HEADER)
            if names_only:
                return header
            return safetensors_file.read_tensors(handle, header)
    except (safetensors_file.SafetensorsError, OSError) as exc:
        raise ModelError(f"{path}: not a readable .safetensors file: {exc}") from exc


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, on the CPU, keyed as in the file (``state_dict`` unwrapped).

    Nothing runs from a pickle, a zip bomb or a lying header is refused before anything is allocated, and
    reading allocates at most the tensors' bytes, which are never more than the file holds (see
    :mod:`extension.safe_pickle`, :mod:`extension.safetensors_file`).

    Args:
        path: a ``.safetensors`` or ``.ckpt`` checkpoint.

    Returns:
        ``{key: tensor}``, old SD 1.x CLIP keys renamed (:func:`normalize_keys`).

    Raises:
        ModelError: an unreadable or unsafe file, or one that is not a Stable Diffusion checkpoint.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return normalize_keys(_safetensors(path))
    state = _load_pickle_checkpoint(path)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a checkpoint (the file holds a {type(state).__name__}, not a dict of tensors)")
    looks = describe_non_checkpoint(state)
    if looks:
        raise ModelError(f"{path}: not a Stable Diffusion checkpoint: {looks}")
    return normalize_keys({k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)})


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_folder_weights(folder) -> None:
    """Check every weight file of a diffusers folder as a single file is checked, before diffusers reads any:
    pickles (``.bin``...) against :data:`safe_pickle.CHECKPOINT` (nothing run, no bomb unpacked),
    ``.safetensors`` headers whole; links that leave the folder are refused.

    Args:
        folder: the diffusers folder.

    Raises:
        ModelError: naming the first file that fails.
    """
    folder = Path(folder)
    root = folder.resolve()
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in PICKLE_SUFFIXES and suffix != ".safetensors" and suffix != ".json":
            continue
        if path.is_symlink():
            try:
                inside = path.resolve(strict=True).is_relative_to(root)
            except (OSError, RuntimeError):
                inside = False
            if not inside:
                raise ModelError(f"{path}: a link to something outside the model's folder; it was not read")
        if not path.is_file():
            continue
        if suffix == ".json":
            if path.stat().st_size > MAX_SAFETENSORS_HEADER:
                raise ModelError(f"{path}: {path.stat().st_size:,} bytes, more than any config file needs")
            continue
        try:
            with open(path, "rb") as handle:
                if suffix == ".safetensors":
                    safetensors_file.read_header(handle, MAX_SAFETENSORS_HEADER)
                else:
                    safe_pickle.check(handle, safe_pickle.CHECKPOINT, [name for _, name in _INERT_GLOBALS])
        except safe_pickle.PickleRefused as exc:
            raise ModelError(f"{path}: {exc}. Convert it to .safetensors with a tool you trust.") from exc
        except (safe_pickle.PickleUnreadable, safetensors_file.SafetensorsError, OSError) as exc:
            raise ModelError(f"{path}: {exc}") from exc


def normalize_keys(state: dict) -> dict:
    """Old SD 1.x files name CLIP keys without ``text_model.``; AUTOMATIC1111 renames them, so do we.

    Args:
        state: a single file's state dict.

    Returns:
        ``state`` itself when no key needs renaming, else a new dict.
    """
    old = tuple(SD1_TEXT_PREFIX + part for part in ("embeddings.", "encoder.", "final_layer_norm."))
    if not any(k.startswith(old) for k in state):
        return state
    return {(SD1_TEXT_PREFIX + "text_model." + k[len(SD1_TEXT_PREFIX):] if k.startswith(old) else k): v
            for k, v in state.items()}


def read_shapes(path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a single file; for ``.safetensors`` from its header alone (no weights read).

    Args:
        path: a ``.safetensors`` or ``.ckpt`` checkpoint (a ``.ckpt`` is read whole).

    Raises:
        ModelError: an unreadable or unsafe file.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
    return {key: entry.shape for key, entry in _safetensors(path, names_only=True).entries.items()}
