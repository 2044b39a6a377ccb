"""The host: builds the page the AUTOMATIC1111 way and serves it on a FastAPI app.

``serve(options)`` is what ``python launch.py`` runs. It makes the app's state (:func:`build_state`: the
models folder, the model manager, the settings and the callbacks of every script in ``scripts/``), loads
the default checkpoint, builds the page with :func:`build_app` and runs uvicorn.

The page: a checkpoint dropdown, the txt2img tab (its "Generation" sub-tab plus the sub-tabs scripts add,
e.g. the hypernetwork cards), the img2img tab (the same, with a picture or an inpaint mask), the tabs scripts add, and a Settings tab listing every setting scripts
registered. Every ``javascript/*.js`` file is injected into the page's ``<head>`` (name order) and
``style.css`` into its styles, as AUTOMATIC1111 does. Generation and checkpoint loads share one
queue slot (``concurrency_id="gpu"``): one runs at a time, others wait and see their place.
"""
from __future__ import annotations

import html
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from .callbacks import SettingSpec
from ..host_header import install_host_guard
from .gate import file_roots, install_gate
from .state import AppState, ServeOptions, build_state
from .img2img import build_img2img_tab
from .train import build_train_tab
from .txt2img import PageUI, build_script_tab, build_txt2img_tab, messages_html

log = logging.getLogger(__name__)

TITLE = "Stable Diffusion hypernetworks"


