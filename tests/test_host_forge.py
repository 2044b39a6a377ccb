"""The extension inside a real Forge: its own venv from its own pins, started headless on CPU on 127.0.0.1, with a
random-weights SD 1.5 checkpoint at the real shapes (``tests/hosts/``).

Without a Forge tree (``FORGE_DIR``, or ``../shared/hosts/forge-*.tar.gz``) these tests are skipped with the reason,
except under CI, where they fail. The first run on a machine builds Forge's venv (several minutes) and the
checkpoint; later runs re-use both.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.builders import make_hypernetwork
from tests.hosts.host_env import FORGE, HostUnavailable
from tests.hosts.host_server import HostServer

SD1_WIDTHS = [768, 320, 640, 1280]
AUTH = ("tester", "s3cret")
BASE = {"negative_prompt": "", "steps": 3, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler",
        "cfg_scale": 7}
A1111_FIXTURES = Path(__file__).parent / "fixtures" / "a1111"

# What the other hosts' modules import and run on their host (``from tests.test_host_forge import *``): the
# fixtures and helpers, and every check that is not about Forge's own backend.
__all__ = [
    "bare_images", "digest", "hypernetwork_dir", "other_extensions", "server", "txt2img",
    "test_a_folder_of_hostile_and_huge_files", "test_a_tag_changes_the_image_and_the_infotext_names_the_network",
    "test_add_hypernetwork_to_prompt_setting", "test_an_infotext_pasted_back_gives_the_same_image",
    "test_create_writes_a_file_that_lists_and_loads", "test_img2img_and_hires_fix_apply_the_network",
    "test_interrupt_stops_training_with_a_save", "test_problems_are_reported_and_the_image_is_still_made",
    "test_refresh_sees_a_new_file", "test_several_tags_stack_in_prompt_order",
    "test_the_hosts_page_cards_click_generate_and_reload_ui", "test_the_listing_has_every_file_and_each_error",
    "test_the_paste_button_reads_an_infotext_back_into_the_page", "test_the_routes_need_the_hosts_api_auth",
    "test_the_train_tab_creates_trains_with_progress_and_previews",
    "test_train_through_the_api_on_the_loaded_checkpoint", "test_without_a_tag_the_images_are_the_hosts_own",
    "unet_equality",
]


def require(host):
    try:
        tree = host.source_tree()
    except HostUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the {host.title} host: {exc}")
        pytest.skip(str(exc))
    return tree


@pytest.fixture(scope="module")
def host():
    """Which host this module's servers run (``tests/test_host_forge_classic.py`` runs the same tests on another)."""
    return FORGE


@pytest.fixture(scope="module")
def other_extensions() -> dict:
    """Extensions installed beside ours in this module's servers (``HostServer(other_extensions=...)``)."""
    return {}


@pytest.fixture(scope="module")
def hypernetwork_dir(tmp_path_factory) -> Path:
    """The folder every Forge of this module reads: each format, a subfolder, an AUTOMATIC1111 file, a network for
    another model, a broken file and a hostile one."""
    folder = tmp_path_factory.mktemp("hypernetworks")
    make_hypernetwork("style_relu", SD1_WIDTHS, seed=1, layer_structure=[1, 0.5, 1]).save(
        folder / "style_relu.safetensors")
    (folder / "sub").mkdir()
    make_hypernetwork("style_linear", SD1_WIDTHS, seed=2, layer_structure=[1, 1], activation_func=None).save(
        folder / "sub" / "style_linear.pt")
    make_hypernetwork("old_style", SD1_WIDTHS, seed=3, layer_structure=[1, 1]).save(folder / "old_style.ckpt")
    make_hypernetwork("relu_pt", SD1_WIDTHS, seed=6, layer_structure=[1, 2, 1]).save(folder / "relu_pt.pt")
    make_hypernetwork("misfit", [1024], seed=4, layer_structure=[1, 1]).save(folder / "misfit.safetensors")
    (folder / "a1111_plain.pt").write_bytes((A1111_FIXTURES / "plain_linear.pt").read_bytes())
    (folder / "broken.pt").write_bytes(b"this is not a hypernetwork")
    from tests.hostile_files import protocol0_pickle  # the same attack the standalone tests use

    marker = folder.parent / "hostile-ran"
    (folder / "hostile.pt").write_bytes(protocol0_pickle(marker))
    (folder / "style_relu.txt").write_text("A ReLU test style.")
    return folder


