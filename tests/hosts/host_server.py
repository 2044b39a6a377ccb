"""A real host server for the tests (Forge, Forge Classic): a fresh copy of the tree, the extension installed as
``git clone`` would, the random SD 1.5 checkpoint, started headless on CPU on 127.0.0.1.

:class:`HostServer` is used as a context manager; its ``url``, ``log()`` and ``api()`` serve the tests. The tree is
copied per server (60-70 MB: the host writes its settings, caches and outputs into it), the venv and the checkpoint
are the machine's cached ones (:mod:`tests.hosts.host_env`).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import host_env
from .a1111_model import a1111_checkpoint
from .host_env import A1111, FORGE, FORGE_CLASSIC, Host

ROOT = host_env.ROOT
EXTENSION_NAME = "sd-webui-hypernetworks"
CHECKPOINT_VERSION = "v1"  # part of the cached file's name: bump to rebuild it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checkpoint() -> Path:
    """The random-weights SD 1.5 file (``tests/hosts/sd15_checkpoint.py``), written once per machine.

    Every host reads the same file; it is built with Forge's tree and venv, which ship the SD 1.5 configs and the
    converter to the original key names."""
    tree = FORGE.source_tree()
    python = FORGE.ensure_venv(tree)
    path = host_env.CACHE / "models" / f"sd15-random-{CHECKPOINT_VERSION}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), str(ROOT / "tests" / "hosts" / "sd15_checkpoint.py"), str(tree), str(path)],
                       check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return path


def install_extension(extensions_dir: Path) -> Path:
    """The working tree's files as a clone of it has them (tracked and untracked-but-not-ignored; no venv)."""
    target = extensions_dir / EXTENSION_NAME
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


class HostServer:
    """One host process.

    Args:
        workdir: an empty folder for this server (the tree's copy, its log).
        hypernetwork_dir: passed as ``--hypernetwork-dir`` (the host's flag in Forge, the extension's in Classic,
            where a bare host does not get it).
        host: which host (:data:`tests.hosts.host_env.FORGE` by default).
        with_extension: install the extension (False: the bare host, for comparisons).
        extra_args: more of the host's flags (``--api-auth``, ``--nowebui``...).
        settings: the host's ``config.json`` to start with.
        other_extensions: more extensions to install beside it, ``{folder name: {relative path: text}}``.
    """

    def __init__(self, workdir: Path, hypernetwork_dir: Path | None = None, *, host: Host = FORGE,
                 with_extension: bool = True, extra_args: tuple[str, ...] = (), settings: dict | None = None,
                 auth: tuple[str, str] | None = None, other_extensions: dict[str, dict[str, str]] | None = None):
        self.host = host
        self.other_extensions = other_extensions or {}
        self.source = host.source_tree()
        self.python = host.ensure_venv(self.source)
        self.workdir = Path(workdir)
        self.tree = self.workdir / host.folder
        self.hypernetwork_dir = hypernetwork_dir
        self.with_extension = with_extension
        self.extra_args = tuple(extra_args)
        # Forge's "sd" preset sets the page's size: the tests' 64x64 (a Generate in the browser stays quick)
        self.settings = {"live_previews_enable": False, "sd_t2i_width": 64, "sd_t2i_height": 64, **(settings or {})}
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "forge.log"
        self.process: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not self.tree.exists():
            shutil.copytree(self.source, self.tree, symlinks=True)
        (self.tree / "config.json").write_text(json.dumps(self.settings))
        # The page's defaults: a Generate in the browser draws 64x64 in 3 steps (the tests' size), not 512x512.
        (self.tree / "ui-config.json").write_text(json.dumps(
            {"txt2img/Width/value": 64, "txt2img/Height/value": 64, "txt2img/Sampling steps/value": 3,
             "img2img/Width/value": 64, "img2img/Height/value": 64, "img2img/Sampling steps/value": 3}))
        if self.with_extension:
            install_extension(self.tree / "extensions")
        for name, files in self.other_extensions.items():
            for relative, text in files.items():
                (self.tree / "extensions" / name / relative).parent.mkdir(parents=True, exist_ok=True)
                (self.tree / "extensions" / name / relative).write_text(text)

    def command(self) -> list[str]:
        common = ["--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
                  "--skip-python-version-check", "--api", "--port", str(self.port), "--disable-nan-check"]
        if self.host is A1111:  # its CI's CPU flags; the checkpoint with its NAME.yaml and a local CLIP folder
            model = a1111_checkpoint(self.tree, checkpoint(), self.workdir / "a1111-model")
            args = [str(self.python), "launch.py", *common, "--do-not-download-clip", "--no-half",
                    "--disable-opt-split-attention", "--use-cpu", "all", "--server-name", "127.0.0.1",
                    "--ckpt", str(model)]
        else:
            args = [str(self.python), "launch.py", "--always-cpu", *common, "--ckpt", str(checkpoint())]
        # Classic has no --hypernetwork-dir of its own: the extension's preload.py brings it.
        if self.hypernetwork_dir is not None and (self.with_extension or self.host is not FORGE_CLASSIC):
            args += ["--hypernetwork-dir", str(self.hypernetwork_dir)]
        return args + list(self.extra_args)

    def start(self, timeout: float = 240) -> "HostServer":
        self.prepare()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("FORGE_THREADS", "2"),
               # Training runs in the project's own environment: the one running these tests (already made),
               # not a fresh venv/ in the extension's copy.
               "SD_HYPERNETWORKS_VENV": sys.prefix}
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_CURRENT_TEST", "SD_WEBUI_LAUNCH_REEXEC"):
            env.pop(name, None)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.tree, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.host.title} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if "Startup time:" in self.log():
                try:
                    self.request("GET", "/sdapi/v1/sd-models")
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.host.title} did not start within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> "HostServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- HTTP ------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, *, auth: tuple[str, str] | None | bool = True,
                timeout: float = 600) -> tuple[int, object]:
        """``(status, decoded JSON or text)``; ``auth=True`` sends the server's credentials when it has any."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        credentials = self.auth if auth is True else (auth or None)
        if credentials:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            headers["authorization"] = f"Basic {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body=None, **kwargs):
        """The JSON of a request that must succeed."""
        status, answer = self.request(method, "/sdapi/v1/" + path.lstrip("/"), body, **kwargs)
        assert status == 200, (status, answer, self.log()[-3000:])
        return answer
