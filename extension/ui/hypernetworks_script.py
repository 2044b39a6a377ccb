"""The hypernetwork script: AUTOMATIC1111's extra-network cards for hypernetworks, its settings and hooks.

Registers (see :mod:`extension.ui.callbacks`):

- settings ``extra_networks_default_multiplier`` (the M a card click writes into ``<hypernet:NAME:M>``),
  ``sd_hypernetwork`` ("Add hypernetwork to prompt"), and the cards' default sort;
- a "Hypernetworks" sub-tab of txt2img and of img2img: a card per file (preview or placeholder, name, description,
  metadata line, a badge when its widths do not fit the loaded model, the error of a file that does not
  load), search by name/path/description/hash, sort by name/date/size, refresh, a metadata view of
  everything stored in a file and "replace preview" (the selected gallery image becomes ``NAME.preview.png``).
  Clicking a card toggles its tag in the prompt: ``javascript/hypernetworks.js``;
- ``before_generate``: appends the "Add hypernetwork to prompt" tag (networks that do not fit the model are
  reported by :mod:`extension.processing` itself).
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import json
import logging

import gradio as gr

from extension.images import save_png_as
from extension.prompt.tags import format_tag, hypernetwork_requests, parse_prompt
from extension.ui.callbacks import GenerateHook, SettingSpec, UiTab
from extension.ui.cards import SORT_KEYS, cards_html, filter_cards, fit_of, is_hash_query, make_card, sort_cards
from extension.ui.txt2img import messages_html, selected_image

log = logging.getLogger(__name__)

DEFAULT_MULTIPLIER = "extra_networks_default_multiplier"
ADD_TO_PROMPT = "sd_hypernetwork"
ORDER_FIELD = "extra_networks_card_order_field"
ORDER = "extra_networks_card_order"


def settings(ctx):
    return [
        SettingSpec(DEFAULT_MULTIPLIER, 1.0, "Default multiplier for hypernetworks (the M a card click inserts)",
                    section="Extra Networks", component="slider", minimum=0.0, maximum=2.0, step=0.01),
        SettingSpec(ADD_TO_PROMPT, "None", "Add hypernetwork to prompt", section="Extra Networks",
                    component="dropdown", choices=lambda c: ["None"] + c.library.names(),
                    info="appends <hypernet:NAME:default multiplier> to every prompt that does not name it"),
        SettingSpec(ORDER_FIELD, "Name", "Default order of hypernetwork cards", section="Extra Networks",
                    component="dropdown", choices=list(SORT_KEYS)),
        SettingSpec(ORDER, "Ascending", "Default order direction", section="Extra Networks",
                    component="dropdown", choices=["Ascending", "Descending"]),
    ]


# -- panel ----------------------------------------------------------------------------------------------------
def model_widths(ctx) -> set[int] | None:
    model = ctx.loaded_model()
    if model is None:
        return None
    try:
        return set(model.attention_widths())
    except Exception:  # noqa: BLE001
        return None


def render_cards(ctx, query: str = "", sort: str = "Name", descending: bool = False, report: str = "") -> str:
    library = ctx.library
    widths = model_widths(ctx)
    entries = library.entries()
    hash_now = is_hash_query(query)
    cards = [make_card(library, entry, widths, preview_uri=ctx.preview_data_uri, hash_now=hash_now)
             for entry in entries]
    library.hash_in_background()
    shown = sort_cards(filter_cards(cards, query), sort, descending)
    multiplier = float(ctx.settings.get(DEFAULT_MULTIPLIER, 1.0))
    return cards_html(shown, multiplier, total=len(cards), query=query, folder=str(library.root), report=report,
                      skipped=library.skipped())


def entry_metadata(ctx, name: str) -> tuple[str, dict | None]:
    """(header HTML, everything stored in the file as a dict) for the card called ``name``."""
    library = ctx.library
    entry = library.get(name)
    if entry is None:
        return messages_html([f"{name}: no such hypernetwork (was the folder refreshed?)"], "error"), None
    details = library.details(entry)
    widths = model_widths(ctx)
    modified = datetime.datetime.fromtimestamp(entry.mtime).isoformat(timespec="seconds")
    data: dict = {"file": {"name": entry.name, "path": str(entry.path), "size": entry.size, "modified": modified, "preview": str(entry.preview) if entry.preview else None,
                           "description": entry.description() or None}}
    if details.error:
        data["error"] = details.error
    else:
        data["metadata"] = details.info.as_dict()
        try:
            data["file"]["sha256"] = library.sha256(entry)
        except OSError as exc:
            data["file"]["sha256"] = f"unreadable: {exc}"
        try:
            network = library.load(entry.name)
            data["modules"] = {
                str(size): {kind: [f"{type(layer).__name__}({layer.in_features} -> {layer.out_features})"
                                   if hasattr(layer, "in_features") else type(layer).__name__
                                   for layer in module.linear]
                            for kind, module in zip(("k", "v"), pair)}
                for size, pair in sorted(network.layers.items())}
            data["parameters"] = sum(p.numel() for p in network.weights())
        except Exception as exc:  # noqa: BLE001
            data["load_error"] = str(exc)
        fit, note = fit_of(details.info.sizes, widths)
        data["fits_loaded_model"] = {"ok": True, "partial": "partly", "none": False}.get(fit, None)
        if note:
            data["fit_note"] = note
    sha = data["file"].get("sha256")
    head = (f'<div class="hn-detail-head"><b>{html.escape(entry.name)}</b> '
            f'<code>{html.escape(entry.rel_path)}</code>'
            + (f' <code>[{html.escape(sha[:10])}]</code>' if sha and len(sha) == 64 else "")
            + (f'<div class="hn-error">{html.escape(details.error)}</div>' if details.error else "")
            + "</div>")
    return head, data


def replace_preview(ctx, name: str, result, index) -> str:
    library = ctx.library
    entry = library.get(name) if name else None
    if entry is None:
        return messages_html(["Open a card's metadata (i) first: the preview goes to that hypernetwork."], "error")
    image = selected_image(result, index)
    if image is None:
        return messages_html(["Generate an image first, then select it in the gallery."], "error")
    target = entry.local_preview
    try:
        save_png_as(image, target)
    except OSError as exc:
        return messages_html([f"Could not write {target}: {exc}"], "error")
    library.refresh()
    refreshed = library.get(entry.name)
    note = ""
    if refreshed is not None and refreshed.preview is not None and refreshed.preview != target:
        note = f" {refreshed.preview.name} is found first and still shows; remove it to see the new preview."
    return f'<div class="settings-ok">Saved {html.escape(target.name)}.{html.escape(note)}</div>'


def build_panel(ctx, ui) -> None:
    """The cards panel of ``ui``'s tab: the txt2img tab's ids are ``hn_...``, another tab's ``<tab>_hn_...``."""
    tabname = getattr(ui, "tabname", "txt2img")
    hn = "hn" if tabname == "txt2img" else f"{tabname}_hn"
    order_field = ctx.settings.get(ORDER_FIELD, "Name")
    descending_default = ctx.settings.get(ORDER, "Ascending") == "Descending"
    with gr.Row(elem_id=f"{hn}_controls"):
        search = gr.Textbox(placeholder="Search name, path, description, hash", show_label=False,
                            elem_id=f"{hn}_search", scale=4, min_width=160, container=False)
        sort = gr.Dropdown(list(SORT_KEYS), value=order_field if order_field in SORT_KEYS else "Name",
                           show_label=False, elem_id=f"{hn}_sort", scale=1, min_width=120, container=False)
        direction = gr.Dropdown(["Ascending", "Descending"], value="Descending" if descending_default else "Ascending",
                                show_label=False, elem_id=f"{hn}_direction", scale=1, min_width=120, container=False)
        refresh = gr.Button("↻ Refresh", elem_id=f"{hn}_refresh", scale=0, min_width=100, size="sm")
    cards = gr.HTML(render_cards(ctx, "", order_field, descending_default), elem_id=f"{hn}_cards", js_on_load=None)
    # The bridge from javascript/hypernetworks.js: a card's ⓘ button writes {"action", "name"} here.
    action = gr.Textbox(visible="hidden", elem_id=f"{hn}_action", show_label=False)
    selected_name = gr.State("")
    with gr.Column(visible=False, elem_id=f"{hn}_details", variant="panel") as details:
        detail_head = gr.HTML("", elem_id=f"{hn}_detail_head", js_on_load=None)
        metadata = gr.JSON(label="Everything stored in the file", elem_id=f"{hn}_metadata", open=True)
        with gr.Row():
            replace = gr.Button("Replace preview with the selected image", elem_id=f"{hn}_replace_preview",
                                size="sm")
            close = gr.Button("Close", elem_id=f"{hn}_details_close", size="sm")
        replace_status = gr.HTML("", elem_id=f"{hn}_replace_status", js_on_load=None)

    def rerender(query, sort_key, direction):
        return render_cards(ctx, query, sort_key, direction == "Descending")

    view = [search, sort, direction]
    # "change", not "input": Gradio 6 fires "input" for typing only, "change" also for paste and scripts.
    for component in view:
        component.change(rerender, view, [cards], api_visibility="private", queue=False,
                         trigger_mode="always_last", show_progress="hidden")

    def do_refresh(query, sort_key, direction):
        report = ctx.library.refresh()
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("added", report.added), ("changed", report.changed), ("removed", report.removed)) if names]
        return render_cards(ctx, query, sort_key, direction == "Descending",
                            report="refreshed: " + ("; ".join(parts) if parts else "no changes"))

    refresh.click(do_refresh, view, [cards], **({"api_name": "refresh_hypernetworks"} if tabname == "txt2img"
                                                  else {"api_visibility": "private"}))

    def on_action(raw):
        try:
            payload = json.loads(raw or "{}")
        except json.JSONDecodeError:
            payload = {}
        name = str(payload.get("name") or "")
        if payload.get("action") != "metadata" or not name:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        head, data = entry_metadata(ctx, name)
        return gr.update(visible=True), head, data, name, ""

    action.change(on_action, [action], [details, detail_head, metadata, selected_name, replace_status],
                 api_visibility="private", queue=False)
    close.click(lambda: gr.update(visible=False), None, [details], api_visibility="private", queue=False)

    def do_replace(name, result, index, query, sort_key, direction):
        message = replace_preview(ctx, name, result, index)
        return message, render_cards(ctx, query, sort_key, direction == "Descending")

    replace.click(do_replace, [selected_name, ui.result, ui.selected, *view], [replace_status, cards],
                  api_visibility="private")
    ctx_panel = {"cards": cards, "view": view, "rerender": rerender}
    ui.extras.setdefault("hypernetworks", ctx_panel)  # the txt2img tab's (built first)
    ui.extras.setdefault("hypernetwork_panels", []).append(ctx_panel)  # every tab's (img2img shares extras)