@pytest.fixture(scope="module")
def bare_images(host, tmp_path_factory, hypernetwork_dir):
    """What the host without the extension draws for the requests the comparisons use."""
    require(host)
    requests = {"plain": {"prompt": "a cat"}, "batch": {"prompt": "a red house", "batch_size": 2, "seed": 11},
                "eaten_tag": {"prompt": "a cat <hypernet:style_relu:1>"},
                # AUTOMATIC1111 applies .pt files itself: what its own code draws for them
                "pt_linear": {"prompt": "a cat <hypernet:style_linear:0.7>"},
                "pt_relu": {"prompt": "a cat <hypernet:relu_pt:0.8>"}}
    with HostServer(tmp_path_factory.mktemp(f"{host.name}-bare"), hypernetwork_dir, host=host,
                    with_extension=False) as server:
        return {name: server.api("POST", "txt2img", {**BASE, **body}) for name, body in requests.items()}


@pytest.fixture(scope="module")
def server(host, tmp_path_factory, hypernetwork_dir, bare_images, other_extensions):
    require(host)
    workdir = tmp_path_factory.mktemp(f"{host.name}-ext")
    from extension.demo.dataset import write_folder

    write_folder(workdir / "data" / "pictures", 3, seed=3, size=64)
    with HostServer(workdir, hypernetwork_dir, host=host, auth=AUTH, other_extensions=other_extensions,
                    extra_args=("--api-auth", ":".join(AUTH), "--train-data-dir", str(workdir / "data"))) as server:
        server.dataset = workdir / "data" / "pictures"
        yield server


