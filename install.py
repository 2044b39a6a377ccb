"""Install what the project needs into the running interpreter, and only what is missing.

torch comes first and pinned (``torch==2.13.0``); ``TORCH_COMMAND`` overrides that step as in
AUTOMATIC1111, e.g. ``TORCH_COMMAND="pip install torch==2.13.0 --index-url ..."`` for a CUDA build.
Everything else is read from ``requirements.txt`` (every entry pinned with ``==``).

Run by a host web UI (Forge, AUTOMATIC1111: they run every extension's ``install.py`` at start, with the host's
own Python and its folder first on ``PYTHONPATH``), it installs nothing: inside a host the extension runs on the
host's packages, and never installs over its torch, gradio or diffusers. What needs this project's pinned stack
(training) runs in ``venv/`` beside this file, which ``launch.py`` makes on first use.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REQUIREMENTS = ROOT / "requirements.txt"
TORCH_PIN = "torch==2.13.0"


def read_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """Return ``{distribution name: version}`` for every ``name==version`` line of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        if match is None:
            raise SystemExit(f"{path.name}: every requirement must be pinned as name==version, got {line!r}")
        pins[match.group(1)] = match.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing(pins: dict[str, str]) -> list[str]:
    """The pins whose installed version differs (a local build tag such as +cpu counts as the same)."""
    out = []
    for name, version in pins.items():
        have = installed_version(name)
        if have is None or have.split("+", 1)[0] != version:
            out.append(f"{name}=={version}")
    return out


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args], check=True)


def install_torch() -> None:
    command = os.environ.get("TORCH_COMMAND")
    if command:
        if installed_version("torch") is None:
            print(f"install.py: installing torch with TORCH_COMMAND: {command}", flush=True)
            args = shlex.split(command)
            if args[:2] == ["pip", "install"]:
                args = [sys.executable, "-m", "pip", "install", *args[2:]]
            subprocess.run(args, check=True)
        return
    if missing({"torch": TORCH_PIN.split("==")[1]}):
        print(f"install.py: installing {TORCH_PIN}", flush=True)
        pip(TORCH_PIN)


def host_root() -> Path | None:
    """The host web UI that runs this file as its extension installer, if one does: the first ``PYTHONPATH``
    folder with ``modules/launch_utils.py`` (how Forge and AUTOMATIC1111 start an installer), unless this
    interpreter is this project's own ``venv/`` (``launch.py`` runs this file from there)."""
    own_venv = Path(os.environ.get("VENV_DIR") or ROOT / "venv").resolve()
    if Path(sys.prefix).resolve() == own_venv:
        return None
    for entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if (Path(entry) / "modules" / "launch_utils.py").is_file():
            return Path(entry)
    return None


def main() -> None:
    if host_root() is not None:
        return  # the host's environment is the host's (see the module docstring)
    install_torch()
    todo = missing(read_pins())
    if todo:
        print(f"install.py: installing {len(todo)} package(s): {' '.join(todo)}", flush=True)
        # torch is pinned here too, so no requirement can drag in another torch build.
        torch_now = installed_version("torch")
        pip(*todo, *([f"torch=={torch_now}"] if torch_now else []))


if __name__ == "__main__":
    main()
