"""The routes client libraries call beyond txt2img, with those libraries as published, unchanged: ``webuiapi``
0.9.17 and ``sd-backend-client`` 0.5.0 (both pinned in requirements.txt), and with ``requests`` where a client
has no call for it. Against real servers on 127.0.0.1: the UI with the API on the random-weight demo model, and
the API alone (``--nowebui``) on the trained demo model with ``--allowed-hosts``.

What a client found missing (issue 18): ``img2img`` and inpainting (webuiapi, sd-backend-client), ``png-info``, ``loras``, ``script-info``; a missing route answering
FastAPI's bare 404; any ``Host`` name served (DNS rebinding); the demo model without its hash in ``sd-models``;
"available: none" where the built-in model is available; more than 150 steps refused.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from api_server import ApiServer
from builders import make_hypernetwork_dir

SMALL = {"prompt": "a red circle on a white background", "width": 32, "height": 32, "steps": 2, "seed": 5,
         "sampler_name": "Euler a"}
NETWORK = "demo_style"
LAN_NAME = "sd-box.lan"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    make_hypernetwork_dir(root / "hypernetworks")
    return root


@pytest.fixture(scope="module")
def server(folders):
    (folders / "ui").mkdir()
    with ApiServer(folders / "ui", folders / "hypernetworks") as running:
        yield running


@pytest.fixture(scope="module")
def api_only(folders):
    """The API alone, on the trained demo model (it has files, so a hash), answering to one LAN name too."""
    (folders / "api").mkdir()
    with ApiServer(folders / "api", folders / "hypernetworks", nowebui=True, demo_random=False,
                   allowed_hosts=LAN_NAME) as running:
        yield running


def backend_client(server):
    from sd_backend_client import A1111Webservice

    return A1111Webservice(server.url)


def png_b64(image: Image.Image, **text) -> str:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


# -- png-info --------------------------------------------------------------------------------------------
def test_png_info_reads_a_generation_back_as_automatic1111(server):
    answer = server.post("txt2img", {**SMALL, "prompt": f"{SMALL['prompt']} <hypernet:{NETWORK}:0.7>"})
    assert answer.status_code == 200, answer.text
    image_b64 = answer.json()["images"][0]
    infotext = json.loads(answer.json()["info"])["infotexts"][0]

    read = server.post("png-info", {"image": image_b64})
    assert read.status_code == 200, read.text
    body = read.json()
    assert set(body) == {"info", "items", "parameters"}
    assert body["info"] == infotext
    params = body["parameters"]
    assert params["Prompt"] == f"{SMALL['prompt']} <hypernet:{NETWORK}:0.7>"
    assert params["Seed"] == 5 and params["Steps"] == 2 and params["Size-1"] == 32 and params["Size-2"] == 32
    assert params["Hypernet hashes"].startswith(f"{NETWORK}: ")
    # the data: URL form, and webuiapi's call, give the same
    assert server.post("png-info", {"image": f"data:image/png;base64,{image_b64}"}).json() == body
    client = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    from_client = client.png_info(Image.open(io.BytesIO(base64.b64decode(image_b64))))
    assert from_client.info == infotext and from_client.parameters["Seed"] == 5


def test_png_info_of_an_image_without_infotext_and_its_other_fields(server):
    plain = server.post("png-info", {"image": png_b64(Image.new("RGB", (8, 8)), Software="paint", note="hello")})
    assert plain.status_code == 200, plain.text
    assert plain.json()["info"] == "" and plain.json()["items"] == {"Software": "paint", "note": "hello"}
    assert plain.json()["parameters"]["Prompt"] == ""


@pytest.mark.parametrize("image, message", [
    ("", "image: no image given"),
    ("%%% not base64 %%%", "image: not base64"),
    (base64.b64encode(b"GIF89a but not really").decode(), "image: not an image"),
    ("data:image/png,abc", "must be base64"),
])
def test_png_info_refuses_what_is_not_an_image(server, image, message):
    answer = server.post("png-info", {"image": image})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "BadRequest" and message in answer.json()["detail"]


# -- loras and script-info -----------------------------------------------------------------------------------
def test_loras_are_an_empty_list_in_every_client(server):
    assert server.get("loras").json() == []
    assert server.post("refresh-loras").status_code == 200
    assert webuiapi.WebUIApi(host="127.0.0.1", port=server.port).get_loras() == []
    assert backend_client(server).list_loras() == []


def test_script_info_lists_the_scripts_with_their_arguments(server):
    infos = backend_client(server).get_script_info()  # validated by the client's own models
    by_name = {info.name: info for info in infos}
    comparison = by_name["hypernetwork strength comparison"]
    assert not comparison.is_alwayson and not comparison.is_img2img
    assert [arg.label for arg in comparison.args] == ["Hypernetworks (rows)", "Multipliers (columns)"]
    assert NETWORK in comparison.args[0].choices and comparison.args[1].value == "0, 0.5, 1, 1.5"
    # every name is one script_name takes, and the titles /scripts lists
    assert sorted(by_name) == sorted(server.get("scripts").json()["txt2img"])
    result = server.post("txt2img", {**SMALL, "script_name": "hypernetwork strength comparison",
                                     "script_args": [[NETWORK], comparison.args[1].value]})
    assert result.status_code == 200, result.text


# -- img2img and inpainting in the clients -------------------------------------------------------------------
def striped_picture(size: int = 32) -> Image.Image:
    picture = Image.new("RGB", (size, size), (230, 230, 230))
    for x in range(0, size, 8):
        picture.paste((200, 40, 40), (x, 0, x + 4, size))
    return picture


def left_half_mask(size: int = 32) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    return mask


def test_webuiapi_img2img_with_and_without_a_tag(server):
    client = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    common = dict(images=[striped_picture()], width=32, height=32, steps=3, seed=11, denoising_strength=0.7,
                  sampler_name="Euler a")
    plain = client.img2img(prompt=SMALL["prompt"], **common)
    tagged = client.img2img(prompt=f"{SMALL['prompt']} <hypernet:{NETWORK}:1>", **common)
    assert plain.image.size == tagged.image.size == (32, 32)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(tagged.image))
    assert "Hypernet hashes" not in plain.info["infotexts"][0]
    assert f'Hypernet hashes: "{NETWORK}: ' in tagged.info["infotexts"][0] and "Denoising strength: 0.7" in tagged.info["infotexts"][0]


def test_sd_backend_client_img2img_and_inpainting(api_only):
    """On the trained demo model: the client requires the ``sd_model_hash`` a model file has (the random-weight
    model has none, as a model without a file has none in AUTOMATIC1111)."""
    from sd_backend_client import DiffusionParams

    client = backend_client(api_only)
    common = dict(width=32, height=32, steps=3, seed=11, sampler="Euler a", denoising_strength=0.7,
                  init_images=[striped_picture()])
    plain = client.submit_img2img(DiffusionParams(prompt=SMALL["prompt"], **common)).wait(timeout=300)
    tagged = client.submit_img2img(DiffusionParams(prompt=f"{SMALL['prompt']} <hypernet:{NETWORK}:1>",
                                                   **common)).wait(timeout=300)
    assert len(plain.images) == len(tagged.images) == 1 and plain.images[0].size == (32, 32)
    assert plain.seeds == [11]
    assert not np.array_equal(np.asarray(plain.images[0].convert("RGB")), np.asarray(tagged.images[0].convert("RGB")))
    inpainted = client.submit_inpaint(DiffusionParams(prompt=SMALL["prompt"], mask=left_half_mask(), mask_blur=0,
                                                      inpaint_full_res=False, **common)).wait(timeout=300)
    result = np.asarray(inpainted.images[0].convert("RGB"))
    original = np.asarray(striped_picture())
    assert np.array_equal(result[:, 16:], original[:, 16:])  # outside the mask: the picture as it was
    assert np.abs(result[:, :16].astype(float) - original[:, :16]).mean() > 1


# -- missing routes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [("GET", "/sdapi/v1/no-such-route"), ("POST", "/sdapi/v1/img3img"),
                                          ("GET", "/sdapi/v2/txt2img"), ("DELETE", "/sdapi/v1/nope/deeper")])
def test_a_missing_route_is_a_404_in_the_api_error_shape(server, api_only, method, path):
    for running in (server, api_only):
        answer = requests.request(method, running.url + path, timeout=30)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "NoSuchRoute", answer.json()
        assert f"no such route: {method} {path}" in answer.json()["detail"]
    # a missing name on a route that exists reads differently
    unknown = server.post("options", {"sd_model_checkpoint": "missing-model"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"


def test_a_route_asked_with_the_wrong_method_is_a_405_naming_the_right_one(server, api_only):
    for running in (server, api_only):
        answer = requests.get(f"{running.api}/txt2img", timeout=30)
        assert answer.status_code == 405, answer.text
        assert answer.json()["error"] == "MethodNotAllowed" and answer.headers["Allow"] == "POST"
    outside = requests.get(f"{api_only.url}/not-the-api", timeout=30)  # --nowebui: outside /sdapi too
    assert outside.status_code == 404 and outside.json()["error"] == "NoSuchRoute"


def test_a_missing_route_is_behind_the_api_login(tmp_path):
    make_hypernetwork_dir(tmp_path / "hn")
    with ApiServer(tmp_path, tmp_path / "hn", nowebui=True, api_auth="ann:pw") as running:
        assert requests.get(f"{running.api}/no-such-route", timeout=30).status_code == 401  # routes not probed
        answer = requests.get(f"{running.api}/no-such-route", auth=("ann", "pw"), timeout=30)
        assert answer.status_code == 404 and answer.json()["error"] == "NoSuchRoute"


# -- Host names (DNS rebinding) ----------------------------------------------------------------------------
def test_a_foreign_host_name_is_refused_on_the_page_and_the_api(server):
    for path in ("/", "/sdapi/v1/options", "/gradio_api/info", "/docs", "/sdapi/v1/no-such-route"):
        answer = requests.get(server.url + path, headers={"Host": "evil.example"}, timeout=30)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
        assert answer.json()["error"] == "HostNotAllowed" and "--allowed-hosts evil.example" in answer.json()["detail"]
    post = requests.post(f"{server.api}/create/hypernetwork", json={"name": "rebound"},
                         headers={"Host": f"evil.example:{server.port}"}, timeout=30)
    assert post.status_code == 403 and "rebound" not in [n["name"] for n in server.get("hypernetworks").json()]
    for name in ("127.0.0.1", f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST.",
                 f"[::1]:{server.port}", "app.localhost"):
        assert requests.get(f"{server.api}/options", headers={"Host": name}, timeout=30).status_code == 200, name
    assert requests.get(server.url + "/", headers={"Host": f"localhost:{server.port}"}, timeout=30).status_code == 200


def test_allowed_hosts_names_more_host_names(api_only):
    assert requests.get(f"{api_only.api}/options", headers={"Host": f"{LAN_NAME}:{api_only.port}"},
                        timeout=30).status_code == 200
    assert requests.get(f"{api_only.api}/options", headers={"Host": "other.lan"}, timeout=30).status_code == 403


def test_allowed_hosts_rules():
    from extension.host_header import AllowedHosts

    local = AllowedHosts()
    assert all(local.allows(h) for h in ("127.0.0.1:7860", "[::1]:7860", "localhost", "x.localhost", "10.0.0.5"))
    assert not any(local.allows(h) for h in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io"))
    assert AllowedHosts(["*"]).allows("anything.example")
    named = AllowedHosts.from_options(type("O", (), {"allowed_hosts": "a.lan, B.lan", "server_name": "box",
                                                     "listen": False})())
    assert named.allows("a.lan:80") and named.allows("b.lan") and named.allows("box") and not named.allows("c.lan")


# -- sd-models, the built-in model -------------------------------------------------------------------------
def test_the_built_in_model_has_the_hash_its_infotext_carries(api_only):
    models = api_only.get("sd-models").json()
    demo = next(model for model in models if model["model_name"] == "demo")
    assert demo["sha256"] and len(demo["sha256"]) == 64 and demo["hash"] == demo["sha256"][:10]
    answer = api_only.post("txt2img", SMALL)
    assert answer.status_code == 200, answer.text
    assert f"Model hash: {demo['hash']}" in json.loads(answer.json()["info"])["infotexts"][0]
    # webuiapi matches models on that sha256
    client = webuiapi.WebUIApi(host="127.0.0.1", port=api_only.port)
    assert any(model["sha256"] == demo["sha256"] for model in client.get_sd_models())


def test_an_unknown_checkpoint_names_the_built_in_model_among_those_available(server):
    answer = server.post("options", {"sd_model_checkpoint": "not-here"})
    assert answer.status_code == 404
    detail = answer.json()["detail"]
    assert "available: demo (built in)" in detail and "none" not in detail


# -- steps ---------------------------------------------------------------------------------------------------
def test_more_steps_than_the_slider_are_taken_and_the_run_stays_interruptible(server):
    answer = server.post("txt2img", {**SMALL, "steps": 151, "width": 16, "height": 16})
    assert answer.status_code == 200, answer.text
    assert "Steps: 151" in json.loads(answer.json()["info"])["infotexts"][0]

    results = {}
    worker = threading.Thread(target=lambda: results.update(answer=server.post(
        "txt2img", {**SMALL, "steps": 5000, "width": 16, "height": 16})))
    worker.start()
    try:
        progress = server.wait_for_progress(lambda p: p["state"]["sampling_step"] >= 3
                                            and p["state"]["sampling_steps"] == 5000, "the long run did not start")
        assert progress["state"]["job"] == "txt2img"
    finally:
        started = time.monotonic()
        server.post("interrupt")
        worker.join(120)
    assert results["answer"].status_code == 200, results["answer"].text
    assert time.monotonic() - started < 60
    info = json.loads(results["answer"].json()["info"])
    assert len(results["answer"].json()["images"]) == 1  # decoded from where it got to, as AUTOMATIC1111
    assert info["interrupted"] and any("Interrupted" in message for message in info["messages"])
