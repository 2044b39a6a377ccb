"""The hypernetworks folder inside a host, and the library over it (one per folder, for the whole process).

The folder is the host's ``--hypernetwork-dir`` (Forge, AUTOMATIC1111 and reForge define it; in Forge Classic and
Neo, which removed it, ``preload.py`` adds the same flag), else ``MODELS/hypernetworks``. The library is a cache of
the folder's listing and loaded files, as the host keeps its own model lists: every request asks it by name and
gets read-only networks, so nothing one generation activates is seen by another.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ...library import HypernetworkLibrary

_libraries: dict[Path, HypernetworkLibrary] = {}
_lock = threading.Lock()


def hypernetwork_dir() -> Path:
    from modules import shared

    configured = getattr(shared.cmd_opts, "hypernetwork_dir", None)
    if configured:
        return Path(configured)
    from modules import paths

    return Path(paths.models_path) / "hypernetworks"


def library() -> HypernetworkLibrary:
    """The library over :func:`hypernetwork_dir` (made, and the folder created, on first use)."""
    root = hypernetwork_dir().expanduser().resolve()
    with _lock:
        found = _libraries.get(root)
        if found is None:
            os.makedirs(root, exist_ok=True)
            found = _libraries[root] = HypernetworkLibrary(root)
        return found
