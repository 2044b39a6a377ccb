"""The UI's pure parts, without a browser: cards, search and sort, the comparison grid, the script API,
settings, auth parsing and the page the host builds (in process, nothing loaded)."""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from builders import BROKEN, MISFIT, PARTIAL, make_hypernetwork_dir
from extension.demo.architecture import ATTENTION_WIDTHS
from extension.library import HypernetworkLibrary
from extension.ui import cards as cards_mod
from extension.ui.app import head_html, parse_auth
from extension.ui.callbacks import Callbacks, SettingSpec, load_scripts
from extension.ui.comparison import draw_grid, parse_multipliers, plan_prompts, with_tag, without_tag
from extension.ui.state import ServeOptions, Settings

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hypernetworks")
    make_hypernetwork_dir(path)
    return path


@pytest.fixture(scope="module")
def all_cards(folder):
    library = HypernetworkLibrary(folder)
    return {c.name: c for c in (cards_mod.make_card(library, e, set(ATTENTION_WIDTHS), hash_now=True) for e in library.entries())}


def test_cards_say_what_fits_and_what_is_broken(all_cards, folder):
    assert set(all_cards) == {"demo_style", "demo_linear", MISFIT, PARTIAL, BROKEN}
    assert all_cards["demo_style"].fit == "ok" and all_cards["demo_linear"].fit == "ok"
    assert all_cards[MISFIT].fit == "none" and "768" in all_cards[MISFIT].fit_note
    assert all_cards[PARTIAL].fit == "partial"
    assert all_cards[BROKEN].error and all_cards[BROKEN].fit == "unknown"
    style = all_cards["demo_style"]
    line = style.metadata_line()
    assert "sizes 48, 64, 80" in line and "1-2-1" in line and "relu" in line and "step 1200" in line
    assert style.rel_path == "demo_style.pt" and style.sha256 == sha256(folder / "demo_style.pt")
    assert f"[{style.sha256[:10]}]" in line
    assert style.description.startswith("Bold strokes")
    html = cards_mod.card_html(style, 0.8)
    assert 'data-name="demo_style"' in html and 'data-multiplier="0.8"' in html
    assert "incompatible" in cards_mod.card_html(all_cards[MISFIT], 1.0)
    assert "failed to load" in cards_mod.card_html(all_cards[BROKEN], 1.0)
    assert "no preview" in cards_mod.card_html(all_cards["demo_linear"], 1.0)


def test_search_by_name_path_description_and_hash(all_cards):
    cards = list(all_cards.values())
    names = lambda q: sorted(c.name for c in cards_mod.filter_cards(cards, q))  # noqa: E731
    assert names("anime") == [MISFIT]
    assert names("SUB/") == ["demo_linear"]
    assert names("bold strokes") == ["demo_style"]
    assert names(all_cards["demo_linear"].sha256[:10]) == ["demo_linear"]
    assert names("") == sorted(all_cards)
    assert names("demo nothing-like-this") == []


def test_sort_by_name_date_and_size(all_cards):
    cards = list(all_cards.values())
    assert [c.name for c in cards_mod.sort_cards(cards, "Name")] == sorted(all_cards, key=str.lower)
    by_size = cards_mod.sort_cards(cards, "Size", descending=True)
    assert [c.size for c in by_size] == sorted((c.size for c in cards), reverse=True)
    by_date = cards_mod.sort_cards(cards, "Date modified")
    assert [c.mtime for c in by_date] == sorted(c.mtime for c in cards)


def test_card_text_is_escaped():
    card = cards_mod.Card(name='x"><script>alert(1)</script>', rel_path="x.pt", description="<b>${x}</b>", size=1,
                          mtime=0, sha256=None, sizes=(48,), structure="1-2-1", activation="linear", step=0,
                          base_model="", error=None, fit="ok", fit_note="", preview=None)
    html = cards_mod.card_html(card, 1.0)
    assert "<script>" not in html and "<b>" not in html and "&lt;script&gt;" in html


def test_empty_folder_says_where_to_put_files(tmp_path):
    html = cards_mod.cards_html([], 1.0, total=0, folder=str(tmp_path))
    assert "no hypernetworks in" in html and str(tmp_path) in html


