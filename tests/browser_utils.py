"""Helpers for the UI tests: the app served in a child process on 127.0.0.1, and Debian's chromium driven by
Playwright (headless; never ``playwright install``). The hypernetworks folder they use is
:func:`builders.make_hypernetwork_dir`."""
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


def under_ci() -> bool:
    """``CI`` is set (GitHub Actions and most CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip a browser test for a missing part; under CI, fail instead: there the browser tests must run."""
    import pytest

    if under_ci():
        pytest.fail(f"{reason}. CI is set, so the browser tests fail instead of skipping.", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_CODE = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from extension.quiet_warnings import quiet_image_processor_fallback
quiet_image_processor_fallback()  # as launch.py does before it serves
from extension.ui.app import serve
from extension.ui.state import ServeOptions
kw = json.loads({options!r})
for key in ("hypernetwork_dir", "ckpt_dir", "outdir", "ui_settings_file", "gradio_auth_path", "scripts_dir"):
    if kw.get(key):
        kw[key] = Path(kw[key])
serve(ServeOptions(**kw))
"""

HOLD_SCRIPT = '''"""Test-only host script: the generation that takes the hold token waits on the device (before its first
step) until the test lets it go or its job is interrupted. See ``Server.hold_next_generation``."""
import os
import time
from pathlib import Path

CONTROL = Path({control!r})


def register(callbacks):
    @callbacks.on_before_generate
    def hold(ctx, request):
        try:
            os.rename(CONTROL / "hold", CONTROL / "held")  # atomic: one generation takes the token
        except FileNotFoundError:
            return None
        deadline = time.monotonic() + 300  # never hang the test server for good
        while (CONTROL / "held").exists() and not ctx.jobs.progress().interrupted and time.monotonic() < deadline:
            time.sleep(0.02)
        (CONTROL / "held").unlink(missing_ok=True)
        return None
'''


class Server:
    """The app in a child process (random-weight demo model), on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, hypernetwork_dir: Path, **options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.outdir = tmp / "outputs"
        self.control = tmp / "control"  # hold / held: see hold_next_generation
        self.control.mkdir(parents=True, exist_ok=True)
        scripts = tmp / "scripts"  # the project's scripts, and the test-only hold hook
        scripts.mkdir(parents=True, exist_ok=True)
        for script in sorted((ROOT / "scripts").glob("*.py")):
            (scripts / script.name).symlink_to(script)
        (scripts / "zz_test_hold.py").write_text(HOLD_SCRIPT.format(control=str(self.control)), encoding="utf-8")
        self.options = {"port": self.port, "hypernetwork_dir": str(hypernetwork_dir),
                        "ckpt_dir": str(tmp / "checkpoints"), "outdir": str(self.outdir),
                        "ui_settings_file": str(tmp / "config.json"), "demo_random": True, "device": "cpu",
                        "scripts_dir": str(scripts), "train_data_dir": [str(tmp)],
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

    # -- holding a generation on the device -----------------------------------------------------------------
    @contextlib.contextmanager
    def hold_next_generation(self):
        """Inside the block, the next generation to start holds the device (in a ``before_generate`` hook,
        before its first step) until the block ends or its job is interrupted: a job exactly as long as the
        test needs. Leaving the block lets it go; a hold no generation took is withdrawn."""
        token, held = self.control / "hold", self.control / "held"
        held.unlink(missing_ok=True)
        token.write_text("")
        try:
            yield self
        finally:
            token.unlink(missing_ok=True)
            held.unlink(missing_ok=True)

    def wait_until_held(self, timeout: float = 60.0) -> None:
        """Until a generation holds the device (it took the hold)."""
        self._wait_for(lambda: (self.control / "held").exists(), "no generation took the hold", timeout)

    def wait_until_let_go(self, timeout: float = 60.0) -> None:
        """Until the held generation has gone on (let go, or it saw its job interrupted)."""
        self._wait_for(lambda: not (self.control / "held").exists(), "the held generation is still held", timeout)

    def _wait_for(self, condition, failure: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure} within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.05)

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
    """A headless Debian chromium through Playwright; skips (fails under CI) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install playwright (Debian's chromium is used, "
                    "never `playwright install`)")
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_PATH)")
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
