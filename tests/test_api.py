"""The REST API against real servers on 127.0.0.1 (the random-weight demo model), over HTTP: with ``requests``
and with the ``webuiapi`` client as published, unchanged.

Three servers: the UI with the API (``--api``) and a page login (``--gradio-auth``); the API alone
(``--nowebui``) behind ``--api-auth`` with ``--api-log``. What AUTOMATIC1111's own tests (``test/test_txt2img.py``,
``test/test_utils.py``) ask of a server is restated first, then what a client expects of each route, the
job runner shared with the UI, create and train, every bad request, and the schema.

Jobs that must be caught in the middle are held, never timed: ``hold_next_generation`` holds a generation on the
device before its first step; the test-only script ``test generate then hold`` holds it after its images
are made, its job still running (see ``api_server.py``).
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from api_server import HOLD_AFTER_TITLE, ApiServer
from builders import make_hypernetwork_dir

PAGE_AUTH = ("page", "open sesame")
API_USERS = {"alice": "wonder:land", "bob": "builder"}  # a password may hold a colon
SMALL = {"prompt": "a red circle on a white background", "width": 32, "height": 32, "steps": 2, "seed": 11,
         "sampler_name": "Euler a"}
NETWORK = "demo_style"
OTHER = "other-model"  # a second checkpoint: the demo architecture with other random weights


# -- servers ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    from extension.demo.architecture import build_random_pipeline
    from extension.demo.dataset import write_folder

    root = tmp_path_factory.mktemp("api")
    make_hypernetwork_dir(root / "hypernetworks")
    build_random_pipeline(seed=1).save_pretrained(root / "checkpoints" / OTHER)
    dataset = root / "dataset"
    write_folder(dataset, 4, seed=3, size=32)
    return {"root": root, "hypernetworks": root / "hypernetworks", "dataset": dataset}


@pytest.fixture(scope="module")
def server(folders):
    """The UI and the API on one server; the page behind a login, the API open."""
    tmp = folders["root"] / "server"
    tmp.mkdir()
    with ApiServer(tmp, folders["hypernetworks"], ckpt_dir=folders["root"] / "checkpoints",
                   gradio_auth=":".join(PAGE_AUTH), train_data_dir=[str(folders["root"])]) as running:
        yield running


@pytest.fixture(scope="module")
def api_only(folders):
    """The API alone (--nowebui), behind --api-auth, logging each request (--api-log)."""
    tmp = folders["root"] / "api-only"
    tmp.mkdir()
    auth = ",".join(f"{user}:{password}" for user, password in API_USERS.items())
    with ApiServer(tmp, folders["hypernetworks"], nowebui=True, api_auth=auth, api_log=True) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=2)


@pytest.fixture(scope="module")
def gradio(server):
    from gradio_client import Client

    return Client(server.url, auth=PAGE_AUTH, verbose=False)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def txt2img(server, **fields) -> tuple[dict, dict]:
    """``(answer, info)`` of a 200 txt2img with ``SMALL`` changed by ``fields``."""
    response = server.post("txt2img", {**SMALL, **fields})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer, json.loads(answer["info"])


# -- AUTOMATIC1111's own tests, restated ------------------------------------------------------------------
A1111_BASE = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
              "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
              "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0,
              "s_tmin": 0, "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
              "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0,
              "tiling": False, "width": 64}
A1111_CASES = {
    "simple": {},
    "negative prompt": {"negative_prompt": "example negative prompt"},
    "complex prompt": {"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"},
    "not square": {"height": 128},
    "hires fix": {"enable_hr": True},
    "tiling": {"tiling": True},
    "restore faces": {"restore_faces": True},
    "PLMS": {"sampler_index": "PLMS"},
    "DDIM": {"sampler_index": "DDIM"},
    "UniPC": {"sampler_index": "UniPC"},
    "two batches": {"n_iter": 2},
    "batch of two": {"batch_size": 2},
}


@pytest.mark.parametrize("case", list(A1111_CASES))
def test_a1111_txt2img_cases(server, case):
    """AUTOMATIC1111's test_txt2img.py: each request is served (200), and the answer is what it asked for."""
    request = {**A1111_BASE, **A1111_CASES[case]}
    response = server.post("txt2img", request)
    assert response.status_code == 200, response.text
    answer = response.json()
    info = json.loads(answer["info"])
    count = request["n_iter"] * request["batch_size"]
    assert len(answer["images"]) == len(info["infotexts"]) == len(info["all_seeds"]) == count
    assert {pixels(image).shape for image in answer["images"]} == {(request["height"], request["width"], 3)}
    assert info["sampler_name"] == request["sampler_index"] and info["steps"] == 3
    assert answer["parameters"]["prompt"] == request["prompt"]
    unsupported = {"hires fix": "Hires. fix", "tiling": "Tiling", "restore faces": "Face restoration"}
    if case in unsupported:  # accepted, and said in the answer
        assert any(m.startswith(unsupported[case]) for m in info["messages"]), info["messages"]


def test_a1111_options_write(server):
    """AUTOMATIC1111's test_options_write: send_seed flips and reads back, then is restored."""
    before = server.get("options").json()["send_seed"]
    assert server.post("options", {"send_seed": not before}).status_code == 200
    assert server.get("options").json()["send_seed"] == (not before)
    assert server.post("options", {"send_seed": before}).status_code == 200
    assert server.get("options").json()["send_seed"] == before