# -- options -------------------------------------------------------------------------------------------------
def parse_auth(gradio_auth: str | None = None, gradio_auth_path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``user:pass`` pairs from ``--gradio-auth "u:p,u2:p2"`` and from a file of such lines (``#`` comments)."""
    texts = []
    if gradio_auth:
        texts.append(gradio_auth)
    if gradio_auth_path:
        path = Path(gradio_auth_path)
        try:
            texts.extend(line for line in path.read_text(encoding="utf-8").splitlines()
                         if line.strip() and not line.strip().startswith("#"))
        except OSError as exc:
            raise SystemExit(f"--gradio-auth-path: cannot read {path}: {exc}") from None
    pairs = []
    for text in texts:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            user, sep, password = item.partition(":")
            if not sep or not user:
                raise SystemExit(f"--gradio-auth: {item!r} is not user:password")
            pairs.append((user, password))
    return pairs


STANDALONE_CSS = Path(__file__).with_name("standalone.css")
# Set before the scripts run: javascript/*.js act on this page only, and stay idle in a host's page (Forge and
# AUTOMATIC1111 inject the same files, and have their own card clicks and prompt-weight keys).
STANDALONE_MARK = "<script>window.sdHypernetworksStandalone = true;</script>"


def head_html(javascript_dir: Path) -> str:
    """Every ``javascript/*.js`` inlined as a ``<script>`` in name order (AUTOMATIC1111 injects them the same way),
    after :data:`STANDALONE_MARK`."""
    parts = [STANDALONE_MARK]
    for path in sorted(Path(javascript_dir).glob("*.js")) if Path(javascript_dir).is_dir() else []:
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        parts.append(f'<script data-source="javascript/{html.escape(path.name)}">\n{code}\n</script>')
    return "\n".join(parts)


def page_css(style_css: Path) -> str | None:
    """The standalone page's layout (:data:`STANDALONE_CSS`), then ``style.css`` (the cards', shared with hosts)."""
    parts = [p.read_text(encoding="utf-8") for p in (STANDALONE_CSS, Path(style_css)) if p.is_file()]
    return "\n".join(parts) or None


# -- models --------------------------------------------------------------------------------------------------
NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}


def checkpoint_choices(ctx: AppState) -> list[tuple[str, str]]:
    """(label, value) for the checkpoint dropdown: the demo model, then the checkpoints folder."""
    from ..demo.pretrained import NAME as DEMO_NAME

    choices = [(DEMO_NAME, DEMO_NAME)]
    try:
        choices += [(info.title, info.name) for info in ctx.models.list_checkpoints()]
    except Exception:  # noqa: BLE001
        log.exception("listing checkpoints failed")
    return choices


def model_value(model) -> str | None:
    """The dropdown value naming ``model``."""
    from ..demo.pretrained import NAME as DEMO_NAME

    if model is None:
        return None
    if getattr(model, "architecture", None) == "demo":
        return DEMO_NAME
    info = getattr(model, "info", None)
    return info.name if info is not None else getattr(model, "name", None)


def is_demo_model(model) -> bool:
    return model is not None and getattr(model, "architecture", None) == "demo"


def is_random_demo(model) -> bool:
    from ..demo.pretrained import RANDOM_NAME as DEMO_RANDOM_NAME

    return is_demo_model(model) and getattr(model, "name", None) == DEMO_RANDOM_NAME


def model_info(ctx: AppState) -> dict:
    """What the txt2img tab adapts to the loaded model: default size, demo vocabulary and examples."""
    model = ctx.loaded_model()
    info: dict[str, Any] = {"size": 512, "demo": False, "demo_text": "", "examples": []}
    if model is None:
        return info
    if is_demo_model(model):
        from ..demo.architecture import IMAGE_SIZE

        info.update(size=IMAGE_SIZE, demo=True, demo_text=demo_text(model), examples=demo_examples(), cfg_scale=5.0)
    else:
        info["size"] = NATIVE_SIZE.get(getattr(model, "architecture", ""), 512)
    return info


def demo_examples() -> list[str]:
    try:
        from ..demo.vocabulary import EXAMPLE_PROMPTS
    except ImportError:
        return []
    return list(EXAMPLE_PROMPTS)


def demo_text(model) -> str:
    try:
        from ..demo.vocabulary import VOCABULARY
    except ImportError:
        VOCABULARY = {}
    random_weights = is_random_demo(model)
    lines = ["**The demo model is loaded.** It is a tiny model trained only on simple pictures, and it knows "
             "only these words; any other word is ignored or confuses it."]
    if random_weights:
        lines = ["**The demo model is loaded with random weights** (it was not trained): it draws noise, "
                 "whatever the prompt. Train it with `python launch.py --train-demo-model` or pick another "
                 "checkpoint."]
    if VOCABULARY:
        lines.append("; ".join(f"{key}: {', '.join(words)}" for key, words in VOCABULARY.items()) + ".")
        lines.append('Prompts look like "a red circle on a white background".')
    return "\n\n".join(lines)


# -- settings ------------------------------------------------------------------------------------------------
def _setting_component(ctx: AppState, spec: SettingSpec):
    value = ctx.settings.get(spec.key)
    common = dict(label=spec.label, info=spec.info, elem_id=f"setting_{spec.key}")
    if spec.component == "slider":
        return gr.Slider(spec.minimum if spec.minimum is not None else 0,
                         spec.maximum if spec.maximum is not None else 1, value=value, step=spec.step or 0.01,
                         **common)
    if spec.component == "number":
        return gr.Number(value=value, minimum=spec.minimum, maximum=spec.maximum, step=spec.step or 1, **common)
    if spec.component == "checkbox":
        return gr.Checkbox(value=bool(value), **common)
    if spec.component == "dropdown":
        choices = setting_choices(ctx, spec)
        return gr.Dropdown(choices, value=value if value in choices else spec.default, **common)
    return gr.Textbox(value=value, **common)


def setting_choices(ctx: AppState, spec: SettingSpec) -> list:
    choices = spec.choices(ctx) if callable(spec.choices) else spec.choices
    choices = list(choices or [])
    value = ctx.settings.get(spec.key)
    if value not in choices and value is not None:
        choices.append(value)
    return choices


def build_settings_tab(ctx: AppState, ui: PageUI) -> tuple[Any, list, list[SettingSpec]]:
    specs = list(ctx.settings.specs.values())
    sections: dict[str, list[SettingSpec]] = {}
    for spec in specs:
        sections.setdefault(spec.section, []).append(spec)
    components, ordered = [], []
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", scale=0, min_width=200)
        result = gr.HTML("", elem_id="settings_result", js_on_load=None)
    if not specs:
        gr.Markdown("No settings are registered.")
    for section, section_specs in sections.items():
        with gr.Group():
            gr.Markdown(f"### {html.escape(section)}")
            for spec in section_specs:
                components.append(_setting_component(ctx, spec))
                ordered.append(spec)
    if ctx.callbacks.errors:
        gr.Markdown("**Scripts that failed to load:**\n\n" + "\n".join(f"- `{e}`" for e in ctx.callbacks.errors))

    def apply_settings(*values):
        try:
            changed = ctx.settings.update({spec.key: value for spec, value in zip(ordered, values)})
        except ValueError as exc:
            return messages_html([str(exc)], "error")
        saved = f" (saved to {ctx.settings.path})" if ctx.settings.path else ""
        text = f"{len(changed)} setting{'s' if len(changed) != 1 else ''} changed{saved}."
        return f'<div class="settings-ok">{html.escape(text)}</div>'

    event = apply.click(apply_settings, components, [result], api_visibility="private", queue=False)
    return event, components, ordered


# -- the page ------------------------------------------------------------------------------------------------
def build_blocks(ctx: AppState) -> tuple[gr.Blocks, PageUI]:
    """The Gradio page for ``ctx`` (not yet mounted)."""
    ui = PageUI()
    info = model_info(ctx)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        with gr.Row(elem_id="quicksettings"):
            choices = checkpoint_choices(ctx)
            current = model_value(ctx.loaded_model())
            ui.checkpoint = gr.Dropdown(choices, value=current,
                                        label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                        scale=0, min_width=360, allow_custom_value=False)
            refresh_checkpoints = gr.Button("↻", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=48,
                                            elem_classes=["tool"])
            model_status = gr.HTML("", elem_id="sd_model_status", js_on_load=None)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                build_txt2img_tab(ctx, ui, info)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                ui.extras["img2img"] = build_img2img_tab(ctx, ui, info)  # its own PageUI (ids img2img_...)
            for tab in ctx.callbacks.collect("ui_tabs", ctx):
                build_script_tab(ctx, tab, None)
            with gr.Tab("Train", id="train", elem_id="tab_train"):
                ui.hypernetwork_created = build_train_tab(ctx, ui)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings") as settings_tab:
                ui.settings_applied, setting_components, setting_specs = build_settings_tab(ctx, ui)

        # The form was built at start-up: a page opened later gets the settings as saved now. Opening the tab
        # only renews the dropdowns' choices (new checkpoints, ...); it never overwrites what is being typed.
        def saved_settings():
            return [gr.update(choices=setting_choices(ctx, spec), value=ctx.settings.get(spec.key))
                    if spec.component == "dropdown" else gr.update(value=ctx.settings.get(spec.key))
                    for spec in setting_specs]

        def dropdown_choices():
            return [gr.update(choices=setting_choices(ctx, spec)) if spec.component == "dropdown" else gr.update()
                    for spec in setting_specs]

        demo.load(saved_settings, None, setting_components, api_visibility="private", queue=False)
        settings_tab.select(dropdown_choices, None, setting_components, api_visibility="private", queue=False)

        def refresh_checkpoint_list():
            return gr.update(choices=checkpoint_choices(ctx), value=model_value(ctx.loaded_model()))

        refresh_checkpoints.click(refresh_checkpoint_list, None, [ui.checkpoint],
                                  api_visibility="private", queue=False)

        def load_checkpoint(title):
            try:
                ctx.load_model(title)
            except Exception as exc:  # noqa: BLE001
                log.exception("loading %s failed", title)
                return (messages_html([f"Could not load {title}: {exc}"], "error"),
                        gr.update(value=model_value(ctx.loaded_model())), gr.update(), gr.update())
            info = model_info(ctx)
            return ("", gr.update(), gr.update(visible=info["demo"]), gr.update(value=info["demo_text"]))

        demo_text_md = _find_demo_markdown(ui)
        ui.model_changed = ui.checkpoint.input(
            load_checkpoint, [ui.checkpoint], [model_status, ui.checkpoint, ui.demo_hint, demo_text_md],
            api_name="load_checkpoint", concurrency_limit=1, concurrency_id="gpu", show_progress="full")
        sizes = ui.extras.get("train_sizes")
        if sizes is not None:  # the Create panel offers the loaded model's widths
            ui.model_changed.then(sizes[1], None, [sizes[0]], api_visibility="private", queue=False)
        ctx.callbacks.call_each("ui_loaded", ctx, ui, demo)
    return demo, ui


def _find_demo_markdown(ui: PageUI):
    for child in getattr(ui.demo_hint, "children", []):
        if isinstance(child, gr.Markdown):
            return child
    return gr.Markdown(visible=False)


def build_app(state: AppState, configure: Callable[[Any, AppState], None] | None = None):
    """A FastAPI app with the page mounted at ``/``; ``app.state.webui`` is ``state``, ``app.state.blocks`` the page.

    Routes must exist before Gradio is mounted at ``/`` (its mount catches every path), so other code
    adds them through ``configure(app, state)`` or a script's ``app_started`` callback, both called first;
    with ``options.api`` the REST API (:mod:`extension.api`) is added first of all.
    """
    from fastapi import FastAPI

    options = state.options
    demo, ui = build_blocks(state)
    demo.queue(default_concurrency_limit=4, max_size=64)
    app = FastAPI(title=TITLE)
    app.state.webui = state
    app.state.blocks = demo
    app.state.page_ui = ui
    if options.api:
        from ..api import mount_api

        mount_api(app, state)  # AUTOMATIC1111's /sdapi/v1, before Gradio's catch-all mount
    if configure is not None:
        configure(app, state)
    state.callbacks.call_each("app_started", state, app)
    if options.api:
        from ..api import add_missing_route_answer

        add_missing_route_answer(app, state)  # after every route, before Gradio's catch-all mount
    auth = parse_auth(options.gradio_auth, options.gradio_auth_path) or None
    gr.mount_gradio_app(app, demo, path="/", auth=auth, head=head_html(options.javascript_dir),
                        css=page_css(options.style_css), server_name=options.bind_address,
                        server_port=options.port, footer_links=["api", "gradio", "settings"])
    # Gradio's auth leaves part of its routes open; the gate closes them and confines its file routes
    app.state.gate = install_gate(app, dict(auth or []), file_roots(options))
    install_host_guard(app, options)  # outermost: a foreign Host name reaches no route (DNS rebinding)
    return app


def exposure_warnings(options) -> list[str]:
    """What to warn about at start: a server reachable from other machines (``--listen``) without a login."""
    if not options.listen:
        return []
    warnings = []
    if not options.nowebui and not (options.gradio_auth or options.gradio_auth_path):
        warnings.append("--listen without --gradio-auth: anyone who can reach this machine on port "
                        f"{options.port} can use the web UI (generate, train, read the model names)")
    if (options.api or options.nowebui) and not (options.api_auth or options.api_auth_path):
        warnings.append("--listen without --api-auth: anyone who can reach this machine on port "
                        f"{options.port} can use the REST API (/sdapi/v1: generate, train, change options)")
    return warnings


def serve(options, configure: Callable[[Any, AppState], None] | None = None) -> None:
    """Run the web UI until interrupted (``python launch.py``). ``options``: see :class:`ServeOptions`."""
    import uvicorn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ServeOptions.from_namespace(options)
    # the images Gradio shows are copied into its temporary folder: keep it inside the output folder, the one
    # folder (with the models folders) its file routes may serve from
    os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(options.outdir).resolve() / ".gradio"))
    for warning in exposure_warnings(options):
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    state = build_state(options)
    try:
        model = state.current_model()
        log.info("loaded %s", model)
    except Exception as exc:  # noqa: BLE001 - the UI still starts; the dropdown can load another
        log.error("the default checkpoint did not load: %s", exc)
    if options.nowebui:  # the API alone (AUTOMATIC1111's --nowebui); the page is not built
        from ..api import api_app

        app = api_app(state, configure)
    else:
        app = build_app(state, configure)
    host = options.bind_address
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"Running on local URL:  http://{shown}:{options.port}", flush=True)
    uvicorn.run(app, host=host, port=options.port, log_level="warning")


__all__ = ["serve", "build_app", "build_blocks", "build_state", "parse_auth", "ServeOptions", "AppState"]