def open_page(browser, server, on_dialog=None):
    """The host's page at the tests' window size, loaded up to its txt2img prompt box (returned)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    if on_dialog is not None:
        page.on("dialog", on_dialog)
    page.goto(server.url)
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.wait_for()
    return page, prompt


def train_tab_buttons(page, host):
    """The top-level tab of our Train tab: "Train" in the Forge family, "Train hypernetwork" in AUTOMATIC1111 (whose
    own Train tab stays)."""
    label = "Train hypernetwork" if host.name == "a1111" else "Train"
    return page.locator("#tabs > .tab-nav button").filter(has_text=re.compile(rf"^\s*{label}\s*$"))


def digest(answer: dict) -> list[str]:
    """The sha256 of each image's pixels (the PNG's own bytes also hold its infotext, which differs by prompt)."""
    from PIL import Image

    out = []
    for image in answer["images"]:
        with Image.open(io.BytesIO(base64.b64decode(image))) as picture:
            out.append(hashlib.sha256(picture.convert("RGB").tobytes()).hexdigest())
    return out


def txt2img(server, prompt: str, **more) -> tuple[list[str], str]:
    answer = server.api("POST", "txt2img", {**BASE, "prompt": prompt, **more})
    return digest(answer), json.loads(answer["info"])["infotexts"][0]


# -- listing, create, refresh ------------------------------------------------------------------------------------
def test_the_listing_has_every_file_and_each_error(server):
    listed = {item["name"]: item for item in server.api("GET", "hypernetworks")}
    assert {"style_relu", "style_linear", "old_style", "misfit", "a1111_plain", "broken", "hostile"} <= set(listed)
    assert listed["style_relu"]["path"].endswith("style_relu.safetensors")
    assert listed["style_linear"]["path"].endswith(os.path.join("sub", "style_linear.pt"))
    assert listed["old_style"]["path"].endswith(".ckpt")
    for name in ("style_relu", "style_linear", "old_style", "misfit", "a1111_plain"):
        assert listed[name]["error"] is None, listed[name]
    assert "corrupt" in listed["broken"]["error"] or "not" in listed["broken"]["error"]
    assert "os.system" in listed["hostile"]["error"] or "refused" in listed["hostile"]["error"].lower()
    assert not (server.hypernetwork_dir.parent / "hostile-ran").exists()


def test_the_routes_need_the_hosts_api_auth(server):
    for method, path in (("GET", "hypernetworks"), ("POST", "refresh-hypernetworks"),
                         ("POST", "create/hypernetwork")):
        status, _ = server.request(method, f"/sdapi/v1/{path}", {} if method == "POST" else None, auth=False)
        assert status == 401, path
        status, _ = server.request(method, f"/sdapi/v1/{path}", {} if method == "POST" else None,
                                  auth=("tester", "wrong"))
        assert status == 401, path


def test_create_writes_a_file_that_lists_and_loads(server):
    answer = server.api("POST", "create/hypernetwork", {"name": "fresh", "enable_sizes": [768, 320],
                                                       "layer_structure": "1, 2, 1", "activation_func": "relu"})
    path = Path(answer["info"].removeprefix("create hypernetwork filename: "))
    assert path == server.hypernetwork_dir / "fresh.safetensors" and path.is_file()
    listed = {item["name"]: item for item in server.api("GET", "hypernetworks")}
    assert listed["fresh"]["error"] is None
    status, answer = server.request("POST", "/sdapi/v1/create/hypernetwork", {"name": "fresh"})
    assert status == 409, answer
    status, answer = server.request("POST", "/sdapi/v1/create/hypernetwork", {"name": "../outside"})
    assert status == 422 and not (server.hypernetwork_dir.parent / "outside.safetensors").exists(), answer
    status, answer = server.request("POST", "/sdapi/v1/create/hypernetwork", {"enable_sizes": [768]})
    assert status == 422, answer


def test_refresh_sees_a_new_file(server):
    make_hypernetwork("late", [768], seed=9, layer_structure=[1, 1]).save(server.hypernetwork_dir / "late.pt")
    report = server.api("POST", "refresh-hypernetworks")
    assert "late" in report["added"]
    assert "late" in {item["name"] for item in server.api("GET", "hypernetworks")}


# -- generation -----------------------------------------------------------------------------------------------
def test_without_a_tag_the_images_are_the_hosts_own(server, bare_images):
    assert txt2img(server, "a cat")[0] == digest(bare_images["plain"])
    assert txt2img(server, "a red house", batch_size=2, seed=11)[0] == digest(bare_images["batch"])


def test_a_tag_changes_the_image_and_the_infotext_names_the_network(server, bare_images):
    images, infotext = txt2img(server, "a cat <hypernet:style_relu:1>")
    assert images != digest(bare_images["eaten_tag"])  # bare Forge eats the tag and applies nothing
    assert images != txt2img(server, "a cat")[0]
    assert "<hypernet:style_relu:1>" in infotext.splitlines()[0]  # the tag stays in the prompt
    hashes = [line for line in infotext.splitlines() if "Hypernet hashes" in line]
    assert hashes and "style_relu: " in hashes[0]
    half, _ = txt2img(server, "a cat <hypernet:style_relu:0.5>")
    assert half not in (images, txt2img(server, "a cat")[0])
    zero, zero_info = txt2img(server, "a cat <hypernet:style_relu:0>")
    assert zero == digest(bare_images["eaten_tag"])  # multiplier 0: Forge's own image


def test_several_tags_stack_in_prompt_order(server):
    one, _ = txt2img(server, "a cat <hypernet:style_relu:1>")
    both, infotext = txt2img(server, "a cat <hypernet:style_relu:1> <hypernet:style_linear:0.7>")
    swapped, _ = txt2img(server, "a cat <hypernet:style_linear:0.7> <hypernet:style_relu:1>")
    assert len({one[0], both[0], swapped[0]}) == 3  # a ReLU network does not commute with another
    assert "style_relu: " in infotext and "style_linear: " in infotext
    by_path, _ = txt2img(server, "a cat <hypernet:sub/style_linear:0.7>")
    by_name, _ = txt2img(server, "a cat <hypernet:style_linear:0.7>")
    assert by_path == by_name
    old, _ = txt2img(server, "a cat <hypernet:old_style:1>")  # a .ckpt file
    assert old != txt2img(server, "a cat")[0]


def test_problems_are_reported_and_the_image_is_still_made(server):
    plain = txt2img(server, "a cat")[0]
    for prompt, said in (("a cat <hypernet:nosuch:1>", "unknown hypernetwork 'nosuch'"),
                         ("a cat <hypernet:style_relu:strong>", "multiplier 'strong' is not a number"),
                         ("a cat <hypernet:broken:1>", "could not be loaded"),
                         ("a cat <hypernet:hostile:1>", "could not be loaded"),
                         ("a cat <hypernet:misfit:1>", "has no module for this model's attention widths")):
        images, infotext = txt2img(server, prompt)
        assert len(images) == 1
        assert said in server.log(), (prompt, server.log()[-2000:])
        assert "Hypernet hashes" not in infotext or "misfit" in prompt
    assert not (server.hypernetwork_dir.parent / "hostile-ran").exists()
    assert txt2img(server, "a cat")[0] == plain  # nothing stuck from the failed requests


def test_add_hypernetwork_to_prompt_setting(server):
    tagged, _ = txt2img(server, "a cat<hypernet:style_relu:1>")  # the setting appends the tag with no space
    server.api("POST", "options", {"sd_hypernetwork": "style_relu", "extra_networks_default_multiplier": 1.0})
    try:
        images, infotext = txt2img(server, "a cat")
        assert "<hypernet:style_relu:1.0>" in infotext.splitlines()[0] and "style_relu: " in infotext
        assert images == tagged
        again, infotext = txt2img(server, "a cat<hypernet:style_relu:1>")  # named already: not added twice
        assert infotext.count("<hypernet:style_relu") == 1 and again == tagged
    finally:
        server.api("POST", "options", {"sd_hypernetwork": "None"})


def test_img2img_and_hires_fix_apply_the_network(server):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 60, 200)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    body = {**BASE, "init_images": [init], "denoising_strength": 0.6}
    plain = digest(server.api("POST", "img2img", {**body, "prompt": "a cat"}))
    tagged = server.api("POST", "img2img", {**body, "prompt": "a cat <hypernet:style_relu:1>"})
    assert digest(tagged) != plain and "style_relu: " in json.loads(tagged["info"])["infotexts"][0]
    mask = io.BytesIO()
    Image.new("L", (64, 64), 255).save(mask, format="PNG")
    inpaint = {**body, "mask": base64.b64encode(mask.getvalue()).decode(), "inpainting_fill": 1}
    assert (digest(server.api("POST", "img2img", {**inpaint, "prompt": "a cat <hypernet:style_relu:1>"}))
            != digest(server.api("POST", "img2img", {**inpaint, "prompt": "a cat"})))
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.5,
             "hr_upscaler": "Latent", "hr_cfg": 7,
             "hr_additional_modules": ["Use same choices"]}  # Forge's API fails on hires without it (its bug)
    plain_hr, _ = txt2img(server, "a cat", **hires)
    tagged_hr, _ = txt2img(server, "a cat <hypernet:style_relu:1>", **hires)
    assert plain_hr != tagged_hr
    # A network named in the hires prompt only acts in the second pass.
    second_only, _ = txt2img(server, "a cat", hr_prompt="a cat <hypernet:style_relu:1>", **hires)
    assert second_only not in (plain_hr, tagged_hr)


# -- numbers ------------------------------------------------------------------------------------------------------
def unet_equality(server, tmp_path, script: str, *args: str) -> dict:
    """Run ``tests/hosts/SCRIPT`` with the host's Python in its tree and check each family's numbers
    (``tests/hosts/unet_measure.py``): the patch within 1e-6 of the output's largest magnitude, the fold within
    1e-5, both acting, every module the model's own after. Returns the results by family."""
    out = tmp_path / "equality.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(server.python), str(Path(__file__).parent / "hosts" / script), str(out), *args],
                   cwd=server.tree, env={**env, "HF_HUB_OFFLINE": "1", "TORCH_THREADS": "1"}, check=True,
                   capture_output=True, timeout=1200)
    results = json.loads(out.read_text())
    for family, result in results.items():
        assert result["max_abs_effect"] > 1e-3 * result["max_abs_reference"], (family, result)  # it acts
        assert result["max_abs_diff"] <= 1e-6 * result["max_abs_reference"], (family, result)
        assert result["folded_layers"] > 0 and result["restored"], (family, result)
        assert result["folded_max_abs_effect"] > 1e-3 * result["folded_max_abs_reference"], (family, result)
        assert result["folded_max_abs_diff"] <= 1e-5 * result["folded_max_abs_reference"], (family, result)
    return results


