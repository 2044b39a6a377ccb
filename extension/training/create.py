"""Create a hypernetwork file: AUTOMATIC1111's Create panel, on :class:`HypernetworkConfig`.

As AUTOMATIC1111: the name keeps letters, digits and ``._- `` (other characters are dropped), the layer
and dropout structures are comma-separated numbers, an existing file is kept unless ``overwrite``. Fixed
here: a name that would leave the folder or ends up empty is refused with a message; ``activate_output`` can
be set; a dropout structure sent as a list is used (AUTOMATIC1111 silently zeroed it); an unknown weight init
is refused by name instead of a ``KeyError``; the answer names the file written (AUTOMATIC1111 said
"Created: None"). New files are ``.safetensors`` unless ``.pt`` is asked for (AUTOMATIC1111 opens both).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import HypernetworkError
from ..hypernetwork import Hypernetwork, HypernetworkConfig
from ..library import HypernetworkLibrary
from .config import TrainingError

FORMATS = {"safetensors": ".safetensors", "pt": ".pt"}


class NameTaken(TrainingError):
    """Create refused: a network of that name exists (the API answers 409 Conflict)."""


def clean_name(name) -> str:
    """The file name AUTOMATIC1111 would make of ``name``; :class:`TrainingError` when it is empty or a path.

    Args:
        name: the name as the user gave it.

    Returns:
        ``name`` stripped, keeping letters, digits and ``._-`` and spaces.
    """
    if not isinstance(name, str):
        raise TrainingError(f"name must be text, got {name!r}")
    text = name.strip()
    if "/" in text or "\\" in text or text in (".", "..") or text.startswith(".") or "\0" in text:
        raise TrainingError(f"name {name!r} would leave the hypernetworks folder; give a plain name")
    cleaned = "".join(c for c in text if c.isalnum() or c in "._- ").strip()
    if not cleaned or cleaned.startswith("."):
        raise TrainingError(f"name {name!r} is empty once cleaned (letters, digits and ._- only)")
    return cleaned


def create_hypernetwork(name, library: HypernetworkLibrary, *, sizes, layer_structure="1, 2, 1",
                        activation_func="linear", weight_init="Normal", add_layer_norm=False, use_dropout=False,
                        dropout_structure="0, 0, 0", activate_output=False, overwrite=False,
                        file_format: str = "safetensors") -> Path:
    """Write a fresh network into ``library``'s folder and refresh the listing; returns its path.

    Args:
        name: the network's name (its file stem, and what ``<hypernet:NAME>`` calls it).
        library: the hypernetworks folder.
        sizes: the attention widths that get modules (the loaded model's widths, by default).
        layer_structure: e.g. ``"1, 2, 1"`` or ``[1, 2, 1]``.
        activation_func: a name from AUTOMATIC1111's list (``linear``, ``relu``, ``swish``...).
        weight_init: Normal, KaimingUniform, KaimingNormal, XavierUniform or XavierNormal.
        add_layer_norm, use_dropout, activate_output: AUTOMATIC1111's switches.
        dropout_structure: one probability per layer-structure entry; used when ``use_dropout``.
        overwrite: replace an existing file of that name.
        file_format: ``"safetensors"`` (default) or ``"pt"``.

    Raises:
        TrainingError: a bad name, an existing file without ``overwrite``, or a structure that cannot be
            built (the message says which).
    """
    stem = clean_name(name)
    if file_format not in FORMATS:
        raise TrainingError(f"format must be safetensors or pt, got {file_format!r}")
    library.refresh()
    path = library.root / f"{stem}{FORMATS[file_format]}"
    existing = library.get(stem)
    if not overwrite and (path.exists() or existing is not None):
        where = existing.path if existing is not None else path
        raise NameTaken(f"a hypernetwork named {stem!r} already exists ({where}); tick overwrite to replace it")
    if overwrite and existing is not None and existing.path != path:
        raise NameTaken(f"{existing.path} has the name {stem!r} in another format; remove it or choose "
                            "another name")
    try:
        config = HypernetworkConfig(
            sizes=sizes, layer_structure=layer_structure, activation_func=activation_func or "linear",
            weight_init=weight_init or "Normal", add_layer_norm=add_layer_norm, use_dropout=use_dropout,
            dropout_structure=(dropout_structure if use_dropout else None), activate_output=activate_output)
    except HypernetworkError as exc:
        raise TrainingError(str(exc)) from None
    if not config.sizes:
        raise TrainingError("choose at least one module size (the attention widths the network acts on)")
    Hypernetwork.from_config(config, name=stem).save(path)
    library.refresh()
    return path
