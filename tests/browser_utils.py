"""Helpers for the UI tests: a hypernetworks folder for the demo architecture, the app served in a child
process on 127.0.0.1, and Debian's chromium driven by Playwright (headless; never ``playwright install``)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

GOOD = ("demo_style", "demo_linear")  # made for the demo architecture
MISFIT = "sd1_anime"  # widths of SD 1.x only: none exists in the demo model
PARTIAL = "mixed_sizes"  # one demo width, one SD 1.x width
BROKEN = "broken"


def make_hypernetwork_dir(folder: Path) -> dict[str, Path]:
    """A folder with two networks for the demo model (one with a preview and a description), one whose
    widths do not fit it, one that partly fits, and a broken file. Returns ``{name: path}``."""
    from PIL import Image

    from extension.demo.architecture import ATTENTION_WIDTHS, CROSS_ATTENTION_DIM
    from extension.hypernetwork import Hypernetwork

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name, filename, step=0, **kwargs):
        hn = Hypernetwork(name=name, **kwargs)
        hn.step = step
        path = folder / filename
        hn.save(path)
        paths[name] = path
        return hn

    save("demo_style", "demo_style.pt", enable_sizes=list(ATTENTION_WIDTHS), layer_structure=[1, 2, 1],
         activation_func="relu", weight_init="XavierNormal", step=1200)
    (folder / "demo_style.txt").write_text("Bold strokes for the demo model (a test network).", encoding="utf-8")
    Image.new("RGB", (64, 64), (200, 60, 40)).save(folder / "demo_style.png")
    save("demo_linear", "sub/demo_linear.safetensors", enable_sizes=[CROSS_ATTENTION_DIM], layer_structure=[1, 1],
         weight_init="Normal")
    save(MISFIT, f"{MISFIT}.pt", enable_sizes=[768, 320], layer_structure=[1, 0.1, 1], activation_func="swish")
    (folder / f"{MISFIT}.txt").write_text("An SD 1.x network: its widths do not exist in the demo model.",
                                          encoding="utf-8")
    save(PARTIAL, f"{PARTIAL}.pt", enable_sizes=[CROSS_ATTENTION_DIM, 768], layer_structure=[1, 0.1, 1])
    broken = folder / f"{BROKEN}.pt"
    broken.write_bytes(b"this is not a hypernetwork, just some bytes\n" * 4)
    paths[BROKEN] = broken
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_CODE = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from extension.ui.app import serve
from extension.ui.state import ServeOptions
kw = json.loads({options!r})
for key in ("hypernetwork_dir", "ckpt_dir", "outdir", "ui_settings_file", "gradio_auth_path"):
    if kw.get(key):
        kw[key] = Path(kw[key])
serve(ServeOptions(**kw))
"""


class Server:
    """The app in a child process (random-weight demo model), on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, hypernetwork_dir: Path, **options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.outdir = tmp / "outputs"
        self.options = {"port": self.port, "hypernetwork_dir": str(hypernetwork_dir),
                        "ckpt_dir": str(tmp / "checkpoints"), "outdir": str(self.outdir),
                        "ui_settings_file": str(tmp / "config.json"), "demo_random": True, "device": "cpu",
                        **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}}
        self.process: subprocess.Popen | None = None
        self.auth = None

    def start(self, timeout: float = 120.0) -> "Server":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        code = SERVER_CODE.format(root=str(ROOT), options=json.dumps(self.options))
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT), env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, behind auth
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def chromium_browser():
    """A headless Debian chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        import pytest

        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def element_screenshot(locator, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return path
