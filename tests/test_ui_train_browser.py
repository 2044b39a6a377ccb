"""The Train tab in a real browser: create a network from the Create panel, train it briefly from the Train
panel, and see the loss plot and a preview arrive (random-weight demo model, 32x32 pictures)."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright") if not __import__("os").environ.get("CI") else None

from playwright.sync_api import expect  # noqa: E402

from browser_utils import Server, chromium_browser, screenshot  # noqa: E402
from extension.demo.dataset import draw, sample_pictures  # noqa: E402
from extension.hypernetwork import read_info  # noqa: E402

TIMEOUT = 120_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-ui")
    (tmp / "hypernetworks").mkdir()
    data = tmp / "data"
    data.mkdir()
    for i, picture in enumerate(sample_pictures(4, seed=2, outline=True)):
        draw(picture, 32).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(picture.caption())
    with Server(tmp, tmp / "hypernetworks") as server, chromium_browser() as browser:
        yield server, browser, tmp


def fill(page, elem_id, value):
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(str(value))
    box.press("Tab")


def test_create_then_train_shows_progress_the_loss_plot_and_a_preview(setup):
    server, browser, tmp = setup
    page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    page.set_default_timeout(TIMEOUT)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    page.wait_for_selector("#txt2img_generate", state="visible")
    page.get_by_role("tab", name="Train", exact=True).click()

    fill(page, "train_create_name", "browser style")
    page.locator("#train_create_activation input").fill("relu")
    page.locator("#train_create_activation input").press("Enter")
    page.locator("#train_create_button").click()
    expect(page.locator("#train_create_result")).to_contain_text("Created:", timeout=TIMEOUT)
    created = tmp / "hypernetworks" / "browser style.safetensors"
    assert created.is_file() and read_info(created).activation_func == "relu"
    assert set(read_info(created).sizes) == {48, 64, 80}  # the loaded model's widths, all checked by default

    page.get_by_role("tab", name="Train", exact=True).nth(1).click()
    network = page.locator("#train_hypernetwork input")
    network.click()
    page.get_by_role("option", name="browser style").click()
    fill(page, "train_learn_rate", "1e-3")
    fill(page, "train_dataset_directory", tmp / "data")
    fill(page, "train_log_directory", tmp / "logs")
    page.locator("#train_template input").fill("filewords.txt")
    page.locator("#train_template input").press("Enter")
    for elem_id, value in (("train_width", 32), ("train_height", 32), ("train_steps", 6),
                           ("train_create_image_every", 3), ("train_save_every", 3), ("train_batch_size", 2)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.locator("#train_start").click()
    expect(page.locator("#train_progress")).to_contain_text(re.compile(r"finished at step 6"), timeout=TIMEOUT)
    expect(page.locator("#train_loss_plot canvas, #train_loss_plot svg").first).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#train_previews img").first).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#train_previews img")).to_have_count(2, timeout=TIMEOUT)  # steps 3 and 6
    screenshot(page, "train-tab")
    assert read_info(created).step == 6
    page.get_by_role("tab", name="txt2img", exact=True).click()
    page.get_by_role("tab", name="Hypernetworks").click()
    expect(page.locator('.hn-card[data-name="browser style"]')).to_have_count(1, timeout=TIMEOUT)
    assert not errors, errors
