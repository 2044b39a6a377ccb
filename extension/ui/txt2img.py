"""The txt2img tab: prompt, parameters, Generate/Interrupt, gallery with infotext, messages, scripts.

Built by the host (:mod:`extension.ui.app`); the components scripts need are collected in :class:`PageUI`
and handed to their callbacks.
"""
from __future__ import annotations

import dataclasses
import html
import logging
import time
from typing import Any

import gradio as gr

from .. import samplers
from ..processing import Txt2ImgResult
from .state import AppState

log = logging.getLogger(__name__)

NO_SCRIPT = "None"


@dataclasses.dataclass
class PageUI:
    """The page's components that scripts may read or wire events to (filled while the page is built)."""

    prompt: Any = None
    negative_prompt: Any = None
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    sampler: Any = None
    scheduler: Any = None
    steps: Any = None
    cfg_scale: Any = None
    width: Any = None
    height: Any = None
    seed: Any = None
    batch_count: Any = None
    batch_size: Any = None
    clip_skip: Any = None
    checkpoint: Any = None
    gallery: Any = None
    infotext: Any = None
    messages: Any = None
    result: Any = None  # gr.State: {"images": [...], "paths": [...], "infotexts": [...], "seeds": [...]}
    selected: Any = None  # gr.State: index of the selected gallery image (or None)
    script: Any = None
    demo_hint: Any = None
    tabname: str = "txt2img"  # the tab these components are on: the prefix of their ids
    # Events other tabs can chain on with ``.then(...)`` (set by the host before ``ui_loaded`` runs):
    model_changed: Any = None
    settings_applied: Any = None
    hypernetwork_created: Any = None  # the Train tab's Create (the cards re-render after it)
    generated: Any = None
    extras: dict = dataclasses.field(default_factory=dict)  # what scripts share between their callbacks


def messages_html(messages: list[str], kind: str = "warning") -> str:
    if not messages:
        return '<div class="txt2img-messages-empty"></div>'
    items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
    return f'<div class="txt2img-messages txt2img-messages-{kind}"><ul>{items}</ul></div>'


SOURCES = {"api": "the API", "ui": "the UI", "cli": "the command line"}


def queue_status(ctx) -> str:
    """One line on the device's job runner: what runs, who asked, how far it is, and how many wait.

    ``"busy: txt2img from the API, step 3/20; 1 waiting"``, ``"idle"``.
    """
    snapshot = ctx.jobs.progress()
    waiting = f"; {snapshot.waiting} waiting" if snapshot.waiting else ""
    if not snapshot.active:
        return "idle" + waiting
    source = SOURCES.get(snapshot.source, snapshot.source or "an unknown caller")
    parts = [f"busy: {snapshot.job} from {source}"]
    if snapshot.sampling_steps:
        if snapshot.job_count > 1:
            parts.append(f"image {snapshot.job_no + 1}/{snapshot.job_count}")
        parts.append(f"step {snapshot.sampling_step}/{snapshot.sampling_steps}")
    elif snapshot.job_count > 1:
        parts.append(f"{snapshot.job_no}/{snapshot.job_count}")
    if snapshot.interrupted:
        parts.append("interrupting")
    return ", ".join(parts) + waiting


def queue_status_html(ctx) -> str:
    text = queue_status(ctx)
    kind = "idle" if text.startswith("idle") else "busy"
    return f'<div class="queue-status queue-status-{kind}">{html.escape(text)}</div>'


def make_request(**values):
    """The :class:`extension.processing.Txt2ImgRequest` for the UI's values."""
    from ..processing import Txt2ImgRequest

    return Txt2ImgRequest(**values)


def resolve_seed(seed: Any) -> int:
    """The seed box's value; -1 (or nothing) draws a random seed, as processing would."""
    from ..processing import resolve_seed as draw

    try:
        seed = int(seed)
    except (TypeError, ValueError):
        seed = -1
    return draw(seed)


def build_script_tab(ctx, tab, ui) -> None:
    """A tab a script registered (a :class:`~extension.ui.callbacks.UiTab`); one that fails to build says so
    in its place instead of breaking the page."""
    with gr.Tab(tab.title, id=tab.elem_id, elem_id=tab.elem_id):
        try:
            tab.build(ctx, ui)
        except Exception:  # noqa: BLE001
            log.exception("tab %r failed to build", tab.title)
            gr.Markdown(f"The {tab.title} tab failed to build; see the server console.")