@pytest.mark.parametrize("route", ["cmd-flags", "samplers", "upscalers", "sd-models", "hypernetworks",
                                   "face-restorers", "realesrgan-models", "prompt-styles", "embeddings"])
def test_a1111_get_routes(server, route):
    """AUTOMATIC1111's test_get_api_url: every listing answers 200 with JSON."""
    response = server.get(route)
    assert response.status_code == 200, response.text
    assert response.json() is not None


# -- txt2img through webuiapi ----------------------------------------------------------------------------
def test_webuiapi_hypernetwork_changes_the_image_and_the_info_names_it(client):
    plain = client.txt2img(prompt=SMALL["prompt"], width=32, height=32, seed=11)
    tagged = client.txt2img(prompt=f"{SMALL['prompt']} <hypernet:{NETWORK}:1>", width=32, height=32, seed=11)
    assert plain.image.size == tagged.image.size == (32, 32)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(tagged.image))
    assert plain.info["hypernetworks"] == [] and "Hypernet" not in plain.info["infotexts"][0]
    assert tagged.info["hypernetworks"] == [{"name": NETWORK, "multiplier": 1.0}]
    assert f"<hypernet:{NETWORK}:1>" in tagged.info["infotexts"][0]
    assert tagged.info["extra_generation_params"]["Hypernet hashes"].startswith(f"{NETWORK}: ")
    # the PNG carries its infotext, as AUTOMATIC1111's do
    assert tagged.image.info["parameters"] == tagged.info["infotexts"][0]
    for result in (plain, tagged):  # what a client reads in info, as AUTOMATIC1111 fills it
        assert result.info["seed"] == 11 and result.info["all_seeds"] == [11]
        assert result.info["width"] == 32 and result.info["height"] == 32 and result.info["steps"] == 2
        assert result.info["sampler_name"] == "Euler a" and result.info["cfg_scale"] == 7.0
        assert result.info["sd_model_name"] == "demo-random" and "sd_model_hash" in result.info
        assert result.info["all_prompts"] == [result.info["prompt"]] and result.parameters["seed"] == 11


def test_webuiapi_same_seed_same_image(client):
    first = client.txt2img(prompt="a blue square", width=32, height=32, seed=5, batch_size=2)
    second = client.txt2img(prompt="a blue square", width=32, height=32, seed=5, batch_size=2)
    assert first.info["all_seeds"] == second.info["all_seeds"] == [5, 6]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first.images, second.images, strict=True))
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(first.images[1]))  # seed + i per image


def test_webuiapi_lists_and_refreshes_hypernetworks(client, folders):
    listed = {item["name"]: item["path"] for item in client.get_hypernetworks()}
    assert NETWORK in listed and Path(listed[NETWORK]).is_file()
    assert "demo_linear" in listed and listed["demo_linear"].endswith("demo_linear.safetensors")  # every format
    added = folders["hypernetworks"] / "added_later.pt"
    shutil.copyfile(listed[NETWORK], added)
    try:
        report = client.custom_post("sdapi/v1/refresh-hypernetworks").json
        assert report["added"] == ["added_later"] and report["removed"] == []
        assert "added_later" in {item["name"] for item in client.get_hypernetworks()}
        result = client.txt2img(prompt="a red circle <hypernet:added_later:0.5>", width=32, height=32, seed=3)
        assert result.info["hypernetworks"] == [{"name": "added_later", "multiplier": 0.5}]
    finally:
        added.unlink()
        client.custom_post("sdapi/v1/refresh-hypernetworks")
    assert "added_later" not in {item["name"] for item in client.get_hypernetworks()}


def test_webuiapi_options_round_trip_and_models(client):
    assert client.util_get_current_model() == "demo"
    assert set(client.util_get_model_names()) >= {"demo", OTHER}
    assert "Euler a" in client.util_get_sampler_names() and "karras" in client.util_get_scheduler_names()
    before = client.get_options()
    for key in ("sd_model_checkpoint", "sd_checkpoint_hash", "send_seed", "CLIP_stop_at_last_layers", "samples_save",
                "sd_hypernetwork", "extra_networks_default_multiplier", "samples_format"):
        assert key in before, key
    client.set_options({"CLIP_stop_at_last_layers": 2, "my_extension_option": [1, "two"]})
    after = client.get_options()
    assert after["CLIP_stop_at_last_layers"] == 2
    assert after["my_extension_option"] == [1, "two"]  # unknown options are kept and returned
    result = client.txt2img(prompt="a red circle", width=32, height=32, seed=1)
    assert result.info["clip_skip"] == 2 and "Clip skip: 2" in result.info["infotexts"][0]
    client.set_options({"CLIP_stop_at_last_layers": before["CLIP_stop_at_last_layers"]})
    assert client.get_options()["CLIP_stop_at_last_layers"] == before["CLIP_stop_at_last_layers"]


