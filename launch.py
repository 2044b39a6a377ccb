"""Entry point: ``python launch.py`` serves the UI, ``python launch.py --test`` runs the test suite.

The first start creates ``venv/`` beside this file and installs the pinned requirements into it
(see install.py); later starts re-use it and install only what is missing. Every other flag is
handled by :mod:`extension.cli` inside that environment.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV_DIR") or ROOT / "venv")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main() -> int:
    if os.environ.get("SKIP_VENV") != "1" and not in_venv():
        if not venv_python().exists():
            print(f"launch.py: creating virtual environment in {VENV}", flush=True)
            venv.EnvBuilder(with_pip=True).create(VENV)
        return subprocess.call([str(venv_python()), str(ROOT / "launch.py"), *sys.argv[1:]])
    if os.environ.get("SKIP_INSTALL") != "1" and "--skip-install" not in sys.argv:
        subprocess.run([sys.executable, str(ROOT / "install.py")], check=True)
    sys.path.insert(0, str(ROOT))
    from extension.cli import main as cli_main

    return cli_main([a for a in sys.argv[1:] if a != "--skip-install"])


if __name__ == "__main__":
    sys.exit(main())
