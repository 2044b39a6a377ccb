"""The REST API's test servers: :class:`browser_utils.Server` (the app in a child process on 127.0.0.1, the
random-weight demo model, the hold hook) with the API on, ready when ``/openapi.json`` answers (so a server
without the page, ``--nowebui``, is ready too), plus a test-only txt2img script that holds the device *after*
a generation, while its job still runs: a job in the middle of its work for as long as a test needs, with
latents to preview."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import requests

from browser_utils import Server

HOLD_AFTER_SCRIPT = '''"""Test-only txt2img script: one generation, then the device stays held (the job still running, its
preview the last latents) until the control file "release" appears or the job is interrupted."""
import time
from pathlib import Path

from extension.ui.callbacks import Script

CONTROL = Path({control!r})
TITLE = "Test generate then hold"


class GenerateThenHold(Script):
    def title(self):
        return TITLE

    def run(self, ctx, request, *values, progress=None):
        result = ctx.generate(request, source="api")
        (CONTROL / "after").write_text("")
        deadline = time.monotonic() + 300  # never hang the test server for good
        while not (CONTROL / "release").exists() and not ctx.jobs.progress().interrupted \\
                and time.monotonic() < deadline:
            time.sleep(0.02)
        (CONTROL / "after").unlink(missing_ok=True)
        return result


def register(callbacks):
    callbacks.add_txt2img_script(GenerateThenHold())
'''

HOLD_AFTER_TITLE = "test generate then hold"  # as /sdapi/v1/scripts lists it (lower-cased)


class ApiServer(Server):
    """The app with ``api=True`` (and whatever ``options`` say: ``nowebui``, ``api_auth``, ``gradio_auth``...)."""

    def __init__(self, tmp: Path, hypernetwork_dir: Path, **options):
        super().__init__(tmp, hypernetwork_dir, **{"api": True, **options})
        scripts = tmp / "scripts"
        (scripts / "zz_test_hold_after.py").write_text(HOLD_AFTER_SCRIPT.format(control=str(self.control)),
                                                       encoding="utf-8")
        self.api = f"{self.url}/sdapi/v1"

    def start(self, timeout: float = 180.0) -> "ApiServer":
        import json
        import os
        import subprocess
        import sys

        from browser_utils import ROOT, SERVER_CODE

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
                with urllib.request.urlopen(self.url + "/openapi.json", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, the schema behind --api-auth
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log()}")

    # -- the hold-after script ------------------------------------------------------------------------------
    def wait_until_generated_and_held(self, timeout: float = 120.0) -> None:
        """Until the hold-after script's generation is done and it holds the device."""
        self._wait_for(lambda: (self.control / "after").exists(), "the script did not reach its hold", timeout)

    def release(self) -> None:
        (self.control / "release").write_text("")

    def reset_release(self) -> None:
        (self.control / "release").unlink(missing_ok=True)

    # -- HTTP -----------------------------------------------------------------------------------------------
    def get(self, route: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.api}/{route}", timeout=kwargs.pop("timeout", 300), **kwargs)

    def post(self, route: str, json=None, **kwargs) -> requests.Response:
        return requests.post(f"{self.api}/{route}", json=json, timeout=kwargs.pop("timeout", 600), **kwargs)

    def wait_for_progress(self, condition, failure: str, timeout: float = 120.0) -> dict:
        """Poll ``/progress`` until ``condition(answer)``; returns that answer."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.get("progress", params={"skip_current_image": "true"}).json()
            if condition(answer):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure} within {timeout:.0f} s; last progress: {answer}\n{self.log()}")
            time.sleep(0.05)