def extra_networks_tabs(ctx, ui):
    return [UiTab("Hypernetworks", "txt2img_hypernetworks_tab", build_panel)]


def ui_loaded(ctx, ui, demo):
    for panel in ui.extras.get("hypernetwork_panels") or []:
        wire_panel(ctx, ui, demo, panel)


def wire_panel(ctx, ui, demo, panel) -> None:
    rerender = panel["rerender"]

    # Badges depend on the model, the click's multiplier on the settings, the list on the folder.
    for event in (ui.model_changed, ui.settings_applied, getattr(ui, "hypernetwork_created", None)):
        if event is not None:
            event.then(rerender, panel["view"], [panel["cards"]], api_visibility="private", queue=False)
    def on_page_load(query, sort_key, direction):
        ctx.library.refresh()  # a reload shows files added meanwhile (a directory scan, no file is read)
        return rerender(query, sort_key, direction)

    demo.load(on_page_load, panel["view"], [panel["cards"]], api_visibility="private", queue=False)


# -- generation hooks ---------------------------------------------------------------------------------------
def before_generate(ctx, request):
    prompt = getattr(request, "prompt", "") or ""
    messages = []
    add = ctx.settings.get(ADD_TO_PROMPT, "None")
    if add and add != "None":
        _, tags = parse_prompt(prompt)
        requests, _ = hypernetwork_requests(tags)
        if ctx.library.get(add) is None:
            messages.append(f'Setting "Add hypernetwork to prompt" names {add!r}, which is not in the folder.')
        elif all(r.name != add for r in requests):
            multiplier = float(ctx.settings.get(DEFAULT_MULTIPLIER, 1.0))
            prompt = f"{prompt} {format_tag(add, multiplier)}".strip()
    if prompt == getattr(request, "prompt", ""):
        return GenerateHook(messages=messages)
    return GenerateHook(request=dataclasses.replace(request, prompt=prompt), messages=messages)


def register(callbacks) -> None:
    callbacks.on_settings(settings)
    callbacks.on_extra_networks_tabs(extra_networks_tabs)
    callbacks.on_ui_loaded(ui_loaded)
    callbacks.on_before_generate(before_generate)
