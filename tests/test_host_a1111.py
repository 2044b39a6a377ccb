"""The extension inside a real AUTOMATIC1111 v1.8.0: its own venv from its own pins (gradio 3.41, transformers 4.30,
torch 2.14.1), headless on CPU on 127.0.0.1 with its CI's flags, the random-weights SD 1.5 checkpoint at the real
shapes beside a ``NAME.yaml`` pointing its text encoder at a local folder (``tests/hosts/a1111_model.py``).

AUTOMATIC1111 applies ``.pt`` hypernetworks itself; the extension replaces its handler, page and routes, and its
own Train tab stays. The checks of the Forge host tests that apply here run on it, imported from
``tests/test_host_forge.py``; the numbers are checked against AUTOMATIC1111's own code: a ``.pt`` draws the same
pixels through the extension as through the bare host. Without a tree (``A1111_DIR``, or
``../shared/hosts/a1111-v*.tar.gz``) these tests are skipped with the reason, except under CI, where they fail.
"""
from __future__ import annotations

import pytest

from tests.hosts.host_env import A1111
from tests.test_host_forge import *  # noqa: F401,F403  (its __all__: the fixtures and every check that applies)


@pytest.fixture(scope="module")
def host():
    return A1111


def test_a_pt_file_draws_automatic1111s_own_pixels(server, bare_images):
    """The same ``.pt`` files (a linear and a ReLU network, in a subfolder and not), through the extension's safe
    loader and handler, give the image AUTOMATIC1111's own loading and handler give, to the bit."""
    assert txt2img(server, "a cat <hypernet:style_linear:0.7>")[0] == digest(bare_images["pt_linear"])
    assert txt2img(server, "a cat <hypernet:relu_pt:0.8>")[0] == digest(bare_images["pt_relu"])
    assert digest(bare_images["pt_relu"]) != digest(bare_images["plain"])  # the host's own applies them


def test_one_hypernetworks_page_and_automatic1111s_own_train_tab_stay(server):
    """The built-in Hypernetworks page is replaced, not doubled (the browser test counts the tab too), and the
    settings list every file where the host's own listed ``.pt`` only."""
    options = server.api("GET", "options")
    assert "sd_hypernetwork" in options
    listed = {item["name"] for item in server.api("GET", "hypernetworks")}
    assert {"style_relu", "relu_pt", "old_style"} <= listed  # .safetensors and .ckpt too