def test_forges_unet_with_the_patch_equals_automatic1111s_way(server, tmp_path):
    """Same latent, sigma and conditioning: Forge's UNet module with our patches against the same module with
    AUTOMATIC1111's pre-hooks on to_k/to_v, on SD 1.5 and SD 2.1 at real shapes and an SDXL-shaped UNet. Bound:
    1e-6 of the output's largest magnitude (fp32; the two compute the same operations). Affine networks folded into
    the projections: 1e-5 (the fold reassociates fp32 sums, as in the standalone mode), and every module is the
    model's own again after."""
    assert set(unet_equality(server, tmp_path, "forge_unet_equality.py")) == {"sd1", "sd2", "sdxl"}


def test_the_patch_stays_off_the_shared_unet_and_is_shared_by_clones():
    from extension.hosts.unet_patch import HypernetworkAttentionPatch, has_hypernetwork_patch, with_hypernetworks
    from tests.hosts.patcher import OptionsPatcher

    base = OptionsPatcher()
    network = make_hypernetwork("n", [8], seed=0, layer_structure=[1, 1])
    patched = with_hypernetworks(base, [(network, 0.5)])
    assert base.model_options == {"transformer_options": {}} and not has_hypernetwork_patch(base)
    assert has_hypernetwork_patch(patched)
    assert with_hypernetworks(base, [(network, 0.0)]) is base  # nothing to apply: no clone at all
    again = patched.clone()
    assert again.model_options["transformer_options"]["patches"]["attn2_patch"][0] is \
        patched.model_options["transformer_options"]["patches"]["attn2_patch"][0]
    patch = patched.model_options["transformer_options"]["patches"]["attn2_patch"][0]
    assert isinstance(patch, HypernetworkAttentionPatch)
    n, context = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    out_n, k, v = patch(n, context, context, {})
    assert out_n is n and torch.allclose(k, network.layers[8][0](context, 0.5))
    assert torch.allclose(v, network.layers[8][1](context, 0.5))
    other = torch.randn(1, 5, 16)  # a width the network has no module for passes through
    assert patch(n, other, other, {})[1] is other