def gallery_value(generation: Txt2ImgResult) -> list:
    """What the gallery shows: the saved files (their PNG keeps the infotext) or the images."""
    if generation.paths and len(generation.paths) == len(generation.images):
        return [str(path) for path in generation.paths]
    return list(generation.images)


def result_state(generation: Txt2ImgResult) -> dict:
    return {"images": list(generation.images), "paths": [str(path) for path in generation.paths],
            "infotexts": list(generation.infotexts), "seeds": list(generation.seeds)}


def selected_image(result: dict | None, index: int | None):
    """The PIL image selected in the gallery (the first when nothing is selected), or ``None``."""
    if not result:
        return None
    index = index or 0
    images = result.get("images") or []
    if 0 <= index < len(images) and images[index] is not None:
        return images[index]
    paths = result.get("paths") or []
    if 0 <= index < len(paths):
        from PIL import Image

        with Image.open(paths[index]) as image:
            image.load()
            return image
    return None


def generation_outputs(generation: Txt2ImgResult, started: float) -> tuple:
    """What a tab's Generate shows: (gallery, infotext, messages with the time taken, result state, selection)."""
    messages = list(generation.messages)  # processing says when it was interrupted
    elapsed = time.monotonic() - started
    status = f'<div class="txt2img-time">Time taken: {elapsed:.1f} s</div>'
    infotext = generation.infotexts[0] if generation.infotexts else ""
    return gallery_value(generation), infotext, messages_html(messages) + status, result_state(generation), 0


def failed_outputs(exc: Exception) -> tuple:
    """The same outputs when the generation failed: the message, the gallery left as it was."""
    log.exception("generation failed")
    return gr.update(), "", messages_html([f"Generation failed: {exc}"], "error"), gr.update(), gr.update()


def wire_results(ctx, ui: "PageUI", random_seed, reuse_seed) -> None:
    """The events around a tab's gallery: Interrupt, Skip, selecting an image (its infotext), the seed buttons."""
    ui.interrupt.click(lambda: ctx.interrupt() and None, None, None, queue=False, api_visibility="private")
    ui.skip.click(lambda: ctx.skip() and None, None, None, queue=False, api_visibility="private")

    def on_select(result, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else 0)
        infotexts = (result or {}).get("infotexts") or []
        return (infotexts[index] if 0 <= index < len(infotexts) else ""), index

    ui.gallery.select(on_select, [ui.result], [ui.infotext, ui.selected], api_visibility="private", queue=False)
    random_seed.click(lambda: -1, None, [ui.seed], api_visibility="private", queue=False)

    def reuse(result, index):
        seeds = (result or {}).get("seeds") or []
        if not seeds:
            return gr.update()
        index = index or 0
        return seeds[index] if 0 <= index < len(seeds) else seeds[0]

    reuse_seed.click(reuse, [ui.result, ui.selected], [ui.seed], api_visibility="private", queue=False)


class GradioProgress:
    """Turns sampling steps into Gradio's progress bar: "image 2/4 · ETA 3 s", "5/20 steps", elapsed time."""

    def __init__(self, progress, jobs: int = 1):
        self.progress = progress
        self.jobs = max(1, jobs)
        self.job = 0
        self.started = time.monotonic()

    def __call__(self, step: int, total: int) -> None:
        if self.progress is None or total <= 0:
            return
        done = self.job * total + step
        overall = total * self.jobs
        elapsed = time.monotonic() - self.started
        eta = elapsed * (overall - done) / done if done else 0.0
        desc = (f"image {self.job + 1}/{self.jobs} · " if self.jobs > 1 else "") + f"ETA {eta:.1f} s"
        try:
            self.progress((done, overall), desc=desc, unit="steps")
        except Exception:  # noqa: BLE001 - progress display must never fail a generation
            pass