def test_multipliers_parse_lists_and_ranges():
    assert parse_multipliers("0, 0.5, 1, 1.5") == [0, 0.5, 1, 1.5]
    assert parse_multipliers("0 1 -0.5") == [0, 1, -0.5]
    assert parse_multipliers("0-1 (+0.25)") == [0, 0.25, 0.5, 0.75, 1]
    assert parse_multipliers("0-2 [3]") == [0, 1, 2]
    for bad in ("", "a, b", "0-1 (+0)"):
        with pytest.raises(ValueError):
            parse_multipliers(bad)


def test_plan_sets_one_tag_per_cell():
    assert without_tag("a cat <hypernet:foo:0.3> <hypernet:bar>", "foo") == "a cat <hypernet:bar>"
    assert with_tag("a cat <hypernet:foo:0.3>", "foo", 1.5) == "a cat <hypernet:foo:1.5>"
    cells = plan_prompts("a cat", ["foo", "bar"], [0, 1])
    assert [(c.row, c.column, c.prompt) for c in cells] == [
        (0, 0, "a cat <hypernet:foo:0>"), (0, 1, "a cat <hypernet:foo:1>"),
        (1, 0, "a cat <hypernet:bar:0>"), (1, 1, "a cat <hypernet:bar:1>")]


def test_grid_has_a_cell_per_image_and_room_for_labels():
    from PIL import Image

    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    grid = draw_grid([[red, blue], [blue, None]], ["first", "second"], ["× 0", "× 1"])
    cell = 128  # small images are enlarged to this
    assert grid.width > 2 * cell and grid.height > 2 * cell
    left, top = grid.width - 2 * cell, grid.height - 2 * cell
    assert grid.getpixel((left + 5, top + 5)) == (255, 0, 0)
    assert grid.getpixel((left + cell + 5, top + cell + 5)) == (200, 200, 200)  # missing image: grey


def test_scripts_register_through_their_own_registry(tmp_path):
    (tmp_path / "good.py").write_text(textwrap.dedent("""
        from extension.ui.callbacks import SettingSpec
        def register(callbacks):
            callbacks.on_settings(lambda ctx: [SettingSpec("good_value", 3, "Good", component="number")])
    """))
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "_private.py").write_text("raise RuntimeError('never imported')\n")
    first, second = load_scripts(Callbacks(), tmp_path), load_scripts(Callbacks(), tmp_path)
    assert first.loaded == ["good.py"] and len(first.errors) == 1 and "boom" in first.errors[0]
    specs = first.collect("settings", None)
    assert [s.key for s in specs] == ["good_value"]
    assert first.callbacks("settings")[0] is not second.callbacks("settings")[0]  # nothing shared


def test_project_scripts_register_tab_settings_hooks_and_comparison():
    callbacks = load_scripts(Callbacks(), ROOT / "scripts")
    assert not callbacks.errors, callbacks.errors
    assert callbacks.callbacks("extra_networks_tabs") and callbacks.callbacks("before_generate")
    assert [s.title() for s in callbacks.scripts] == ["Hypernetwork strength comparison"]
    keys = {spec.key for spec in callbacks.collect("settings", None)}
    assert {"extra_networks_default_multiplier", "sd_hypernetwork"} <= keys


def test_settings_coerce_persist_and_keep_unknown_keys(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"someone_elses": 5, "extra_networks_default_multiplier": "0.5"}))
    settings = Settings(path)
    spec = SettingSpec("extra_networks_default_multiplier", 1.0, "M", component="slider", minimum=0, maximum=2)
    settings.register(spec)
    assert settings.get("extra_networks_default_multiplier") == 0.5
    with pytest.raises(ValueError):
        settings.update({"extra_networks_default_multiplier": 5})
    assert settings.update({"extra_networks_default_multiplier": "0.7"}) == ["extra_networks_default_multiplier"]
    saved = json.loads(path.read_text())
    assert saved == {"someone_elses": 5, "extra_networks_default_multiplier": 0.7}


