"""The folders training may read and write: confined to roots named on the command line (``--train-data-dir``,
one or more; default the project folder).

A directory parameter (``data_root``, ``log_directory``) is resolved as training resolves it (absolute as given,
relative to the first root), then by its real path (``..`` and symbolic links followed), and must lie in one
of the roots; otherwise :class:`OutsideRoots` (a ``ValueError``) says so, the same way whether or not the
folder exists, so a refusal tells nothing about what is on the disk. The server (UI and REST API) and the
training command line both pass their roots to :func:`extension.training.train_hypernetwork`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from . import paths

FLAG = "--train-data-dir"


class OutsideRoots(ValueError):
    """A directory parameter that names a folder outside the training roots (or is not a path at all)."""


def training_roots(roots: Iterable | None = None) -> tuple[Path, ...]:
    """The roots as real absolute paths, duplicates dropped, order kept; none given: the project folder.

    Args:
        roots: the ``--train-data-dir`` values (one path, several, or None); empty entries are skipped.

    Returns:
        At least one root; ``~`` expanded, ``..`` and links resolved.
    """
    if roots is None or isinstance(roots, (str, os.PathLike)):
        roots = [roots] if roots is not None else []
    out: list[Path] = []
    for root in roots:
        if root is None or not str(root).strip():
            continue
        real = Path(os.path.realpath(Path(str(root)).expanduser()))
        if real not in out:
            out.append(real)
    return tuple(out) or (Path(os.path.realpath(paths.ROOT)),)


def confine_dir(value, roots: Sequence[Path] | None, field: str) -> Path:
    """The real path of directory parameter ``value`` if it lies in one of ``roots``; :class:`OutsideRoots`
    otherwise. Relative paths (and an empty one) are relative to the first root.

    Args:
        value: the parameter's value (a path; None or empty means the first root).
        roots: the training roots (:func:`training_roots` is applied), or None for the project folder.
        field: the parameter's name, for the message.

    Returns:
        The real path (links and ``..`` resolved); it need not exist.

    Raises:
        OutsideRoots: the real path lies outside every root, or ``value`` is not a path; the message is the same
            whether or not the folder exists.
    """
    roots = training_roots(roots)
    text = str(value if value is not None else "").strip() or "."  # empty: the first root, as training reads it
    if "\0" in text:
        raise OutsideRoots(f"{field}: {text!r} is not a path")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        where = ", ".join(str(root) for root in roots)
        raise OutsideRoots(f"{field}: {text!r} is outside the folders training may use ({where}); the server "
                           f"allows more with {FLAG} DIR")
    return real


__all__ = ["FLAG", "OutsideRoots", "confine_dir", "training_roots"]
