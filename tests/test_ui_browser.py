"""The web UI in a real browser: Debian's chromium (headless) against the app served on 127.0.0.1 by a child
process with the random-weight demo model and a test folder of hypernetworks. Screenshots of the main views
go to tests/artifacts/ (git-ignored).

The server and its folders are shared by the module's tests, so each test leaves them as it found them and
checks only what it made itself: the tests pass alone and in any order (``pytest --reverse`` runs them
backwards). Without playwright or chromium the tests skip, and fail when ``CI`` is set."""
from __future__ import annotations

import hashlib
import re

import pytest

from browser_utils import Server, chromium_browser, screenshot
from builders import BROKEN, MISFIT, PARTIAL, make_hypernetwork_dir

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, or fails under CI, saying what is missing
    expect = None

TIMEOUT = 60_000
if expect is not None:
    expect.set_options(timeout=20_000)  # a slow CI machine, not a wrong page: a wrong value still fails, later


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("hypernetworks")
    make_hypernetwork_dir(path)
    return path


OTHER_CHECKPOINT = "tiny-other"  # a diffusers folder in the checkpoints folder (the random demo model, seed 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory, folder):
    from extension.demo.architecture import build_random_pipeline

    tmp = tmp_path_factory.mktemp("server")
    build_random_pipeline(seed=1).save_pretrained(tmp / "checkpoints" / OTHER_CHECKPOINT)
    with Server(tmp, folder) as running:
        yield running
        if running.process.poll() is not None:
            print(running.log())


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as running:
        yield running


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(TIMEOUT)
    page.goto(server.url)
    page.wait_for_selector("#txt2img_generate", state="visible")
    yield page
    context.close()
    assert not errors, errors


def open_panel(page):
    page.get_by_role("tab", name="Hypernetworks").click()
    expect(page.locator(".hn-card")).to_have_count(5)


def card(page, name):
    return page.locator(f'.hn-card[data-name="{name}"]')


def prompt_box(page):
    return page.locator("#txt2img_prompt textarea")


def set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def small_images(page, steps=3):
    set_number(page, "txt2img_width", 32)
    set_number(page, "txt2img_height", 32)
    set_number(page, "txt2img_steps", steps)


