"""The extension inside a real Forge Classic (the older Forge backend, ``ldm_patched``, that reForge shares): its own
venv from its own pins (gradio 3.41, transformers 4.30), headless on CPU on 127.0.0.1, with the random-weights SD 1.5
checkpoint at the real shapes.

Classic removed hypernetworks entirely (no folder flag, routes, page or handler): everything here is the
extension's own. The checks of the Forge host tests that apply to Classic run here on it, imported from
``tests/test_host_forge.py`` (their fixtures start servers of :data:`host`); Classic's own UNet module gets its
own number-for-number check. Without a Classic tree (``FORGE_CLASSIC_DIR``, or
``../shared/hosts/forge-classic-*.tar.gz``) these tests are skipped with the reason, except under CI, where they
fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hosts.host_env import FORGE_CLASSIC
from tests.hosts.host_server import checkpoint
from tests.test_host_forge import *  # noqa: F401,F403  (its __all__: the fixtures and every check that applies)


@pytest.fixture(scope="module")
def host():
    return FORGE_CLASSIC


@pytest.fixture(scope="module")
def other_extensions() -> dict:
    """reForge, on this same backend, still registers a ``hypernet`` handler that applies nothing and a
    Hypernetworks page; it cannot be started here. A stand-in registers the same two before any callback of ours
    runs (``tests/hosts/reforge_like_builtins.py``): the cards test then finds one Hypernetworks tab, and every tag
    test finds our handler in its place."""
    script = (Path(__file__).parent / "hosts" / "reforge_like_builtins.py").read_text()
    return {"a-reforge-like-builtins": {"scripts/reforge_like_builtins.py": script}}


def test_a_builtin_handler_and_page_like_reforges_are_replaced(server):
    """The stand-in's handler and page were registered, and ours replaced both: a tag applies through ours, the
    stand-in's never runs, the browser test counts one Hypernetworks tab, and the log says what was replaced if the
    stand-in came after us."""

    assert (server.tree / "extensions" / "a-reforge-like-builtins" / "scripts").is_dir()
    _, infotext = txt2img(server, "a cat <hypernet:style_relu:1>")
    assert "Hypernet hashes" in infotext
    assert "REFORGE-LIKE HYPERNET HANDLER RAN" not in server.log()


def test_classics_unet_with_the_patch_equals_automatic1111s_way(server, tmp_path):
    """Same latent, sigma and conditioning: Classic's UNet module (``ldm_patched``) with our patches against the same
    module with AUTOMATIC1111's pre-hooks on to_k/to_v, on SD 1.5 at real shapes. Bounds as for Forge: 1e-6 of the
    output's largest magnitude for the patch, 1e-5 for affine networks folded into the projections."""
    assert set(unet_equality(server, tmp_path, "classic_unet_equality.py", str(checkpoint()))) == {"sd1"}


def test_the_folder_flag_and_setting_are_the_extensions_own(server):
    """Classic has no ``--hypernetwork-dir``: the extension's preload adds it (the tests pass it), and its setting
    is in Classic's settings."""
    assert "--hypernetwork-dir" in server.command()
    server.api("POST", "options", {"sd_hypernetworks_dir": " "})  # the host keeps only options it knows
    # (GET /options answers through a model built before extensions load: the saved settings show it)
    assert json.loads((server.tree / "config.json").read_text())["sd_hypernetworks_dir"] == " "
    server.api("POST", "options", {"sd_hypernetworks_dir": ""})
    assert {item["name"] for item in server.api("GET", "hypernetworks")} >= {"style_relu", "style_linear"}
