"""Entry point: ``python launch.py`` serves the UI; ``python launch.py --help`` lists every mode and its flags.

The first start creates ``venv/`` beside this file and installs the pinned requirements into it
(see install.py); later starts re-use it and install only what is missing. The modes and their flags are
:mod:`extension.cli`'s, run inside that environment.

Run from another interpreter, this process *becomes* the environment's Python (``os.execv``), so the process
id you started is the server: ``kill PID`` stops it. Windows has no exec that keeps the process, so there the
environment's Python runs as a child and Ctrl+C / termination are passed on to it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV_DIR") or ROOT / "venv")
# Set before re-running in the environment: if that Python still is not the environment's, stop, not loop.
REEXEC_MARK = "SD_WEBUI_LAUNCH_REEXEC"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def run_in_venv(argv: list[str]) -> int:
    """Run ``launch.py argv`` with the environment's Python: in this process on POSIX, as a child elsewhere."""
    if os.environ.get(REEXEC_MARK) == "1":
        raise SystemExit(f"launch.py: {venv_python()} does not run in {VENV} (sys.prefix is {sys.prefix}); "
                         "delete that folder to have it created again")
    if not venv_python().exists():
        print(f"launch.py: creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    os.environ[REEXEC_MARK] = "1"
    command = [str(venv_python()), str(ROOT / "launch.py"), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(command[0], command)  # does not return
    return run_child(command)


def run_child(command: list[str]) -> int:
    """Windows: run ``command`` and wait. Ctrl+C reaches the child from the console itself (so it is ignored
    here, where it would interrupt the wait); SIGTERM and SIGBREAK sent to this process terminate the child."""
    child = subprocess.Popen(command)

    def forward(signum, _frame):
        if signum != signal.SIGINT:
            child.terminate()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    return child.wait()


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("SKIP_VENV") != "1" and not in_venv():
        return run_in_venv(argv)
    os.environ.pop(REEXEC_MARK, None)  # not inherited by what the modes start (the test suite's own launches)
    if os.environ.get("SKIP_INSTALL") != "1" and "--skip-install" not in argv:
        subprocess.run([sys.executable, str(ROOT / "install.py")], check=True)
    sys.path.insert(0, str(ROOT))
    from extension.cli import main as cli_main

    return cli_main([a for a in argv if a != "--skip-install"])


if __name__ == "__main__":
    sys.exit(main())