def test_webuiapi_sets_the_model(client):
    try:
        client.util_set_model(OTHER)
        assert client.util_get_current_model() == OTHER
        assert client.txt2img(prompt="a red circle", width=32, height=32, seed=1).info["sd_model_name"] == OTHER
    finally:
        client.util_set_model("demo")
    assert client.util_get_current_model() == "demo"
    client.util_wait_for_ready(check_interval=0.1)  # idle: progress 0 and no job


def test_override_settings_apply_to_one_request(server):
    _, info = txt2img(server, override_settings={"sd_model_checkpoint": OTHER, "CLIP_stop_at_last_layers": 2,
                                                 "sd_hypernetwork": NETWORK, "not_an_option": 1})
    assert info["sd_model_name"] == OTHER and info["clip_skip"] == 2
    assert info["hypernetworks"] == [{"name": NETWORK, "multiplier": 1.0}]  # "Add hypernetwork to prompt"
    assert any("not_an_option" in m for m in info["messages"])
    options = server.get("options").json()  # restored afterwards (the default)
    assert options["sd_model_checkpoint"] == "demo" and options["CLIP_stop_at_last_layers"] == 1
    assert options["sd_hypernetwork"] == "None"
    long_negative = " ".join(["blurry"] * 80)  # two chunks against the prompt's one
    _, padded = txt2img(server, negative_prompt=long_negative, override_settings={"pad_cond_uncond": True})
    _, default = txt2img(server, negative_prompt=long_negative)
    assert "Pad conds: True" in padded["infotexts"][0] and "Pad conds" not in default["infotexts"][0]
    assert padded["extra_generation_params"]["Pad conds"] is True  # a bool, as AUTOMATIC1111 answers it
    _, kept = txt2img(server, override_settings={"CLIP_stop_at_last_layers": 3},
                      override_settings_restore_afterwards=False)
    try:
        assert kept["clip_skip"] == 3 and server.get("options").json()["CLIP_stop_at_last_layers"] == 3
    finally:
        server.post("options", {"CLIP_stop_at_last_layers": 1})


def test_sampler_index_scheduler_names_and_unknown_fields(server):
    answer, info = txt2img(server, sampler_name=None, sampler_index="DDIM", future_field={"from": "a newer client"})
    assert info["sampler_name"] == "DDIM"  # the legacy field is honoured
    assert answer["parameters"]["future_field"] == {"from": "a newer client"}  # tolerated, echoed
    _, info = txt2img(server, sampler_name="Euler", scheduler="karras")
    assert info["scheduler"] == "Karras" and "Schedule type: Karras" in info["infotexts"][0]
    _, info = txt2img(server, sampler_name="DPM++ 2M Karras")  # A1111's legacy combined name
    assert info["sampler_name"] == "DPM++ 2M" and info["scheduler"] == "Automatic"  # Karras is its own default
    _, info = txt2img(server, sampler_name="DPM fast")  # known to A1111, not to diffusers: said, not failed
    assert info["sampler_name"] == "Euler a" and any("DPM fast" in m for m in info["messages"])


def test_script_name_runs_a_txt2img_script(server):
    answer, info = txt2img(server, script_name="Hypernetwork strength comparison", script_args=[[NETWORK], "0, 1"])
    grid, *cells = [pixels(image) for image in answer["images"]]
    assert len(cells) == 2 and all(cell.shape == (32, 32, 3) for cell in cells)
    assert grid.shape[0] > 32 and grid.shape[1] > 64  # the labelled grid comes first, as A1111's scripts do
    assert not np.array_equal(cells[0], cells[1])  # multiplier 0, then 1
    assert "Script: " in info["infotexts"][0] and len(info["all_seeds"]) == 3


def test_send_images_and_save_images(server):
    folder = server.outdir / "txt2img-images"
    saved = lambda: sorted(folder.rglob("*.png")) if folder.is_dir() else []  # noqa: E731
    before = saved()
    answer, _ = txt2img(server, seed=21)
    assert len(answer["images"]) == 1 and saved() == before  # save_images defaults to false, as A1111
    answer, info = txt2img(server, seed=22, save_images=True, send_images=False)
    assert answer["images"] == []
    new = [path for path in saved() if path not in before]
    assert len(new) == 1 and Image.open(new[0]).info["parameters"] == info["infotexts"][0]


# -- progress, interrupt, skip: one job runner with the UI --------------------------------------------------
def test_progress_when_idle(server, client):
    answer = server.get("progress").json()
    assert answer["progress"] == 0 and answer["eta_relative"] == 0 and answer["current_image"] is None
    assert answer["state"]["job_count"] == 0 and answer["state"]["job"] == ""
    assert client.get_progress()["state"]["interrupted"] is False


def test_progress_during_a_generation_with_its_current_image(server, client):
    server.reset_release()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.post, "txt2img", {**SMALL, "steps": 3, "script_name": HOLD_AFTER_TITLE})
        try:
            server.wait_until_generated_and_held()
            answer = client.get_progress()
            state = answer["state"]
            assert state["job"] == "txt2img" and state["source"] == "api" and state["job_count"] == 1
            assert state["sampling_step"] == state["sampling_steps"] == 3 and 0 < answer["progress"] <= 1
            assert answer["eta_relative"] >= 0
            preview = Image.open(io.BytesIO(base64.b64decode(answer["current_image"])))
            assert preview.size == (32, 32)
            assert server.get("progress", params={"skip_current_image": "true"}).json()["current_image"] is None
        finally:
            server.release()
        response = pending.result()
    assert response.status_code == 200 and len(response.json()["images"]) == 1
    server.reset_release()