# -- training ----------------------------------------------------------------------------------------------------
TRAIN = {"learn_rate": "0.0001", "batch_size": 1, "gradient_step": 1, "training_width": 64, "training_height": 64,
         "template_filename": "style_filewords.txt", "create_image_every": 0, "save_hypernetwork_every": 0,
         "preview_steps": 2, "seed": 1}


def file_step(path: Path) -> int:
    from extension.hypernetwork.files import read_info

    return read_info(path).step


def test_train_through_the_api_on_the_loaded_checkpoint(server):
    import threading
    import time

    server.api("POST", "create/hypernetwork",
               {"name": "trained", "enable_sizes": SD1_WIDTHS, "layer_structure": "1, 1"})
    path = server.hypernetwork_dir / "trained.safetensors"
    before = txt2img(server, "a cat <hypernet:trained:1>")[0]
    seen = []

    def watch():
        while not done.is_set():
            status, answer = server.request("GET", "/sdapi/v1/progress?skip_current_image=true")
            if status == 200:
                seen.append(answer)
            time.sleep(0.5)

    done = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        answer = server.api("POST", "train/hypernetwork", {**TRAIN, "hypernetwork_name": "trained",
                                                          "data_root": str(server.dataset), "steps": 3})
    finally:
        done.set()
        watcher.join(5)
    assert "error: None" in answer["info"] or "complete" in answer["info"], answer
    assert file_step(path) == 3
    assert any(s.get("progress", 0) > 0 and "step" in (s.get("textinfo") or "") for s in seen), seen[-3:]
    assert "left the device for it" in server.log()
    after = txt2img(server, "a cat <hypernet:trained:1>")[0]  # the trained file, without a restart
    assert after != before
    status, answer = server.request("POST", "/sdapi/v1/train/hypernetwork", {**TRAIN, "hypernetwork_name": "nosuch",
                                                                            "data_root": str(server.dataset)})
    assert status == 422 and "nosuch" in answer["detail"], answer
    status, answer = server.request("POST", "/sdapi/v1/train/hypernetwork", {**TRAIN, "hypernetwork_name": "trained",
                                                                            "data_root": "/etc"})
    assert status == 422 and "/etc" in answer["detail"], answer  # outside the data folders: refused
    status, answer = server.request("POST", "/sdapi/v1/train/hypernetwork", {**TRAIN, "hypernetwork_name": "trained",
                                                                            "data_root": str(server.dataset),
                                                                            "batch_size": 0})
    assert status == 422 and "batch_size" in answer["detail"], answer


