"""Crashes: training killed with SIGKILL (at random and mid-save) leaves a file that loads and resumes; a server
killed mid-generation and mid-save of its settings starts again cleanly, with no half-written file where a user
would load it. The dozen-round version is ``bench/reliability_crashes.py`` (its figures are in docs/RELIABILITY.md)."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import requests
from PIL import Image

from api_server import ApiServer
from builders import make_hypernetwork_dir
from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.reliability_crashes import run_rounds  # noqa: E402


def test_training_killed_at_random_and_mid_save_leaves_a_file_that_loads_and_resume_reaches_the_end(tmp_path):
    record = run_rounds(tmp_path, rounds=2, seed=1)
    random_round, mid_save = record["rounds"]
    assert mid_save["mode"] == "mid-save" and mid_save["caught_mid_save"], record
    for entry in record["rounds"]:
        assert entry["loads"] and entry["step_after"] >= entry["step_before"], record
        assert entry["visible_partial_files"] == [], record
    assert mid_save["step_after"] > 0, record
    # a kill inside the file's write leaves the whole save before it: that resumes fully. (Had the file been
    # renamed a moment before the kill landed, its old sidecar would no longer match it and must not be used;
    # `state_of` then finds no optimizer state, and that is right too.)
    assert mid_save["optimizer_state"] or mid_save["cut_short"] != "network", record
    resume = record["resume"]
    assert resume["exit_code"] == 0 and resume["loads"] and resume["final_step"] == resume["target"], record


def visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")] if folder.exists() else []


def test_a_server_killed_mid_generation_and_mid_settings_save_starts_again_cleanly(tmp_path):
    models = tmp_path / "hypernetworks"
    make_hypernetwork_dir(models)
    server = ApiServer(tmp_path / "server", models).start()
    try:
        body = {"prompt": "a red circle <hypernet:demo_style:1>", "steps": 3, "width": 32, "height": 32,
                "save_images": True, "seed": 4}
        assert requests.post(f"{server.api}/txt2img", json=body, timeout=300).status_code == 200
        with server.hold_next_generation():
            def doomed():  # its server is killed under it
                try:
                    requests.post(f"{server.api}/txt2img", json=body, timeout=300)
                except requests.RequestException:
                    pass

            thread = threading.Thread(target=doomed, daemon=True)
            thread.start()
            server.wait_until_held()
            os.kill(server.process.pid, signal.SIGKILL)  # mid-generation
            server.process.wait(30)

        stop, posted = threading.Event(), []

        def spam_options():
            value = 0.0
            while not stop.is_set():
                value = 1.0 if value != 1.0 else 0.5
                try:
                    requests.post(f"{server.api}/options", json={"extra_networks_default_multiplier": value},
                                  timeout=5)
                    posted.append(value)
                except requests.RequestException:
                    return

        for _ in range(2):  # kill while settings are being saved, over and over
            server.start()  # the same folders, settings file and port
            stop.clear()
            spammer = threading.Thread(target=spam_options, daemon=True)
            spammer.start()
            while len(posted) < 20:
                time.sleep(0.01)
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(30)
            stop.set()
            spammer.join(10)
            settings = json.loads((tmp_path / "server" / "config.json").read_text())  # whole, parseable
            assert settings["extra_networks_default_multiplier"] in (0.5, 1.0)
            posted.clear()

        outputs = visible_files(tmp_path / "server" / "outputs")
        assert outputs, "the first generation saved its image"
        for path in outputs:  # no half-written picture under a name a user would open
            with Image.open(path) as image:
                image.load()
        for folder in (tmp_path / "server", models):
            assert [p for p in visible_files(folder) if p.suffix == ".tmp"] == []

        server.start()  # starts again, and works
        answer = requests.post(f"{server.api}/txt2img", json=body, timeout=300)
        assert answer.status_code == 200 and len(answer.json()["images"]) == 1
    finally:
        server.stop()