def test_interrupt_stops_a_generation(server, client):
    with ThreadPoolExecutor(1) as pool, server.hold_next_generation():
        pending = pool.submit(server.post, "txt2img", {**SMALL, "n_iter": 2})
        server.wait_until_held()
        state = server.get("progress").json()["state"]
        assert state["job"] == "txt2img" and state["job_count"] == 2 and state["interrupted"] is False
        assert client.interrupt() == {}
        response = pending.result()
    assert response.status_code == 200
    info = json.loads(response.json()["info"])
    assert response.json()["images"] == [] and info["interrupted"] is True
    assert any(m.startswith("Interrupted: 0 of 2") for m in info["messages"]), info["messages"]
    assert txt2img(server)[0]["images"]  # the next request runs


def test_skip_ends_the_current_batch(server, client):
    with ThreadPoolExecutor(1) as pool:
        with server.hold_next_generation():
            pending = pool.submit(server.post, "txt2img", {**SMALL, "n_iter": 2, "steps": 4})
            server.wait_until_held()
            assert client.skip() is None
            assert server.get("progress").json()["state"]["skipped"] is True
        response = pending.result()  # let go: batch 1 stops after its first step, batch 2 runs whole
    info = json.loads(response.json()["info"])
    assert len(response.json()["images"]) == 2 and info["interrupted"] is False
    assert any(m.startswith("Skipped: batch 1 of 2") for m in info["messages"]), info["messages"]


def test_api_generation_shows_in_the_ui_status_line(server, gradio):
    assert "idle" in gradio.predict(api_name="/queue_status")
    with ThreadPoolExecutor(1) as pool, server.hold_next_generation():
        pending = pool.submit(server.post, "txt2img", SMALL)
        server.wait_until_held()
        status = gradio.predict(api_name="/queue_status")
        assert "busy: txt2img from the API" in status, status
    assert pending.result().status_code == 200


def test_ui_generation_shows_in_progress(server, gradio):
    with server.hold_next_generation():
        job = gradio.submit(SMALL["prompt"], "", steps=2, width=32, height=32, seed=4, api_name="/txt2img")
        server.wait_until_held()
        state = server.get("progress").json()["state"]
        assert state["job"] == "txt2img" and state["source"] == "ui", state
        assert "busy: txt2img from the UI" in gradio.predict(api_name="/queue_status")
    gallery, infotext, *_ = job.result(timeout=300)
    assert len(gallery) == 1 and "Seed: 4" in infotext
    server.wait_for_progress(lambda p: p["state"]["job_count"] == 0, "the UI's job did not end")


# -- create and train ----------------------------------------------------------------------------------------
def network_step(path: str) -> int:
    from extension.hypernetwork import read_info

    return read_info(Path(path)).step


def test_create_then_train_then_listed(server, client, folders):
    created = client.custom_post("sdapi/v1/create/hypernetwork", {"name": "api_made", "enable_sizes": ["48", "64"],
                                                                   "layer_structure": "1, 2, 1",
                                                                   "activation_func": "relu",
                                                                   "weight_init": "XavierNormal"})
    match = re.fullmatch(r"create hypernetwork filename: (.+)", created.info)
    assert match and Path(match.group(1)) == folders["hypernetworks"] / "api_made.safetensors"
    assert "api_made" in {item["name"] for item in client.get_hypernetworks()}
    # the missing parameters take the Train tab's defaults (learning rate, batch size, template...)
    trained = client.custom_post("sdapi/v1/train/hypernetwork", {
        "id_task": "task(1)", "hypernetwork_name": "api_made", "data_root": str(folders["dataset"]),
        "log_directory": str(folders["root"] / "logs"), "steps": 2, "training_width": 32, "training_height": 32})
    assert trained.info.startswith(f"train embedding complete: filename: {match.group(1)} error: None"), trained.info
    listed = {item["name"]: item["path"] for item in client.get_hypernetworks()}
    assert network_step(listed["api_made"]) == 2
    assert client.txt2img(prompt="a red circle <hypernet:api_made:1>", width=32, height=32,
                          seed=1).info["hypernetworks"] == [{"name": "api_made", "multiplier": 1.0}]
    again = server.post("create/hypernetwork", {"name": "api_made"})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def test_training_progress_and_interrupt_with_a_save(server, folders):
    assert server.post("create/hypernetwork", {"name": "api_long"}).status_code == 200  # the model's widths
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.post, "train/hypernetwork", {
            "hypernetwork_name": "api_long", "data_root": str(folders["dataset"]), "learn_rate": "1e-4",
            "log_directory": str(folders["root"] / "logs"), "steps": 100000, "training_width": 32,
            "training_height": 32, "create_image_every": 2, "save_hypernetwork_every": 0,
            "template_filename": "filewords.txt"})
        try:
            answer = server.wait_for_progress(lambda p: p["state"]["job"] == "train-hypernetwork"
                                              and p["state"]["job_no"] >= 3, "training did not reach step 3",
                                              timeout=300)
            assert answer["state"]["job_count"] == 100000 and answer["state"]["source"] == "api"
            assert "step" in answer["textinfo"] and 0 < answer["progress"] < 0.5
            with_image = server.get("progress").json()  # the latest preview (one every 2 steps)
            assert Image.open(io.BytesIO(base64.b64decode(with_image["current_image"]))).size == (32, 32)
        finally:
            assert server.post("interrupt").json() == {}
        response = pending.result()
    assert response.status_code == 200
    info = response.json()["info"]
    match = re.match(r"train embedding complete: filename: (.+?) error: None \(.*interrupted at step (\d+)", info)
    assert match, info
    assert network_step(match.group(1)) == int(match.group(2)) >= 3  # saved where it stopped


