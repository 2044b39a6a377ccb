"""Concurrency and load against a real server: simultaneous API and UI generations with different networks,
multipliers and seeds give the images each gives alone; a queue of 100 requests drains with bounded memory;
training and generations interleave without corrupting each other.

    venv/bin/python bench/reliability.py --part load          # into docs/RELIABILITY.md (100 requests)
    venv/bin/python bench/reliability.py --part load --quick  # what tests/test_load.py runs (fewer)

The server is the app with its API (random-weight demo model, 32x32 pictures, 2 steps) in a child process on
127.0.0.1; generations go over HTTP (``/sdapi/v1/txt2img``) and through the web UI's own Gradio endpoint
(``gradio_client``, as a browser's queue does). :func:`measure` is what the test and the record both call.
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
for path in (ROOT, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

NETWORKS = ("demo_style", "demo_linear", "mixed_sizes")


@dataclasses.dataclass
class LoadRecord:
    requests: int
    different: int                 # distinct (network, multiplier, seed) requests
    api_equal_alone: int
    ui_equal_alone: int
    ui_requests: int
    statuses: dict
    queue_seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_limit_mb: float
    drained: bool
    training_status: str
    training_step: int
    generations_during_training: int
    generations_during_training_equal: int


def pixels_digest(b64: str) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def body(network: str, multiplier: float, seed: int) -> dict:
    return {"prompt": f"a red circle <hypernet:{network}:{multiplier:g}>", "steps": 2, "width": 32, "height": 32,
            "seed": seed, "sampler_name": "Euler a", "cfg_scale": 5}


def ui_call(client, network: str, multiplier: float, seed: int) -> str:
    """One generation through the page's own Gradio endpoint; the digest of its first image."""
    result = client.predict(f"a red circle <hypernet:{network}:{multiplier:g}>", "", "Euler a", "Automatic", 2, 5,
                            32, 32, seed, 1, 1, 1, "None", [], "0, 1", api_name="/txt2img")
    gallery = result[0]
    first = gallery[0]["image"] if isinstance(gallery[0], dict) else gallery[0]
    path = first if isinstance(first, str) else first.get("path")
    from PIL import Image

    with Image.open(path) as image:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def measure(quick: bool = False, workdir: Path | None = None) -> LoadRecord:
    import psutil
    import requests
    from gradio_client import Client

    from api_server import ApiServer
    from builders import make_hypernetwork_dir
    from extension.demo.dataset import write_folder

    count = 24 if quick else 100
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        models = work / "hypernetworks"
        make_hypernetwork_dir(models)
        write_folder(work / "pictures", 4, seed=2, outline=True, size=32)
        server = ApiServer(work / "server", models, train_data_dir=[str(work)]).start()
        try:
            api = server.api
            plan = [(NETWORKS[i % 3], (0.5, 1.0, -0.7, 1.3)[i % 4], 100 + i % 7) for i in range(count)]
            alone = {}
            for key in dict.fromkeys(plan):  # every distinct request, one at a time
                answer = requests.post(f"{api}/txt2img", json=body(*key), timeout=600)
                answer.raise_for_status()
                alone[key] = pixels_digest(answer.json()["images"][0])
            process = psutil.Process(server.process.pid)
            rss_before = process.memory_info().rss
            client = Client(server.url, verbose=False, httpx_kwargs={"timeout": 1800})  # a place deep in the queue
            ui_plan = plan[: max(4, count // 10)]
            peak, statuses, api_equal, ui_equal = rss_before, {}, 0, 0
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=count + len(ui_plan)) as pool:
                api_jobs = {pool.submit(requests.post, f"{api}/txt2img", json=body(*key), timeout=1800): key
                            for key in plan}
                ui_jobs = {pool.submit(ui_call, client, *key): key for key in ui_plan}
                pending = set(api_jobs) | set(ui_jobs)
                while pending:
                    done, pending = concurrent.futures.wait(pending, timeout=0.5)
                    peak = max(peak, process.memory_info().rss)
                for future, key in api_jobs.items():
                    answer = future.result()
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                    if answer.status_code == 200 and pixels_digest(answer.json()["images"][0]) == alone[key]:
                        api_equal += 1
                for future, key in ui_jobs.items():
                    if future.result() == alone[key]:
                        ui_equal += 1
            queue_seconds = time.monotonic() - start
            progress = requests.get(f"{api}/progress", timeout=30).json()
            drained = progress["state"]["job_count"] == 0 and progress["progress"] == 0

            # training while generations wait their turn
            assert requests.post(f"{api}/create/hypernetwork", json={"name": "during", "overwrite_old": True},
                                 timeout=300).status_code == 200
            during = plan[:6]
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                training = pool.submit(requests.post, f"{api}/train/hypernetwork", json={
                    "hypernetwork_name": "during", "data_root": str(work / "pictures"), "steps": 6,
                    "batch_size": 2, "learn_rate": "1e-3", "template_filename": "filewords.txt",
                    "training_width": 32, "training_height": 32, "create_image_every": 3,
                    "save_hypernetwork_every": 3, "log_directory": str(work / "logs")}, timeout=1800)
                while requests.get(f"{api}/progress", timeout=30).json()["state"]["job"] != "train-hypernetwork":
                    time.sleep(0.05)
                generations = [pool.submit(requests.post, f"{api}/txt2img", json=body(*key), timeout=1800)
                               for key in during]
                trained = training.result()
                interleaved = [g.result() for g in generations]
            info = trained.json().get("info", "")
            status = "finished" if "finished at step 6" in info else info[:200]
            equal = sum(1 for answer, key in zip(interleaved, during)
                        if answer.status_code == 200 and pixels_digest(answer.json()["images"][0]) == alone[key])
            listing = requests.get(f"{api}/hypernetworks", timeout=30).json()
            step = 6 if any(item["name"] == "during" for item in listing) and status == "finished" else -1
        finally:
            server.stop()
    return LoadRecord(requests=count, different=len(alone), api_equal_alone=api_equal, ui_equal_alone=ui_equal,
                      ui_requests=len(ui_plan), statuses=statuses, queue_seconds=round(queue_seconds, 1),
                      rss_before_mb=round(rss_before / 2**20), rss_peak_mb=round(peak / 2**20),
                      rss_limit_mb=RSS_GROWTH_LIMIT_MB + round(rss_before / 2**20), drained=drained,
                      training_status=status, training_step=step, generations_during_training=len(during),
                      generations_during_training_equal=equal)


RSS_GROWTH_LIMIT_MB = 512  # what a queue of tiny generations may add to the server's resident memory


def summary(record: LoadRecord) -> str:
    held = (record.api_equal_alone == record.requests and record.ui_equal_alone == record.ui_requests
            and record.drained and record.rss_peak_mb <= record.rss_limit_mb and record.training_status == "finished"
            and record.generations_during_training_equal == record.generations_during_training)
    return "\n".join([
        "## Concurrency and load (`bench/reliability_load.py`)", "",
        f"A server (random-weight demo model) took {record.requests} simultaneous txt2img requests over the REST "
        f"API ({record.different} different network/multiplier/seed combinations, three networks, negative "
        f"multipliers included) and {record.ui_requests} through the web UI's own Gradio endpoint at the same "
        "time; each image was compared with the one the same request gave alone, before.", "",
        "| what | figure |", "|---|---|",
        f"| API images equal to the image alone | {record.api_equal_alone} / {record.requests} |",
        f"| UI images equal to the image alone | {record.ui_equal_alone} / {record.ui_requests} |",
        f"| answers by status | {', '.join(f'{k}: {v}' for k, v in sorted(record.statuses.items()))} |",
        f"| the whole queue drained in | {record.queue_seconds} s (then `/progress` idle: "
        f"{'yes' if record.drained else 'NO'}) |",
        f"| server resident memory | {record.rss_before_mb} MB before, {record.rss_peak_mb} MB at peak "
        f"(limit stated: +{RSS_GROWTH_LIMIT_MB} MB) |",
        f"| training via the API while {record.generations_during_training} generations waited | "
        f"{record.training_status}; {record.generations_during_training_equal} / "
        f"{record.generations_during_training} images equal to alone |", "",
        f"Held: {'yes' if held else 'NO'}.",
    ])


def run(quick: bool) -> str:
    """The section of docs/RELIABILITY.md (100 API requests; 24 when ``quick``)."""
    return summary(measure(quick))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    print(run(parser.parse_args().quick))