def build_prompt_row(ctx: AppState, ui: PageUI, tab: str):
    """The prompt boxes, Generate, Interrupt, Skip and the device's status line of tab ``tab`` (``txt2img``,
    ``img2img``: the elements' id prefix). Returns the status line's refresh timer."""
    with gr.Row(elem_id=f"{tab}_toprow"):
        with gr.Column(scale=6, min_width=320):
            ui.prompt = gr.Textbox(label="Prompt", elem_id=f"{tab}_prompt", lines=3, max_lines=12,
                                   placeholder="Prompt (press Ctrl+Enter to generate; click a hypernetwork card "
                                               "to add its tag; Ctrl+Up/Down over a tag changes its multiplier)")
            ui.negative_prompt = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_neg_prompt", lines=2,
                                            max_lines=8, placeholder="Negative prompt")
        with gr.Column(scale=1, min_width=160, elem_id=f"{tab}_actions"):
            ui.generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            with gr.Row():
                ui.interrupt = gr.Button("Interrupt", variant="stop", elem_id=f"{tab}_interrupt", min_width=60)
                ui.skip = gr.Button("Skip", elem_id=f"{tab}_skip", min_width=60)
            # the device's line, whoever uses it (this page, other pages, the REST API, training)
            queue_status = gr.HTML(queue_status_html(ctx), elem_id=f"{tab}_queue_status", js_on_load=None)
            queue_timer = gr.Timer(1.0)
    queue_timer.tick(lambda: queue_status_html(ctx), None, [queue_status], queue=False, show_progress="hidden",
                     **({"api_name": "queue_status"} if tab == "txt2img" else {"api_visibility": "private"}))


def build_sampling_rows(ui: PageUI, tab: str, model_info: dict, size_rows=None):
    """Sampler, schedule, steps, size, batch, CFG and clip skip, and the seed row; ``size_rows()`` (img2img's)
    adds rows between the size and the batch. Returns the seed row's (random, reuse) buttons."""
    size = model_info.get("size", 512)
    with gr.Row():
        ui.sampler = gr.Dropdown(samplers.sampler_names(), value=samplers.DEFAULT_SAMPLER,
                                 label="Sampling method", elem_id=f"{tab}_sampling")
        ui.scheduler = gr.Dropdown(samplers.schedule_type_labels(), value="Automatic", label="Schedule type",
                                   elem_id=f"{tab}_scheduler")
        ui.steps = gr.Slider(1, 150, value=model_info.get("steps", 20), step=1,
                             label="Sampling steps", elem_id=f"{tab}_steps")
    with gr.Row():
        ui.width = gr.Slider(16, 2048, value=size, step=8, label="Width", elem_id=f"{tab}_width")
        ui.height = gr.Slider(16, 2048, value=size, step=8, label="Height", elem_id=f"{tab}_height")
    if size_rows is not None:
        size_rows()
    with gr.Row():
        ui.batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab}_batch_count")
        ui.batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab}_batch_size")
    with gr.Row():
        ui.cfg_scale = gr.Slider(1, 30, value=model_info.get("cfg_scale", 7.0), step=0.5,
                                 label="CFG Scale", elem_id=f"{tab}_cfg_scale")
        ui.clip_skip = gr.Slider(1, 12, value=1, step=1, label="Clip skip", elem_id=f"{tab}_clip_skip")
    with gr.Row(elem_id=f"{tab}_seed_row"):
        ui.seed = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{tab}_seed", scale=4, min_width=120)
        random_seed = gr.Button("⚄", elem_id=f"{tab}_random_seed", scale=0, min_width=48, elem_classes=["tool"])
        reuse_seed = gr.Button("♻", elem_id=f"{tab}_reuse_seed", scale=0, min_width=48, elem_classes=["tool"])
    return random_seed, reuse_seed


def build_extra_network_tabs(ctx: AppState, ui: PageUI) -> None:
    """The sub-tabs scripts add beside "Generation" (the hypernetwork cards), with ids of ``ui.tabname``."""
    for tab in ctx.callbacks.collect("extra_networks_tabs", ctx, ui):
        if ui.tabname != "txt2img" and tab.elem_id.startswith("txt2img_"):
            tab = dataclasses.replace(tab, elem_id=ui.tabname + tab.elem_id[len("txt2img"):])
        build_script_tab(ctx, tab, ui)


def build_results(ui: PageUI, tab: str) -> None:
    """The gallery, the selected image's infotext and the messages of tab ``tab``."""
    ui.gallery = gr.Gallery(label="Output", elem_id=f"{tab}_gallery", columns=4, height=420,
                            object_fit="contain", format="png", preview=True, interactive=False,
                            buttons=["download", "fullscreen"])
    ui.infotext = gr.Textbox(label="Generation parameters of the selected image", lines=4,
                             interactive=False, elem_id=f"{tab}_infotext", buttons=["copy"])
    ui.messages = gr.HTML(messages_html([]), elem_id=f"{tab}_messages", js_on_load=None)