# -- bad requests: a 4xx naming the problem, and the server keeps serving ----------------------------------
BAD_TXT2IMG = [
    ({"width": 63}, 422, "width must be a multiple of 8"),
    ({"height": 100}, 422, "height must be a multiple of 8"),
    ({"width": 4096}, 422, "width must be between 16 and 2048"),
    ({"height": 8}, 422, "height must be between 16 and 2048"),
    ({"steps": 0}, 422, "steps must be between 1 and 10000"),
    ({"steps": 10001}, 422, "steps must be between 1 and 10000"),
    ({"batch_size": 0}, 422, "batch_size must be between 1 and 8"),
    ({"batch_size": 64}, 422, "batch_size must be between 1 and 8"),
    ({"n_iter": 101}, 422, "n_iter must be between 1 and 100"),
    ({"cfg_scale": 99}, 422, "cfg_scale must be between 0 and 30"),
    ({"seed": -7}, 422, "seed must be -1"),
    ({"width": "wide"}, 422, "width: Input should be a valid integer"),
    ({"sampler_name": "Euler z"}, 404, "unknown sampler 'Euler z'"),
    ({"sampler_name": None, "sampler_index": "k_nope"}, 404, "sampler_index: unknown sampler"),
    ({"scheduler": "wobbly"}, 404, "unknown schedule type 'wobbly'"),
    ({"override_settings": {"sd_model_checkpoint": "missing.safetensors"}}, 404, "'missing.safetensors' not found"),
    ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, 422, "outside the checkpoints folder"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 40}}, 422, "CLIP_stop_at_last_layers"),
    ({"override_settings": {"sd_hypernetwork": "../../secrets"}}, 422, "outside the hypernetworks folder"),
    ({"override_settings": {"sd_hypernetwork": "no_such_net"}}, 404, "unknown hypernetwork 'no_such_net'"),
    ({"prompt": "a cat <hypernet:../../../etc/passwd:1>"}, 422, "outside the hypernetworks folder"),
    ({"script_name": "no such script"}, 404, "no txt2img script 'no such script'"),
    ({"script_name": "Hypernetwork strength comparison", "script_args": [[NETWORK], "0, lots"]}, 422,
     "multiplier 'lots' is not a number"),
    ({"script_name": "hypernetwork strength comparison", "script_args": []}, 422, "script_args do not fit"),
]


@pytest.mark.parametrize("change, status, message", BAD_TXT2IMG, ids=[str(case[0]) for case in BAD_TXT2IMG])
def test_bad_txt2img_requests(server, change, status, message):
    response = server.post("txt2img", {**SMALL, **change})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()


BAD_OTHERS = [
    ("options", {"sd_model_checkpoint": "nope [0123456789]"}, 404, "'nope [0123456789]' not found"),
    ("options", {"CLIP_stop_at_last_layers": "many"}, 422, "not a number"),
    ("options", {"extra_networks_default_multiplier": "nan"}, 422, "not a finite number"),
    ("options", {"samples_format": "jpg"}, 422, "only png"),
    ("options", {"send_seed": "sometimes"}, 422, "send_seed"),
    ("options", ["not", "an", "object"], 422, "Input should be a valid dictionary"),
    ("create/hypernetwork", {"name": "../../escape"}, 422, "would leave the hypernetworks folder"),
    ("create/hypernetwork", {"name": "sizes", "enable_sizes": ["wide"]}, 422, "enable_sizes"),
    ("create/hypernetwork", {"name": "badinit", "weight_init": "Golden"}, 422, "Golden"),
    ("create/hypernetwork", {}, 422, "name: Field required"),
    ("train/hypernetwork", {"hypernetwork_name": "../demo_style", "data_root": "x"}, 422, "outside the hypernetworks"),
    ("train/hypernetwork", {"hypernetwork_name": "nobody", "data_root": "x"}, 404, "unknown hypernetwork 'nobody'"),
    ("train/hypernetwork", {"hypernetwork_name": NETWORK, "data_root": "x", "template_filename": "../../etc/passwd"},
     422, "is a path"),
    ("train/hypernetwork", {"hypernetwork_name": NETWORK, "data_root": "x", "template_filename": "nope.txt"},
     404, "no template 'nope.txt'"),
    ("train/hypernetwork", {"hypernetwork_name": NETWORK}, 422, "data_root"),
    ("train/hypernetwork", {"hypernetwork_name": NETWORK, "data_root": "x", "steps": 0}, 422, "steps"),
    ("train/hypernetwork", {"hypernetwork_name": NETWORK, "data_root": "x", "learn_rate": "fast"}, 422, "learning rate"),
]