def test_interrupt_stops_training_with_a_save(server):
    import threading
    import time

    server.api("POST", "create/hypernetwork",
               {"name": "stopped", "enable_sizes": SD1_WIDTHS, "layer_structure": "1, 1"})
    answers = []
    run = threading.Thread(target=lambda: answers.append(server.api(
        "POST", "train/hypernetwork", {**TRAIN, "hypernetwork_name": "stopped", "data_root": str(server.dataset),
                                       "steps": 10000})), daemon=True)
    run.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = server.api("GET", "progress?skip_current_image=true")
        if "step" in (progress.get("textinfo") or "") and progress.get("progress", 0) > 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"training did not start: {progress}")
    server.api("POST", "interrupt")
    run.join(120)
    assert answers and "interrupted" in answers[0]["info"].lower(), answers
    assert 0 < file_step(server.hypernetwork_dir / "stopped.safetensors") < 10000


# -- Forge's page, in a real browser --------------------------------------------------------------------------
def test_the_hosts_page_cards_click_generate_and_reload_ui(server):
    from tests.browser_utils import chromium_browser, screenshot

    txt2img(server, "a cat")  # Forge loads its model on first use: then the cards know its widths
    with chromium_browser() as browser:
        page, prompt = open_page(browser, server)

        def open_cards():
            page.locator("#txt2img_extra_tabs button", has_text="Hypernetworks").first.click()
            page.locator('#txt2img_hypernetworks_cards_html .card[data-name="style_relu"]').wait_for()

        steps = page.locator("#txt2img_steps input[type=number]")  # on the Generation tab, before the cards
        steps.fill("3")
        steps.press("Tab")
        open_cards()
        assert page.locator("#txt2img_extra_tabs button", has_text="Hypernetworks").count() == 1
        cards = page.locator("#txt2img_hypernetworks_cards_html .card")
        names = set(cards.evaluate_all("cards => cards.map(c => c.dataset.name)"))
        assert {"style_relu", "style_linear", "old_style", "misfit", "a1111_plain", "broken", "hostile"} <= names
        hostile = page.locator('#txt2img_hypernetworks_cards_html .card[data-name="hostile"] .description')
        assert "cannot be used" in hostile.inner_text()
        misfit = page.locator('#txt2img_hypernetworks_cards_html .card[data-name="misfit"] .description')
        assert "none of its widths" in misfit.inner_text()
        relu = page.locator('#txt2img_hypernetworks_cards_html .card[data-name="style_relu"] .description')
        assert "A ReLU test style." in relu.inner_text()
        screenshot(page, f"{server.host.name}-hypernetwork-cards")
        prompt.fill("a cat")
        page.locator('#txt2img_hypernetworks_cards_html .card[data-name="style_relu"]').click()
        assert "<hypernet:style_relu:1>" in prompt.input_value()
        page.locator("#txt2img_generate").click()
        page.wait_for_function(
            "() => (document.querySelector('#html_info_txt2img') || {}).innerText?.includes('Hypernet hashes')")
        assert "style_relu: " in page.locator("#html_info_txt2img").first.inner_text()

        # Reload UI: the scripts run again; nothing is registered twice.
        page.locator("#tabs button", has_text="Settings").first.click()
        page.locator("#settings_restart_gradio").click()
        page.wait_for_timeout(3000)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=180_000)
        open_cards()
        assert page.locator("#txt2img_extra_tabs button", has_text="Hypernetworks").count() == 1
        assert train_tab_buttons(page, server.host).count() == 1
    images, infotext = txt2img(server, "a cat <hypernet:style_relu:1>")
    assert infotext.count("Hypernet hashes") == 1


def test_an_infotext_pasted_back_gives_the_same_image(server):
    """Forge's own infotext parser (PNG Info, the paste button) reads our infotext back: the tag is in the prompt,
    ``Hypernet hashes`` is a field, and the parameters it gives draw the same pixels."""
    answer = server.api("POST", "txt2img", {**BASE, "prompt": "a cat <hypernet:style_relu:0.8>", "seed": 21})
    parsed = server.api("POST", "png-info", {"image": answer["images"][0]})
    fields = parsed["parameters"]
    assert fields["Prompt"] == "a cat <hypernet:style_relu:0.8>"
    assert fields["Hypernet hashes"].startswith("style_relu: ")
    again = server.api("POST", "txt2img", {**BASE, "prompt": fields["Prompt"], "seed": int(fields["Seed"]),
                                          "steps": int(fields["Steps"]), "cfg_scale": float(fields["CFG scale"])})
    assert digest(again) == digest(answer)