def build_demo_hint(ui: PageUI, model_info: dict, tab: str = "txt2img") -> None:
    with gr.Accordion("Demo model: the words it knows", open=True, visible=model_info.get("demo", False),
                      elem_id=f"{tab}_demo_hint") as demo_hint:
        gr.Markdown(model_info.get("demo_text", ""), elem_id=f"{tab}_demo_text")
        demo_examples = model_info.get("examples") or []
        if demo_examples:
            gr.Examples(examples=[[e] for e in demo_examples], inputs=[ui.prompt], label="Example prompts",
                        examples_per_page=12)
    ui.demo_hint = demo_hint


def build_txt2img_tab(ctx: AppState, ui: PageUI, model_info: dict) -> None:
    """Create the tab's components (inside the ``gr.Tab`` context) and wire the generation."""
    ui.result = gr.State(None)  # made first: script tabs wire events to them
    ui.selected = gr.State(None)
    build_prompt_row(ctx, ui, "txt2img")
    build_demo_hint(ui, model_info)

    with gr.Row(elem_id="txt2img_main", equal_height=False):
        with gr.Column(scale=1, min_width=360, elem_id="txt2img_left"):
            with gr.Tabs(elem_id="txt2img_extra_tabs"):
                with gr.Tab("Generation", id="txt2img_generation", elem_id="txt2img_generation_tab"):
                    random_seed, reuse_seed = build_sampling_rows(ui, "txt2img", model_info)
                    script_titles = [NO_SCRIPT] + [s.title() for s in ctx.callbacks.scripts]
                    ui.script = gr.Dropdown(script_titles, value=NO_SCRIPT, label="Script",
                                            elem_id="txt2img_script")
                    script_groups, script_inputs, script_slices = [], [], []
                    for script in ctx.callbacks.scripts:
                        with gr.Column(visible=False, elem_id=script.elem_id("group")) as group:
                            try:
                                components = list(script.ui(ctx, ui) or [])
                            except Exception:  # noqa: BLE001
                                log.exception("script %r: ui() failed", script.title())
                                components = []
                        script_groups.append(group)
                        script_slices.append((len(script_inputs), len(script_inputs) + len(components)))
                        script_inputs.extend(components)
                build_extra_network_tabs(ctx, ui)
        with gr.Column(scale=1, min_width=320, elem_id="txt2img_results"):
            build_results(ui, "txt2img")
    scripts = list(ctx.callbacks.scripts)

    def on_script(title):
        updates = [gr.update(visible=(s.title() == title)) for s in scripts]
        return updates[0] if len(updates) == 1 else updates  # one output takes the value itself

    if scripts:
        ui.script.change(on_script, [ui.script], script_groups, api_visibility="private", queue=False)

    def generate(prompt, negative_prompt, sampler, scheduler, steps, cfg_scale, width, height, seed,
                 batch_count, batch_size, clip_skip, script_title, *script_values, progress=gr.Progress()):
        values = dict(prompt=prompt or "", negative_prompt=negative_prompt or "", sampler_name=sampler,
                      scheduler=scheduler, steps=int(steps), cfg_scale=float(cfg_scale), width=int(width),
                      height=int(height), seed=resolve_seed(seed), batch_size=int(batch_size),
                      n_iter=int(batch_count), clip_skip=int(clip_skip))
        script = ctx.callbacks.script(script_title) if script_title and script_title != NO_SCRIPT else None
        started = time.monotonic()
        try:
            request = make_request(**values)
            name = script.title() if script is not None else "txt2img"
            with ctx.jobs.job(name, job_count=int(batch_count), source="ui"):  # shared with the API, training
                if script is not None:
                    lo, hi = script_slices[scripts.index(script)]
                    generation = script.run(ctx, request, *script_values[lo:hi], progress=progress)
                else:
                    generation = ctx.generate(request, GradioProgress(progress), source="ui")
        except Exception as exc:  # noqa: BLE001 - show the user what went wrong
            return failed_outputs(exc)
        return generation_outputs(generation, started)

    inputs = [ui.prompt, ui.negative_prompt, ui.sampler, ui.scheduler, ui.steps, ui.cfg_scale, ui.width,
              ui.height, ui.seed, ui.batch_count, ui.batch_size, ui.clip_skip, ui.script, *script_inputs]
    outputs = [ui.gallery, ui.infotext, ui.messages, ui.result, ui.selected]
    ui.generated = ui.generate.click(generate, inputs, outputs, api_name="txt2img", concurrency_limit=1,
                                     concurrency_id="gpu", show_progress="full",
                                     show_progress_on=[ui.gallery])
    wire_results(ctx, ui, random_seed, reuse_seed)