def sha10(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def wait_for_infotext(page, pattern):
    expect(page.locator("#txt2img_infotext textarea")).to_have_value(re.compile(pattern, re.S), timeout=TIMEOUT)


def pngs(folder):
    return set(folder.rglob("*.png")) if folder.is_dir() else set()


# -- the panel ---------------------------------------------------------------------------------------------
def test_panel_lists_every_file_with_badges_and_the_broken_files_error(page):
    open_panel(page)
    names = page.locator(".hn-card .hn-name").all_inner_texts()
    assert sorted(names) == sorted(["demo_style", "demo_linear", MISFIT, PARTIAL, BROKEN])
    expect(card(page, BROKEN).locator(".hn-error")).to_contain_text("truncated or corrupt")
    expect(card(page, BROKEN).locator(".hn-badge")).to_have_text("failed to load")
    expect(card(page, MISFIT).locator(".hn-badge")).to_have_text("incompatible")
    expect(card(page, PARTIAL).locator(".hn-badge")).to_have_text("partly fits")
    expect(card(page, "demo_style").locator(".hn-badge")).to_have_count(0)
    expect(card(page, "demo_style").locator("img.hn-preview")).to_have_count(1)
    expect(card(page, "demo_style").locator(".hn-description")).to_contain_text("Bold strokes")
    expect(card(page, "demo_style").locator(".hn-meta")).to_contain_text("sizes 48, 64, 80")
    expect(card(page, "demo_linear").locator(".hn-no-preview")).to_have_count(1)
    screenshot(page, "hypernetworks-panel")


def test_search_filters_by_name_path_description_and_hash(page, folder):
    open_panel(page)
    search = page.locator("#hn_search textarea, #hn_search input").first
    for query, expected in (("anime", [MISFIT]), ("sub/", ["demo_linear"]), ("bold strokes", ["demo_style"]),
                            (sha10(folder / "sub" / "demo_linear.safetensors"), ["demo_linear"])):
        search.fill(query)
        expect(page.locator(".hn-card .hn-name")).to_have_text(expected)
    screenshot(page, "hypernetworks-search")
    search.fill("")
    expect(page.locator(".hn-card")).to_have_count(5)


def test_sort_by_size(page):
    open_panel(page)
    page.locator("#hn_sort input").click()
    page.get_by_role("option", name="Size").click()
    page.locator("#hn_direction input").click()
    page.get_by_role("option", name="Descending").click()
    expect(page.locator(".hn-card").first).to_have_attribute("data-name", MISFIT)  # the biggest file
    sizes = [int(s) for s in page.locator(".hn-card").evaluate_all("cs => cs.map(c => c.dataset.size)")]
    assert sizes == sorted(sizes, reverse=True)


def test_refresh_picks_up_a_new_file(page, folder):
    import shutil

    open_panel(page)
    shutil.copy(folder / "demo_style.pt", folder / "late_arrival.pt")
    try:
        page.locator("#hn_refresh").click()
        expect(card(page, "late_arrival")).to_have_count(1)
        expect(page.locator(".hn-refresh-report")).to_contain_text("added: late_arrival")
    finally:
        (folder / "late_arrival.pt").unlink()
        page.locator("#hn_refresh").click()
        expect(page.locator(".hn-card")).to_have_count(5)


# -- prompt editing ----------------------------------------------------------------------------------------
def test_card_click_toggles_the_tag_and_ctrl_arrows_change_its_multiplier(page):
    open_panel(page)
    box = prompt_box(page)
    box.fill("a red circle")
    card(page, "demo_style").click()
    expect(box).to_have_value("a red circle <hypernet:demo_style:1>")
    expect(card(page, "demo_style")).to_have_class(re.compile("hn-card-active"))
    card(page, "demo_linear").click()
    expect(box).to_have_value("a red circle <hypernet:demo_style:1> <hypernet:demo_linear:1>")

    cursor = box.input_value().index("demo_style") + 4
    box.evaluate("(el, at) => { el.focus(); el.setSelectionRange(at, at); }", cursor)
    page.keyboard.press("Control+ArrowUp")
    expect(box).to_have_value("a red circle <hypernet:demo_style:1.1> <hypernet:demo_linear:1>")
    page.keyboard.press("Control+ArrowDown")
    page.keyboard.press("Control+ArrowDown")
    expect(box).to_have_value("a red circle <hypernet:demo_style:0.9> <hypernet:demo_linear:1>")
    screenshot(page, "prompt-with-tags")

    card(page, "demo_style").click()  # a second click removes it, whatever its multiplier
    expect(box).to_have_value("a red circle <hypernet:demo_linear:1>")
    card(page, "demo_linear").click()
    expect(box).to_have_value("a red circle")


def test_prompt_editing_functions(page):
    results = page.evaluate("""() => {
        const ui = window.hypernetworksUI;
        const edit = (text, at, delta, end) => ui.editWeight(text, at, end === undefined ? at : end, delta);
        return {
            add_empty: ui.toggleTag("", "x", 1),
            add_spaced: ui.toggleTag("cat ", "x", 0.5),
            remove_middle: ui.toggleTag("a <hypernet:x:0.3> b", "x", 1),
            regex_name: ui.toggleTag("<hypernet:a.b:1>", "a.b", 1),
            not_prefix: ui.toggleTag("<hypernet:xy:1>", "x", 1),
            up: edit("<hypernet:x:1>", 3, 0.1).text,
            no_number: edit("<hypernet:x>", 3, 0.1).text,
            down_to_zero: edit("<hypernet:x:0.1>", 3, -0.1).text,
            after_tag: edit("<hypernet:x:1>", 14, 0.1).text,
            word: edit("a red circle", 4, 0.1).text,
            group: edit("a (red:1.1) circle", 4, 0.1).text,
        };
    }""")
    assert results == {
        "add_empty": "<hypernet:x:1>", "add_spaced": "cat <hypernet:x:0.5>", "remove_middle": "a b",
        "regex_name": "", "not_prefix": "<hypernet:xy:1> <hypernet:x:1>",
        "up": "<hypernet:x:1.1>", "no_number": "<hypernet:x:1.1>", "down_to_zero": "<hypernet:x:0>",
        "after_tag": "<hypernet:x:1.1>", "word": "a (red:1.1) circle", "group": "a (red:1.2) circle",
    }


# -- generation --------------------------------------------------------------------------------------------
def test_generate_shows_an_image_whose_infotext_names_the_hypernetwork_and_its_hash(page, folder, server):
    from PIL import Image

    saved_before = pngs(server.outdir / "txt2img-images")
    small_images(page)
    box = prompt_box(page)
    box.fill("a red circle")
    open_panel(page)
    card(page, "demo_style").click()
    box.press("Control+Enter")  # Ctrl+Enter generates, as the Generate button does
    wait_for_infotext(page, r"<hypernet:demo_style:1>.*Hypernet hashes: \"demo_style: "
                      + sha10(folder / "demo_style.pt"))
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    expect(page.locator("#txt2img_messages")).to_contain_text("Time taken")
    infotext = page.locator("#txt2img_infotext textarea").input_value()
    saved = pngs(server.outdir / "txt2img-images") - saved_before
    assert len(saved) == 1, f"this generation saved {len(saved)} images"
    with Image.open(saved.pop()) as image:
        assert image.info["parameters"] == infotext and image.size == (32, 32)
    screenshot(page, "txt2img-generated")
    seed = re.search(r"Seed: (\d+)", infotext).group(1)
    page.get_by_role("tab", name="Generation").click()
    page.locator("#txt2img_reuse_seed").click()
    expect(page.locator("#txt2img_seed input")).to_have_value(seed)
    page.locator("#txt2img_random_seed").click()
    expect(page.locator("#txt2img_seed input")).to_have_value("-1")


def test_broken_unknown_and_incompatible_networks_are_reported_while_the_rest_works(page, folder):
    small_images(page)
    prompt_box(page).fill(f"a red circle <hypernet:demo_style:1> <hypernet:{BROKEN}:1> <hypernet:no_such_net> "
                          f"<hypernet:{MISFIT}:1>")
    page.locator("#txt2img_generate").click()
    wait_for_infotext(page, r"Hypernet hashes: \"demo_style: " + sha10(folder / "demo_style.pt"))
    messages = page.locator("#txt2img_messages")
    expect(messages).to_contain_text(f"<hypernet:{BROKEN}>")
    expect(messages).to_contain_text("no_such_net")
    expect(messages).to_contain_text(f"Hypernetwork {MISFIT} has no module for this model's attention widths")
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    screenshot(page, "txt2img-messages")


def test_metadata_view_and_replace_preview(page, folder):
    small_images(page, steps=2)
    prompt_box(page).fill("a blue circle")
    page.locator("#txt2img_generate").click()
    wait_for_infotext(page, r"a blue circle")
    open_panel(page)
    card(page, "demo_linear").locator(".hn-meta-button").click()
    metadata = page.locator("#hn_metadata").first
    expect(metadata).to_be_visible()
    expect(metadata).to_contain_text("layer_structure")
    expect(metadata).to_contain_text("safetensors")
    expect(page.locator("#hn_detail_head").first).to_contain_text("demo_linear")
    screenshot(page, "metadata-view")
    preview = folder / "sub" / "demo_linear.preview.png"
    assert not preview.exists()
    try:
        page.locator("#hn_replace_preview").click()
        expect(page.locator("#hn_replace_status").first).to_contain_text("Saved demo_linear.preview.png")
        assert preview.is_file()
        expect(card(page, "demo_linear").locator("img.hn-preview")).to_have_count(1)

        card(page, BROKEN).click()  # a broken card shows why instead of adding a tag
        expect(page.locator("#hn_metadata").first).to_contain_text("truncated or corrupt")
        assert BROKEN not in prompt_box(page).input_value()
    finally:  # the other tests see the folder without this preview
        preview.unlink(missing_ok=True)
        page.locator("#hn_refresh").click()
        expect(card(page, "demo_linear").locator(".hn-no-preview")).to_have_count(1)


def test_strength_comparison_makes_a_labelled_grid_saved_with_its_infotext(page, folder, server):
    from PIL import Image

    grids_before = pngs(server.outdir / "txt2img-grids")
    small_images(page, steps=2)
    prompt_box(page).fill("a red circle")
    page.locator("#txt2img_script input").click()
    page.get_by_role("option", name="Hypernetwork strength comparison").click()
    networks = page.locator("#script_hypernetwork_strength_comparison_networks input")
    networks.click()
    page.get_by_role("option", name="demo_style").click()
    page.keyboard.press("Escape")
    multipliers = page.locator("#script_hypernetwork_strength_comparison_multipliers textarea, "
                               "#script_hypernetwork_strength_comparison_multipliers input").first
    multipliers.fill("0, 1")
    page.locator("#txt2img_generate").click()
    wait_for_infotext(page, r"Script: Hypernetwork strength comparison.*Multipliers: \"0, 1\"")
    info = page.locator("#txt2img_infotext textarea").input_value()
    assert "demo_style: " + sha10(folder / "demo_style.pt") in info
    thumbnails = page.locator("#txt2img_gallery .thumbnail-item")
    expect(thumbnails).to_have_count(3)  # the grid, then each cell
    thumbnails.nth(2).click()  # the infotext under the gallery follows the selected image
    wait_for_infotext(page, r"^a red circle <hypernet:demo_style:1>\n")
    assert "Script:" not in page.locator("#txt2img_infotext textarea").input_value()
    grids = pngs(server.outdir / "txt2img-grids") - grids_before
    assert len(grids) == 1
    with Image.open(grids.pop()) as grid:
        assert "Hypernetwork strength comparison" in grid.text["parameters"]
        assert grid.width > 2 * 128 and grid.height > 128  # two 32px cells enlarged, plus labels
    screenshot(page, "strength-comparison")


def test_default_multiplier_setting_is_what_a_click_inserts(page):
    page.get_by_role("tab", name="Settings").click()
    set_number(page, "setting_extra_networks_default_multiplier", 0.7)
    page.locator("#settings_apply").click()
    expect(page.locator("#settings_result")).to_contain_text("1 setting changed")
    screenshot(page, "settings")
    try:
        page.get_by_role("tab", name="txt2img").click()
        open_panel(page)
        expect(card(page, "demo_style")).to_have_attribute("data-multiplier", "0.7")
        prompt_box(page).fill("")
        card(page, "demo_style").click()
        expect(prompt_box(page)).to_have_value("<hypernet:demo_style:0.7>")
        page.reload()  # a page opened after the change shows the saved value
        page.get_by_role("tab", name="Settings").click()
        expect(page.locator("#setting_extra_networks_default_multiplier input[type=number]")).to_have_value("0.7")
    finally:
        page.get_by_role("tab", name="Settings").click()
        set_number(page, "setting_extra_networks_default_multiplier", 1)
        page.locator("#settings_apply").click()
        expect(page.locator("#settings_result")).to_contain_text("1 setting changed")


# -- the device queue and the checkpoint -------------------------------------------------------------------
def test_a_second_generation_waits_in_the_queue_and_sees_its_place(page, browser, server):
    """One generation at a time on the device: while the first is held there (a test hook holds it until it
    is interrupted), a second page's Generate shows its place in the queue, then runs."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        second = context.new_page()
        second.set_default_timeout(TIMEOUT)
        second.goto(server.url)
        second.wait_for_selector("#txt2img_generate", state="visible")
        small_images(second)
        prompt_box(second).fill("a green triangle")
        small_images(page)
        prompt_box(page).fill("a red circle")

        with server.hold_next_generation():
            page.locator("#txt2img_generate").click()
            server.wait_until_held()  # the first generation has the device until it is interrupted
            second.locator("#txt2img_generate").click()
            expect(second.locator("#txt2img_gallery")).to_contain_text(re.compile(r"queue: 1/1"))
            screenshot(second, "txt2img-queued")
            page.locator("#txt2img_interrupt").click()
            server.wait_until_let_go()  # it saw the interrupt: it stops before its first step
        expect(page.locator("#txt2img_messages")).to_contain_text("Interrupted")
        wait_for_infotext(second, r"^a green triangle\n")
        expect(second.locator("#txt2img_gallery img").first).to_be_visible()
    finally:
        context.close()


def test_switching_checkpoints_in_the_dropdown(page):
    """The checkpoint dropdown lists the folder; choosing one loads it and the next image names it."""
    dropdown = page.locator("#setting_sd_model_checkpoint input")
    try:
        dropdown.click()
        page.get_by_role("option", name=OTHER_CHECKPOINT).click()
        expect(dropdown).to_have_value(OTHER_CHECKPOINT)
        small_images(page)
        prompt_box(page).fill("a blue square")
        page.locator("#txt2img_generate").click()
        wait_for_infotext(page, rf"Model: {OTHER_CHECKPOINT}\b")
        screenshot(page, "checkpoint-switched")
    finally:
        dropdown.click()
        page.get_by_role("option", name="demo", exact=False).first.click()
    page.locator("#txt2img_generate").click()
    wait_for_infotext(page, r"Model: demo")


def test_the_action_buttons_labels_fit_inside_them_at_1400_pixels(page):
    """Interrupt's label ran past its button's edge in a 1400-pixel-wide window (the page fixture's width); the
    img2img tab's buttons share the rule."""
    for elem_id in ("txt2img_generate", "txt2img_interrupt", "txt2img_skip",
                    "img2img_generate", "img2img_interrupt", "img2img_skip"):
        if elem_id == "img2img_generate":
            page.locator("#tab_img2img-button, button[role=tab]:has-text('img2img')").first.click()
            page.locator("#img2img_interrupt").wait_for(state="visible")
        box = page.evaluate("""(id) => { const button = document.getElementById(id);
            const range = document.createRange(); range.selectNodeContents(button);
            const text = range.getBoundingClientRect(), edge = button.getBoundingClientRect();
            return {text: [text.left, text.right], edge: [edge.left, edge.right],
                    overflow: button.scrollWidth - button.clientWidth, lines: range.getClientRects().length}; }""",
                            elem_id)
        assert box["edge"][0] <= box["text"][0] and box["text"][1] <= box["edge"][1], (elem_id, box)
        assert box["overflow"] <= 0 and box["lines"] == 1, (elem_id, box)  # one line, nothing cut


# -- img2img -----------------------------------------------------------------------------------------------
def test_img2img_tab_inpaints_an_upload_with_a_mask_and_a_card_tag(page, server, tmp_path):
    from PIL import Image

    picture, mask = tmp_path / "picture.png", tmp_path / "mask.png"
    Image.new("RGB", (32, 32), (40, 160, 220)).save(picture)
    masked = Image.new("L", (32, 32), 0)
    masked.paste(255, (0, 0, 16, 32))
    masked.save(mask)
    saved_before = pngs(server.outdir / "img2img-images")
    page.locator("#tab_img2img-button, button[role=tab]:has-text('img2img')").first.click()
    tab = page.locator("#tab_img2img")
    for elem_id, value in (("img2img_width", 32), ("img2img_height", 32), ("img2img_steps", 3)):
        set_number(page, elem_id, value)
    tab.get_by_role("tab", name="Inpaint upload").click()
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(picture))
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(mask))
    expect(page.locator("#img_inpaint_mask img").first).to_be_visible()
    box = page.locator("#img2img_prompt textarea")
    box.fill("a red circle")
    tab.get_by_role("tab", name="Hypernetworks").click()
    tab.locator('.hn-card[data-name="demo_style"]').click()
    expect(box).to_have_value("a red circle <hypernet:demo_style:1>")  # the img2img prompt, not txt2img's
    expect(prompt_box(page)).not_to_have_value(re.compile("demo_style"))
    page.locator("#img2img_generate").click()
    expect(page.locator("#img2img_infotext textarea")).to_have_value(
        re.compile(r"<hypernet:demo_style:1>.*Denoising strength: 0.75, Mask blur: 4", re.S), timeout=TIMEOUT)
    expect(page.locator("#img2img_gallery img").first).to_be_visible()
    saved = pngs(server.outdir / "img2img-images") - saved_before
    assert len(saved) == 1, f"this generation saved {len(saved)} images"
    with Image.open(saved.pop()) as image:
        assert image.size == (32, 32) and "Hypernet hashes" in image.info["parameters"]
    screenshot(page, "img2img-inpainted")