def _fill(page, selector: str, value) -> None:
    field = page.locator(selector)
    field.fill(str(value))
    field.evaluate("element => element.blur()")  # Gradio takes a number on blur (Tab would open the next dropdown)


def test_the_train_tab_creates_trains_with_progress_and_previews(server):
    """The Train tab in Forge's page: Create, then Train on the loaded checkpoint, with the host's progress bar (and
    its ETA), the loss plot, a preview, and the network in the cards after, with no restart."""
    from tests.browser_utils import chromium_browser, screenshot

    txt2img(server, "a cat")  # the model is loaded: the Create tab's modules are its widths
    with chromium_browser() as browser:
        page, _ = open_page(browser, server)
        train_tab_buttons(page, server.host).first.click()
        _fill(page, "#hn_create_name textarea", "from_tab")
        _fill(page, "#hn_create_layer_structure textarea", "1, 1")
        page.locator("#hn_create_button").click()
        page.wait_for_function("() => document.querySelector('#hn_create_result')?.innerText.includes('Created')")
        assert (server.hypernetwork_dir / "from_tab.safetensors").is_file()

        page.locator("#hn_train_tabs button", has_text="Train").first.click()
        assert page.locator("#hn_train_network input").input_value() == "from_tab"  # Create chose it
        _fill(page, "#hn_train_dataset_directory textarea", server.dataset)
        _fill(page, "#hn_train_training_width input[type=number]", 64)
        _fill(page, "#hn_train_training_height input[type=number]", 64)
        _fill(page, "#hn_train_steps input[type=number]", 4)
        _fill(page, "#hn_train_create_image_every input[type=number]", 2)
        page.locator("#hn_train_button").click()
        # While it runs: the host's bar with an ETA (and no raw markup), our line and loss plot.
        page.wait_for_function("() => /ETA/.test(document.querySelector('.progressDiv')?.textContent || '')",
                               timeout=300_000)
        assert "<" not in page.locator(".progressDiv").first.text_content()
        page.wait_for_function("() => document.querySelector('#hn_train_progress svg.hn-loss-plot') !== null",
                               timeout=300_000)
        assert "step" in page.locator("#hn_train_progress .hn-train-progress").inner_text().lower()
        # The run's own answer (the host's "processing" overlay is text in the same box meanwhile).
        page.wait_for_function("() => document.querySelector('#hn_train_outcome p') !== null", timeout=600_000)
        outcome = page.locator("#hn_train_outcome").first.inner_text()  # Gradio 3 gives the id to two elements
        screenshot(page, f"{server.host.name}-train-tab")
        assert "error" not in outcome.lower(), outcome
        assert page.locator("#hn_train_gallery img").count() >= 1  # the preview made at step 2
    assert file_step(server.hypernetwork_dir / "from_tab.safetensors") == 4
    assert "from_tab" in {item["name"] for item in server.api("GET", "hypernetworks")}
    assert txt2img(server, "a cat <hypernet:from_tab:1>")[0] != txt2img(server, "a cat")[0]


def test_the_paste_button_reads_an_infotext_back_into_the_page(server):
    """Forge's paste button (↙) with one of our infotexts in the prompt box fills the prompt with the tag and the
    seed, and Generate then draws the same pixels as the API did."""
    from tests.browser_utils import chromium_browser

    answer = server.api("POST", "txt2img", {**BASE, "prompt": "a cat <hypernet:style_relu:0.8>", "seed": 21})
    infotext = json.loads(answer["info"])["infotexts"][0]
    with chromium_browser() as browser:
        page, prompt = open_page(browser, server)
        prompt.fill(infotext)
        page.locator("#paste").first.click()  # the txt2img one (img2img's button has the same id)
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === "
                               + json.dumps("a cat <hypernet:style_relu:0.8>"))
        assert page.locator("#txt2img_seed input[type=number]").input_value() == "21"
        page.locator("#txt2img_generate").click()
        page.wait_for_function(
            "() => (document.querySelector('#html_info_txt2img') || {}).innerText?.includes('Hypernet hashes')")
        info = page.locator("#html_info_txt2img").first.inner_text()
        assert "style_relu: " in info and "Seed: 21" in info
        source = page.locator("#txt2img_gallery img").first.get_attribute("src")
    from PIL import Image
    import urllib.request

    with urllib.request.urlopen(source if source.startswith("http") else server.url + "/" + source.lstrip("/")) as got:
        drawn = Image.open(io.BytesIO(got.read())).convert("RGB").tobytes()
    assert hashlib.sha256(drawn).hexdigest() == digest(answer)[0]


