"""``launch.py`` itself: the flags reach the right mode in the project's environment."""
from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from conftest import ROOT


def launch(*args: str, cwd=ROOT, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "VENV_DIR": sys.prefix, "SKIP_INSTALL": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_generate_from_the_command_line_writes_pngs_with_infotext(tmp_path):
    result = launch("--generate", "a red circle on a blue background <hypernet:demo:1>", "--steps", "3",
                    "--seed", "7", "--batch-size", "2", "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    paths = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(paths) == 2
    for path in paths:
        info = Image.open(path).text["parameters"]
        assert "<hypernet:demo:1>" in info and "Hypernet hashes:" in info and "Steps: 3" in info


def test_unknown_flag_value_is_a_clear_error(tmp_path):
    result = launch("--generate", "x", "--steps", "many", "--outdir", str(tmp_path))
    assert result.returncode != 0 and "steps" in result.stderr