def test_auth_from_flag_and_file(tmp_path):
    file = tmp_path / "auth.txt"
    file.write_text("# users\nann:pw:with:colons\nbob:x, cid:y\n")
    assert parse_auth("me:secret", file) == [("me", "secret"), ("ann", "pw:with:colons"), ("bob", "x"), ("cid", "y")]
    assert parse_auth(None, None) == []
    with pytest.raises(SystemExit):
        parse_auth("nopassword")


def test_every_javascript_file_is_injected(tmp_path):
    (tmp_path / "b.js").write_text("window.b = '</script>';")
    (tmp_path / "a.js").write_text("window.a = 1;")
    head = head_html(tmp_path)
    assert head.index("javascript/a.js") < head.index("javascript/b.js")
    assert "</script>';" not in head  # cannot close the tag early
    assert "hypernetworks.js" in head_html(ROOT / "javascript")


def test_page_is_built_with_a_gpu_queue_and_auth(tmp_path, folder):
    """The page builds in process (no model loaded): one queue slot for the device, auth on Gradio's routes."""
    from fastapi.testclient import TestClient

    from extension.ui.app import build_app
    from extension.ui.state import build_state

    options = ServeOptions(hypernetwork_dir=folder, ckpt_dir=tmp_path / "ckpt", outdir=tmp_path / "out",
                           ui_settings_file=tmp_path / "config.json", gradio_auth="ann:pw", demo_random=True,
                           device="cpu")
    state = build_state(options)
    added = []
    app = build_app(state, configure=lambda app, st: added.append(st))
    assert added == [state] and app.state.webui is state
    blocks = app.state.blocks
    gpu = {fn.api_name: (fn.concurrency_limit, fn.concurrency_id) for fn in blocks.fns.values()
           if fn.api_name in ("txt2img", "load_checkpoint")}
    assert gpu == {"txt2img": (1, "gpu"), "load_checkpoint": (1, "gpu")}
    with TestClient(app, base_url="http://127.0.0.1") as client:  # the Host names a local server answers to
        assert client.get("/gradio_api/info").status_code == 401
        assert client.post("/login", data={"username": "ann", "password": "pw"}).status_code == 200
        page = client.get("/").text
        assert "javascript/hypernetworks.js" in page and ".hn-card" in page


def test_add_hypernetwork_to_prompt_setting_appends_its_tag_once(folder):
    import types

    from extension.processing import Txt2ImgRequest

    callbacks = load_scripts(Callbacks(), ROOT / "scripts")
    before = callbacks.callbacks("before_generate")[0]
    settings = Settings(None)
    for spec in callbacks.collect("settings", None):
        settings.register(spec)
    ctx = types.SimpleNamespace(settings=settings, library=HypernetworkLibrary(folder))
    assert before(ctx, Txt2ImgRequest(prompt="a cat")).request is None  # "None": nothing added
    settings.update({"sd_hypernetwork": "demo_style", "extra_networks_default_multiplier": 0.6})
    assert before(ctx, Txt2ImgRequest(prompt="a cat")).request.prompt == "a cat <hypernet:demo_style:0.6>"
    assert before(ctx, Txt2ImgRequest(prompt="<hypernet:demo_style:0.2> a cat")).request is None
    settings.update({"sd_hypernetwork": "gone"})
    hook = before(ctx, Txt2ImgRequest(prompt="a cat"))
    assert hook.request is None and "gone" in hook.messages[0]


def test_listing_hashes_only_for_a_hash_search_or_in_the_background(folder):
    library = HypernetworkLibrary(folder)
    safetensors = [e for e in library.entries() if e.path.suffix == ".safetensors"]
    assert safetensors
    cards = [cards_mod.make_card(library, e, set(ATTENTION_WIDTHS)) for e in safetensors]
    assert all(c.sha256 is None for c in cards)  # a plain listing reads headers only
    assert cards_mod.is_hash_query("ab12cd34") and not cards_mod.is_hash_query("demo style")
    library.hash_in_background()
    library._hasher.join(timeout=30)
    assert [library.known_sha256(e) for e in safetensors] == [sha256(e.path) for e in safetensors]