@pytest.mark.parametrize("route, body, status, message", BAD_OTHERS,
                         ids=[f"{case[0]}-{case[1]}" for case in BAD_OTHERS])
def test_bad_requests_to_other_routes(server, route, body, status, message):
    response = server.post(route, body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()


def test_malformed_json_and_the_server_keeps_serving(server):
    for body in (b"{\"prompt\": ", b"not json at all", b"{\"width\": 64,}"):
        response = requests.post(f"{server.api}/txt2img", data=body, headers={"Content-Type": "application/json"},
                                 timeout=60)
        assert response.status_code == 400 and "not valid JSON" in response.json()["detail"], response.text
    assert server.get("progress").status_code == 200
    assert txt2img(server)[0]["images"]


def test_a_failed_options_post_changes_nothing(server):
    before = server.get("options").json()
    response = server.post("options", {"send_seed": not before["send_seed"], "sd_model_checkpoint": "nope"})
    assert response.status_code == 404
    assert server.get("options").json()["send_seed"] == before["send_seed"]


# -- the page, the settings, the schema -----------------------------------------------------------------------
def test_page_is_behind_its_login_and_the_api_is_not(server):
    assert requests.get(f"{server.url}/config", timeout=30).status_code == 401
    session = requests.Session()
    login = session.post(f"{server.url}/login", data={"username": PAGE_AUTH[0], "password": PAGE_AUTH[1]}, timeout=30)
    assert login.status_code == 200
    assert session.get(f"{server.url}/config", timeout=30).status_code == 200
    assert server.get("sd-models").status_code == 200  # --gradio-auth is the page's; the API has --api-auth


def test_every_option_of_the_settings_tab_is_in_the_api(server):
    session = requests.Session()
    session.post(f"{server.url}/login", data={"username": PAGE_AUTH[0], "password": PAGE_AUTH[1]}, timeout=30)
    config = session.get(f"{server.url}/config", timeout=30).json()
    keys = {c["props"]["elem_id"][len("setting_"):] for c in config["components"]
            if str(c.get("props", {}).get("elem_id") or "").startswith("setting_")}
    assert {"sd_model_checkpoint", "CLIP_stop_at_last_layers", "samples_save", "sd_hypernetwork"} <= keys
    options = server.get("options").json()
    assert keys <= set(options), keys - set(options)
    response = server.post("options", {key: options[key] for key in keys})  # each can be set (to itself)
    assert response.status_code == 200, response.text
    assert {key: server.get("options").json()[key] for key in keys} == {key: options[key] for key in keys}


ROUTES = {
    ("post", "txt2img"), ("get", "progress"), ("post", "interrupt"), ("post", "skip"), ("get", "options"),
    ("post", "options"), ("get", "cmd-flags"), ("get", "samplers"), ("get", "schedulers"), ("get", "sd-models"),
    ("post", "refresh-checkpoints"), ("get", "hypernetworks"), ("post", "refresh-hypernetworks"), ("get", "scripts"),
    ("get", "memory"), ("get", "upscalers"), ("get", "latent-upscale-modes"), ("get", "sd-vae"), ("post", "refresh-vae"),
    ("get", "face-restorers"), ("get", "realesrgan-models"), ("get", "prompt-styles"), ("get", "embeddings"),
    ("post", "create/hypernetwork"), ("post", "train/hypernetwork"),
    ("post", "img2img"), ("post", "png-info"), ("get", "loras"), ("post", "refresh-loras"), ("get", "script-info"),
}


def test_schema_lists_every_route_with_a1111_field_names(server):
    schema = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    listed = {(method, path[len("/sdapi/v1/"):]) for path, item in schema["paths"].items()
              if path.startswith("/sdapi/v1/") for method in item}
    assert listed == ROUTES
    models = schema["components"]["schemas"]
    txt2img_fields = set(models["StableDiffusionProcessingTxt2Img"]["properties"])
    assert {"prompt", "sampler_index", "sampler_name", "scheduler", "override_settings", "send_images", "save_images",
            "enable_hr", "n_iter", "cfg_scale", "alwayson_scripts", "script_args"} <= txt2img_fields
    assert {"images", "parameters", "info"} <= set(models["TextToImageResponse"]["properties"])
    assert {"prompt", "init_images", "mask", "denoising_strength", "resize_mode", "mask_blur", "inpainting_fill",
            "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert", "initial_noise_multiplier",
            "include_init_images"} <= set(models["StableDiffusionProcessingImg2Img"]["properties"])
    assert "enable_hr" not in models["StableDiffusionProcessingImg2Img"]["properties"]
    assert {"send_seed", "sd_model_checkpoint", "CLIP_stop_at_last_layers"} <= set(models["Options"]["properties"])
    assert {"api", "nowebui", "api_auth", "port"} <= set(models["Flags"]["properties"])
    for path, item in schema["paths"].items():
        if path.startswith("/sdapi/v1/"):
            for method, operation in item.items():
                assert operation.get("summary"), (method, path)
    docs = requests.get(f"{server.url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_cmd_flags_and_scripts(server):
    flags = server.get("cmd-flags").json()
    assert flags["api"] is True and flags["nowebui"] is False and flags["port"] == server.port
    assert flags["gradio_auth"] == "(hidden)"  # never the password
    assert HOLD_AFTER_TITLE in server.get("scripts").json()["txt2img"]
    memory = server.get("memory").json()
    assert memory["ram"]["used"] > 0 and "cuda" in memory


# -- the API alone, behind --api-auth -----------------------------------------------------------------------
def test_api_auth_refuses_and_admits(api_only):
    assert api_only.get("sd-models").status_code == 401
    wrong = api_only.get("sd-models", auth=("alice", "wonder"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Basic"
    assert "incorrect username or password" in wrong.json()["detail"]
    assert api_only.get("sd-models", auth=("mallory", "builder")).status_code == 401
    for route in ("txt2img", "options", "interrupt", "train/hypernetwork", "create/hypernetwork"):
        assert api_only.post(route, {}).status_code == 401, route
    for user, password in API_USERS.items():
        assert api_only.get("sd-models", auth=(user, password)).status_code == 200


def test_webuiapi_with_credentials_on_the_api_alone(api_only):
    client = webuiapi.WebUIApi(host="127.0.0.1", port=api_only.port, username="bob", password="builder", steps=2)
    result = client.txt2img(prompt=f"a red circle <hypernet:{NETWORK}:0.8>", width=32, height=32, seed=2)
    assert result.image.size == (32, 32) and result.info["hypernetworks"] == [{"name": NETWORK, "multiplier": 0.8}]
    log = api_only.log()
    assert re.search(r"API POST /sdapi/v1/txt2img 200 ", log) and "API GET /sdapi/v1/sd-models 401 " in log


def test_nowebui_serves_no_page(api_only):
    assert requests.get(f"{api_only.url}/", timeout=30).status_code == 404
    assert requests.get(f"{api_only.url}/gradio_api/info", timeout=30).status_code == 404
    assert requests.get(f"{api_only.url}/openapi.json", timeout=30).status_code == 401  # behind --api-auth too
    assert requests.get(f"{api_only.url}/openapi.json", auth=("bob", "builder"), timeout=30).status_code == 200
    flags = api_only.get("cmd-flags", auth=("bob", "builder")).json()
    assert flags["nowebui"] is True and flags["api_auth"] == "(hidden)"


def test_nowebui_port_defaults_to_7861():
    from extension.cli_parser import server_parser
    from extension.ui.state import ServeOptions

    assert ServeOptions.from_namespace(server_parser().parse_args(["--nowebui"])).port == 7861
    assert ServeOptions.from_namespace(server_parser().parse_args([])).port == 7860
    assert ServeOptions.from_namespace(server_parser().parse_args(["--nowebui", "--port", "9000"])).port == 9000


def test_queue_status_line():
    """The UI's status line under Generate, from the job runner the API shares."""
    import threading
    from types import SimpleNamespace

    from extension.jobs import JobRunner
    from extension.ui.txt2img import queue_status

    ctx = SimpleNamespace(jobs=JobRunner())
    assert queue_status(ctx) == "idle"
    with ctx.jobs.job("txt2img", job_count=1, source="api") as job:
        job.update(3, 20)
        waiter = threading.Thread(target=lambda: _run_job(ctx.jobs))
        waiter.start()
        deadline = time.monotonic() + 30
        while len(ctx.jobs.waiting()) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue_status(ctx) == "busy: txt2img from the API, step 3/20; 1 waiting"
        job.update(2, 4, job_no=1)
        job.job_count = 3
        assert queue_status(ctx) == "busy: txt2img from the API, image 2/3, step 2/4; 1 waiting"
    waiter.join(timeout=30)
    assert queue_status(ctx) == "idle"


def _run_job(jobs):
    with jobs.job("txt2img", source="ui"):
        pass


def test_readme_webuiapi_example(server, client, folders):
    """The README's webuiapi example runs as written against a server with a network called "demo"."""
    from conftest import ROOT

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## REST API", 1)[1]
    block = re.search(r"```py\n(.*?)```", section, flags=re.S).group(1)
    assert "port=7860" in block
    demo = folders["hypernetworks"] / "demo.pt"
    shutil.copyfile(folders["hypernetworks"] / f"{NETWORK}.pt", demo)
    client.custom_post("sdapi/v1/refresh-hypernetworks")
    try:
        exec(compile(block.replace("port=7860", f"port={server.port}"), "README.md", "exec"), {"__name__": "readme"})
    finally:
        demo.unlink()
        client.custom_post("sdapi/v1/refresh-hypernetworks")


def test_api_auth_flags_parse(tmp_path):
    from extension.api.auth import api_credentials

    users = tmp_path / "users.txt"
    users.write_text("# API users\ncarol:sea:shell\n\ndave:one, erin:two\n", encoding="utf-8")
    assert api_credentials("alice:wonder", users) == {"alice": "wonder", "carol": "sea:shell", "dave": "one",
                                                      "erin": "two"}
    assert api_credentials(None, None) == {}
    with pytest.raises(SystemExit, match="'nopassword' is not user:password"):
        api_credentials("nopassword")
    with pytest.raises(SystemExit, match="cannot read"):
        api_credentials(None, tmp_path / "missing.txt")


# -- img2img and inpainting --------------------------------------------------------------------------------------
def encode_picture(image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{text}" if data_url else text


def init_picture(size: int = 32) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    return Image.fromarray((np.stack([x, y, 1 - x], axis=-1) * 200 + 30).astype(np.uint8))


def left_half(size: int = 32) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    return mask


IMG2IMG = {**SMALL, "steps": 4, "denoising_strength": 0.75}


def img2img(server, **fields) -> tuple[dict, dict]:
    """``(answer, info)`` of a 200 img2img of :func:`init_picture` with ``IMG2IMG`` changed by ``fields``."""
    response = server.post("img2img", {**IMG2IMG, "init_images": [encode_picture(init_picture())], **fields})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer, json.loads(answer["info"])


def test_img2img_with_and_without_a_tag(server):
    plain, plain_info = img2img(server)
    tagged, tagged_info = img2img(server, prompt=f"{SMALL['prompt']} <hypernet:{NETWORK}:1>",
                                  init_images=[encode_picture(init_picture(), data_url=True)])
    assert pixels(plain["images"][0]).shape == (32, 32, 3)
    assert not np.array_equal(pixels(plain["images"][0]), pixels(tagged["images"][0]))
    assert tagged_info["hypernetworks"] == [{"name": NETWORK, "multiplier": 1.0}] and plain_info["hypernetworks"] == []
    assert "Denoising strength: 0.75" in plain_info["infotexts"][0] and "Mask blur" not in plain_info["infotexts"][0]
    assert plain_info["extra_generation_params"]["Denoising strength"] == 0.75
    assert plain_info["denoising_strength"] == 0.75 and plain_info["seed"] == 11
    assert plain["parameters"]["init_images"] is None  # A1111 leaves the pictures out unless include_init_images
    again, _ = img2img(server, include_init_images=True)
    assert again["parameters"]["init_images"] and np.array_equal(pixels(again["images"][0]), pixels(plain["images"][0]))


def test_img2img_inpainting_with_a_mask(server):
    original = np.asarray(init_picture())
    answer, info = img2img(server, mask=encode_picture(left_half()), mask_blur=0, inpaint_full_res=False,
                           inpainting_fill=1)
    image = pixels(answer["images"][0])
    assert np.array_equal(image[:, 16:], original[:, 16:])  # not masked: the original
    assert np.abs(image[:, :16].astype(float) - original[:, :16]).mean() > 5
    blurred, info = img2img(server, mask=encode_picture(left_half()), mask_blur=4, inpainting_fill=0)
    assert "Mask blur: 4" in info["infotexts"][0] and "Masked content: fill" in info["infotexts"][0]
    assert "Inpaint area: Only masked" in info["infotexts"][0] and info["extra_generation_params"]["Mask blur"] == "4"


def test_webuiapi_img2img_and_inpainting(client):
    plain = client.img2img(images=[init_picture()], prompt=SMALL["prompt"], width=32, height=32, seed=11,
                           denoising_strength=0.6)
    inpainted = client.img2img(images=[init_picture()], mask_image=left_half(), prompt=SMALL["prompt"], width=32,
                               height=32, seed=11, inpaint_full_res=False, mask_blur=0, inpainting_fill=1)
    assert plain.image.size == inpainted.image.size == (32, 32)
    assert "Denoising strength: 0.6" in plain.info["infotexts"][0]
    assert np.array_equal(np.asarray(inpainted.image)[:, 16:], np.asarray(init_picture())[:, 16:])


BAD_IMG2IMG = [
    ({"init_images": []}, 422, "init_images: give at least one picture"),
    ({"init_images": None}, 422, "init_images: give at least one picture"),
    ({"init_images": ["not base64 at all!"]}, 422, "init_images[0]: not base64"),
    ({"init_images": [base64.b64encode(b"GIF89a but not really").decode()]}, 422, "init_images[0]: not an image"),
    ({"mask": "data:image/png;base64,AAAA"}, 422, "mask: not an image"),
    ({"mask": "small"}, 422, "mask: its size 16x16 differs from init_images[0]'s 32x32"),
    ({"denoising_strength": 1.5}, 422, "denoising_strength must be between 0 and 1"),
    ({"denoising_strength": -0.25}, 422, "denoising_strength must be between 0 and 1"),
    ({"resize_mode": 5}, 422, "resize_mode must be one of 0..3"),
    ({"inpainting_fill": -1}, 422, "inpainting_fill must be one of 0..3"),
    ({"mask_blur": -2}, 422, "mask_blur must be between 0 and"),
    ({"script_name": "hypernetwork strength comparison"}, 404, "no img2img script"),
]


@pytest.mark.parametrize("change, status, message", BAD_IMG2IMG, ids=[str(case[0])[:40] for case in BAD_IMG2IMG])
def test_bad_img2img_requests(server, change, status, message):
    if change.get("mask") == "small":
        change = {"mask": encode_picture(left_half(16))}
    body = {**IMG2IMG, "init_images": [encode_picture(init_picture())], **change}
    response = server.post("img2img", body)
    assert response.status_code == status, response.text
    assert response.json()["error"] and message in response.json()["detail"], response.json()
