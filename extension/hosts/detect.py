"""Which web UI runs this process, found from what it has imported: no host module is imported here.

AUTOMATIC1111-family hosts import ``modules.scripts`` before they load an extension's scripts, and the
standalone host has no top-level ``modules`` package. Among them:

- ``forge``: lllyasviel's Forge and Forge Neo (the newer backend, ``backend.patcher``);
- ``forge-classic``: Forge Classic and reForge (the older backend, ``ldm_patched`` with ``modules_forge``);
- ``a1111``: AUTOMATIC1111 itself (neither).
"""
from __future__ import annotations

import importlib.util
import sys

FORGE = "forge"
FORGE_CLASSIC = "forge-classic"
A1111 = "a1111"


def _has(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def running_host() -> str | None:
    """``"forge"``, ``"forge-classic"``, ``"a1111"``, or None in the standalone host (or a plain interpreter)."""
    if "modules.scripts" not in sys.modules or "modules.script_callbacks" not in sys.modules:
        return None
    if _has("modules_forge"):
        return FORGE_CLASSIC if _has("ldm_patched") else FORGE
    return A1111
