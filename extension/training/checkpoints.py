"""Where a run saves, and how: log copies ``NAME-STEP``, the file in the models folder, ``.optim`` sidecars.

- The log folder is ``<log_directory>/<YYYY-MM-DD>/<name>/`` (dated by the start day), with
  ``hypernetworks/`` and ``images/``, as AUTOMATIC1111 lays it out.
- ``hypernetworks/NAME-STEP.pt`` (or ``.safetensors``: the format of the file being trained) holds exactly
  STEP steps (AUTOMATIC1111's were named one step ahead).
- Every save also replaces the file in the models folder, so the newest saved state is always the one a
  resume starts from. Each ``.optim`` sidecar records the hash of the file beside it (AUTOMATIC1111 recorded
  the hash of the file the run started from, so its log copies never resumed).
- Every file is written atomically: a crash mid-save leaves the previous file as it was.
- ``name`` inside every file is the network's base name, never ``NAME-STEP``.
"""
from __future__ import annotations

import datetime
from pathlib import Path

from ..hypernetwork import Hypernetwork


def log_folder(log_directory: Path, name: str, day: datetime.date | None = None) -> Path:
    """``<log_directory>/<YYYY-MM-DD>/<name>/``."""
    return Path(log_directory) / (day or datetime.date.today()).isoformat() / name


def copy_path(folder: Path, name: str, step: int, suffix: str) -> Path:
    """The log copy of the network at ``step``: ``folder/hypernetworks/NAME-STEP<suffix>``."""
    return Path(folder) / "hypernetworks" / f"{name}-{step}{suffix}"


def preview_path(folder: Path, name: str, step: int) -> Path:
    """``folder/images/NAME-STEP.png``."""
    return Path(folder) / "images" / f"{name}-{step}.png"


def save(network: Hypernetwork, path: Path, optimizer_state: dict | None) -> Path:
    """Write ``network`` (its ``step`` stamped inside) to ``path`` and, with ``optimizer_state``, the sidecar
    ``path.optim`` for it; both atomically. The network's ``filename`` is left as it was (the models-folder
    file it is trained from)."""
    filename, sha256 = network.filename, network.sha256
    network.save(path, optimizer_state_dict=optimizer_state)
    if Path(path).resolve() != Path(filename or "").resolve():
        network.filename, network.sha256 = filename, sha256
    return Path(path)
