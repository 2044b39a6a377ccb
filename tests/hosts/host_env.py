"""A real host web UI to test the extension in: its tree, its own venv from its own pins.

A :class:`Host` names one host: where its tree comes from (``$<NAME>_DIR``, a user's own copy, or the shared
tarball ``../shared/hosts/<archive>``, unpacked once into the host cache) and how its venv is built (the ``steps``,
``pip install`` lines run in the tree). The venv is built once per machine and kept in the host cache
(``$SD_HN_HOST_CACHE``, default ``~/.cache/sd-webui-hypernetworks/hosts``), keyed by a hash of the tree's
requirements file and of the steps, so a later run (CI on the same machine) re-uses it and a change of pins
builds a new one.

Why the steps are what they are: ``../shared/hosts/README.md`` (PyPI's torch builds, since PyPI's torchvision
loads only with them; a package the host imports without pinning).

``python -m tests.hosts.host_env forge|forge-classic|a1111`` builds (or finds) the venv and prints its Python.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_HOSTS = ROOT.parent / "shared" / "hosts"
CACHE = Path(os.environ.get("SD_HN_HOST_CACHE") or Path.home() / ".cache" / "sd-webui-hypernetworks" / "hosts")
PYTHON = os.environ.get("HOST_PYTHON") or os.environ.get("FORGE_PYTHON") or shutil.which("python3.11") or sys.executable


class HostUnavailable(RuntimeError):
    """No tree of this host here: neither its ``*_DIR`` variable nor the shared tarball."""


@dataclasses.dataclass(frozen=True)
class Host:
    """One host web UI as the tests build it.

    Attributes:
        name: the tarball's stem before the commit (``forge`` in ``forge-dfdcbab6.tar.gz``) and the cache's prefix.
        folder: the folder the tarball unpacks to.
        dir_variable: the environment variable that points at a user's own tree instead.
        requirements: the tree's pinned requirements file (part of the venv's key).
        steps: ``pip install`` arguments, in order, run in the tree (part of the venv's key).
        title: how messages name it.
        version: what follows ``name-`` in the tarball's name (a regular expression: a commit, or a release tag).
    """

    name: str
    folder: str
    dir_variable: str
    requirements: str
    steps: tuple[str, ...]
    title: str
    version: str = r"[0-9a-f]{6,40}"

    def tarball(self) -> Path | None:
        pattern = re.compile(re.escape(self.name) + "-" + self.version + r"\.tar\.gz")
        found = sorted(p for p in SHARED_HOSTS.glob(f"{self.name}-*.tar.gz") if pattern.fullmatch(p.name))
        return found[-1] if found else None

    def source_tree(self) -> Path:
        """The pristine tree: ``$<dir_variable>``, or the shared tarball unpacked once into the cache."""
        if os.environ.get(self.dir_variable):
            tree = Path(os.environ[self.dir_variable]).expanduser().resolve()
            if not (tree / "modules" / "launch_utils.py").is_file():
                raise HostUnavailable(f"{self.dir_variable}={tree} is not a {self.title} tree "
                                      "(no modules/launch_utils.py)")
            return tree
        archive = self.tarball()
        if archive is None:
            raise HostUnavailable(f"no {self.title}: set {self.dir_variable} or put {self.name}-*.tar.gz in "
                                  f"{SHARED_HOSTS}")
        target = CACHE / archive.name.removesuffix(".tar.gz")
        if not (target / self.folder / "launch.py").is_file():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        return target / self.folder

    def venv_key(self, tree: Path) -> str:
        digest = hashlib.sha256((tree / self.requirements).read_bytes())
        digest.update(repr(self.steps).encode())
        return digest.hexdigest()[:12]

    def ensure_venv(self, tree: Path, log=sys.stderr) -> Path:
        """The host's own venv (built here once, then re-used); returns its Python."""
        venv = CACHE / f"{self.name}-venv-{self.venv_key(tree)}"
        python = venv / "bin" / "python"
        if (venv / ".complete").is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        for step in self.steps:
            print(f"{self.name} venv: pip install {step}", file=log, flush=True)
            subprocess.run([*pip, *step.split()], check=True, cwd=tree)
        (venv / ".complete").write_text("\n".join(self.steps) + "\n")
        return python


# torch==2.13.0 first, then Forge's pins, which settle on PyPI's torch 2.12.1 (a CUDA build that runs on CPU);
# joblib is imported by Forge without a pin.
FORGE = Host(name="forge", folder="forge", dir_variable="FORGE_DIR", requirements="requirements_versions.txt",
             steps=("torch==2.13.0", "-r requirements_versions.txt", "joblib==1.4.2"), title="Forge")
# Classic leaves torch unpinned: its pins, then PyPI's torch and the torchvision built for it. That torch pulls
# the newest setuptools (>=77.0.3), which has no pkg_resources; pytorch_lightning 1.9.4 imports it at start.
FORGE_CLASSIC = Host(name="forge-classic", folder="forge-classic", dir_variable="FORGE_CLASSIC_DIR",
                     requirements="requirements.txt",
                     steps=("-r requirements.txt", "torch==2.14.1 torchvision==0.29.1", "setuptools==80.9.0"),
                     title="Forge Classic")
# AUTOMATIC1111 v1.8.0: its pins pull torch 2.14.1 (it runs on it); then what its launcher would fetch itself:
# setuptools with pkg_resources (pytorch_lightning imports it) and CLIP (k-diffusion imports it; the launcher takes
# it from GitHub; clip-anytorch is the same code on PyPI), with ftfy.
A1111 = Host(name="a1111", folder="a1111", dir_variable="A1111_DIR", requirements="requirements_versions.txt",
             steps=("-r requirements_versions.txt", "setuptools==69.5.1", "clip-anytorch==2.6.0 --no-deps",
                    "ftfy==6.3.1"),
             title="AUTOMATIC1111", version=r"v\d+\.\d+\.\d+")
HOSTS = {host.name: host for host in (FORGE, FORGE_CLASSIC, A1111)}

if __name__ == "__main__":
    chosen = HOSTS[sys.argv[1] if len(sys.argv) > 1 else "forge"]
    print(chosen.ensure_venv(chosen.source_tree()))
