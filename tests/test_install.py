"""The install step: every requirement pinned, and this environment holds exactly those pins."""
from __future__ import annotations

import subprocess
import sys

import install
from conftest import ROOT


def test_every_requirement_is_pinned_and_installed():
    pins = install.read_pins()
    assert {"diffusers", "transformers", "gradio", "safetensors"} <= set(pins)
    assert install.missing(pins) == [], "the environment differs from requirements.txt"
    assert install.missing({"torch": install.TORCH_PIN.split("==")[1]}) == []


def test_unpinned_line_is_refused(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("diffusers>=0.40\n")
    try:
        install.read_pins(requirements)
    except SystemExit as exc:
        assert "pinned" in str(exc)
    else:
        raise AssertionError("an unpinned requirement was accepted")


def test_second_install_installs_nothing():
    result = subprocess.run([sys.executable, str(ROOT / "install.py")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout
