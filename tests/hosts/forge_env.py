"""A real Forge to test the extension in: its tree, its own venv from its own pins, and a headless CPU start.

The tree comes from ``$FORGE_DIR`` (a user's own Forge) or is unpacked from ``../shared/hosts/forge-*.tar.gz``.
Its venv is built once per machine from the tree's ``requirements_versions.txt`` and kept in the host cache
(``$SD_HN_HOST_CACHE``, default ``~/.cache/sd-webui-hypernetworks/hosts``), keyed by a hash of those pins and of
the steps below, so a later run (CI on the same machine) re-uses it and a change of pins builds a new one.

Steps (``../shared/hosts/README.md``): ``torch==2.13.0`` first, then Forge's pins, which settle on PyPI's
torch 2.12.1 (a CUDA build that runs on CPU; a CPU-only torch cannot load PyPI's torchvision), then ``joblib``,
which Forge imports without pinning.

``python -m tests.hosts.forge_env`` builds (or finds) the venv and prints its Python.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_HOSTS = ROOT.parent / "shared" / "hosts"
CACHE = Path(os.environ.get("SD_HN_HOST_CACHE") or Path.home() / ".cache" / "sd-webui-hypernetworks" / "hosts")
# Part of the venv's key: changing a step here builds a new venv.
STEPS = ("torch==2.13.0", "-r requirements_versions.txt", "joblib==1.4.2")
PYTHON = os.environ.get("FORGE_PYTHON") or shutil.which("python3.11") or sys.executable


class HostUnavailable(RuntimeError):
    """No Forge tree here: neither ``$FORGE_DIR`` nor the shared tarball."""


def tarball() -> Path | None:
    found = sorted(SHARED_HOSTS.glob("forge-[0-9a-f]*.tar.gz"))
    return found[-1] if found else None


def source_tree() -> Path:
    """The pristine Forge tree: ``$FORGE_DIR``, or the shared tarball unpacked once into the cache."""
    if os.environ.get("FORGE_DIR"):
        tree = Path(os.environ["FORGE_DIR"]).expanduser().resolve()
        if not (tree / "modules" / "launch_utils.py").is_file():
            raise HostUnavailable(f"FORGE_DIR={tree} is not a Forge tree (no modules/launch_utils.py)")
        return tree
    archive = tarball()
    if archive is None:
        raise HostUnavailable(f"no Forge: set FORGE_DIR or put forge-*.tar.gz in {SHARED_HOSTS}")
    target = CACHE / archive.name.removesuffix(".tar.gz")
    if not (target / "forge" / "launch.py").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target / "forge"


def venv_key(tree: Path) -> str:
    digest = hashlib.sha256((tree / "requirements_versions.txt").read_bytes())
    digest.update(repr(STEPS).encode())
    return digest.hexdigest()[:12]


def ensure_venv(tree: Path, log=sys.stderr) -> Path:
    """Forge's own venv (built here once, then re-used); returns its Python."""
    venv = CACHE / f"forge-venv-{venv_key(tree)}"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for step in STEPS:
        print(f"forge venv: pip install {step}", file=log, flush=True)
        subprocess.run([*pip, *step.split()], check=True, cwd=tree)
    (venv / ".complete").write_text("\n".join(STEPS) + "\n")
    return python


if __name__ == "__main__":
    print(ensure_venv(source_tree()))
