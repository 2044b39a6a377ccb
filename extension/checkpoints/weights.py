"""Reading a single-file checkpoint's tensors (``.safetensors``, or a ``.ckpt`` pickle read safely).

Pickles go through :mod:`extension.safe_pickle`; a few training-metadata globals that old ``.ckpt`` files
carry (the PyTorch Lightning callback state, numpy scalars) are replaced by inert placeholders, as
AUTOMATIC1111's own safe unpickler allows them. Every failure is a :class:`~extension.errors.ModelError`
naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import safe_pickle
from ..errors import ModelError
from .detect import SD1_TEXT_PREFIX, describe_non_checkpoint


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
        return safe_pickle.load(path, allowed_globals=_INERT_GLOBALS)
    except safe_pickle.PickleRefused as exc:
        raise ModelError(f"{path}: {exc}. Convert it to .safetensors with a tool you trust.") from exc
    except safe_pickle.PickleUnreadable as exc:
        raise ModelError(f"{path}: {exc}") from exc


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, on the CPU, keyed as in the file (``state_dict`` unwrapped)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            return normalize_keys(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError, OSError, ...
            raise ModelError(f"{path}: not a readable .safetensors file, truncated or corrupt "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    state = _load_pickle_checkpoint(path)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a checkpoint (the file holds a {type(state).__name__}, not a dict of tensors)")
    looks = describe_non_checkpoint(state)
    if looks:
        raise ModelError(f"{path}: not a Stable Diffusion checkpoint: {looks}")
    return normalize_keys({k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)})


def normalize_keys(state: dict) -> dict:
    """Old SD 1.x files name CLIP keys without ``text_model.``; AUTOMATIC1111 renames them, so do we."""
    old = tuple(SD1_TEXT_PREFIX + part for part in ("embeddings.", "encoder.", "final_layer_norm."))
    if not any(k.startswith(old) for k in state):
        return state
    return {(SD1_TEXT_PREFIX + "text_model." + k[len(SD1_TEXT_PREFIX):] if k.startswith(old) else k): v
            for k, v in state.items()}


def read_shapes(path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a single file; for ``.safetensors`` from its header alone (no weights read)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:
        raise ModelError(f"{path}: not a readable .safetensors file, truncated or corrupt "
                         f"({type(exc).__name__}: {str(exc)[:300]})") from exc