def test_a_folder_of_hostile_and_huge_files(host, tmp_path):
    """Every hostile file of the standalone suite (``tests/hostile_files.py``), a 5 GiB file, and one good network
    in Forge's hypernetworks folder: Forge starts and serves, each file is listed (or hidden) with the error the
    standalone mode gives, its card in Forge's page shows it, no payload runs, and the good network still draws."""
    from tests import hostile_files
    from tests.browser_utils import chromium_browser

    require(host)
    folder, markers = tmp_path / "hypernetworks", tmp_path / "markers"
    markers.mkdir()
    hostiles = hostile_files.write_hypernetworks(folder, tmp_path / "outside", markers)
    with open(folder / "huge.pt", "wb") as handle:  # sparse: nothing on disk
        handle.write(b"PK\x03\x04")
        handle.truncate(5 << 30)
    make_hypernetwork("works", SD1_WIDTHS, seed=5, layer_structure=[1, 1]).save(folder / "works.safetensors")
    script_name = "x');alert('xss"  # inside a button's onclick string, this name would close it and run code
    (folder / f"{script_name}.pt").write_bytes((folder / "good.pt").read_bytes())
    with HostServer(tmp_path / host.name, folder, host=host) as server:
        listed = {item["name"]: item for item in server.api("GET", "hypernetworks")}
        for item in hostiles:
            if item.outcome == "hidden":
                assert item.name not in listed, item
            elif item.outcome == "refused":
                assert listed[item.name]["error"], item
                assert re.search(item.error, listed[item.name]["error"], re.I), (item, listed[item.name])
            else:
                assert listed[item.name]["error"] is None, (item, listed[item.name])
        assert listed["huge"]["error"] and listed["works"]["error"] is None
        plain, _ = txt2img(server, "a cat")
        tagged, infotext = txt2img(server, "a cat <hypernet:works:1>")
        assert tagged != plain and "works: " in infotext
        untouched, _ = txt2img(server, "a cat <hypernet:works:0>")  # the prompt as a refused tag leaves it
        for refused in ("huge", "zip-bomb", "pickle-bomb"):
            assert txt2img(server, f"a cat <hypernet:{refused}:1>")[0] == untouched  # reported, image still made
        with chromium_browser() as browser:
            dialogs = []  # a file named "<img src=x onerror=alert(1)>" must not run script in the page
            page, _ = open_page(browser, server,
                                on_dialog=lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.locator("#txt2img_extra_tabs button", has_text="Hypernetworks").first.click()
            cards = page.locator("#txt2img_hypernetworks_cards_html .card")
            page.locator('#txt2img_hypernetworks_cards_html .card[data-name="works"]').wait_for()
            assert cards.count() == len(listed)
            for name in ("huge", "zip-bomb", "legacy-huge-storage", "reduce-os-system"):
                card = page.locator(f'#txt2img_hypernetworks_cards_html .card[data-name="{name}"] .description')
                assert "cannot be used" in card.inner_text(), name
            scripted = page.locator("#txt2img_hypernetworks_cards_html .card").filter(has_text="alert('xss")
            for button in (".metadata-button", ".copy-path-button", ".edit-button"):
                if scripted.locator(button).count():
                    scripted.locator(button).first.click(force=True)
                    page.wait_for_timeout(300)
                    page.keyboard.press("Escape")
            page.wait_for_timeout(1000)
            assert page.locator('#txt2img_hypernetworks_cards_html img[src="x"]').count() == 0 and not dialogs
        assert "Traceback" not in server.log(), server.log()[-3000:]
    assert hostile_files.markers_found({"markers": str(markers), "hypernetworks": str(folder),
                                        "checkpoints": str(folder), "shell_marker": hostile_files.SHELL_MARKER}) == []
