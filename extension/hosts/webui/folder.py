"""The hypernetworks folder inside a host, and the library over it (one per folder, for the whole process).

The folder, first found of:

- ``--hypernetwork-dir`` given on the command line (Forge, AUTOMATIC1111 and reForge define the flag; in Forge
  Classic and Neo, which removed it, ``preload.py`` adds the same one);
- the setting "Hypernetworks folder" (:data:`FOLDER_SETTING`, the extension's own, in the Hypernetworks section);
- ``MODELS/hypernetworks``, the host's models folder (the flag's default).

The library is a cache of
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
FOLDER_SETTING = "sd_hypernetworks_dir"


def default_dir() -> Path:
    from modules import paths_internal

    return Path(paths_internal.models_path) / "hypernetworks"


def hypernetwork_dir() -> Path:
    from modules import shared

    default = default_dir()
    configured = getattr(shared.cmd_opts, "hypernetwork_dir", None)
    if configured and Path(configured).expanduser().resolve() != default.resolve():
        return Path(configured).expanduser()
    setting = str(getattr(shared.opts, "data", {}).get(FOLDER_SETTING) or "").strip()
    return Path(setting).expanduser() if setting else default


def library() -> HypernetworkLibrary:
    """The library over :func:`hypernetwork_dir` (made, and the folder created, on first use)."""
    root = hypernetwork_dir().expanduser().resolve()
    with _lock:
        found = _libraries.get(root)
        if found is None:
            os.makedirs(root, exist_ok=True)
            found = _libraries[root] = HypernetworkLibrary(root)
        return found
