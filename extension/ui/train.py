"""The Train tab: AUTOMATIC1111's "Create hypernetwork" and "Train" panels, over :mod:`extension.training`.

Create writes a file with :func:`extension.training.create_hypernetwork` (the Hypernetworks panel shows it at
once). Train runs :func:`extension.training.train_hypernetwork` as a job on the device (generations wait
their turn; Interrupt stops it with a save) and shows, while it runs, the step, time left, loss and learning
rate, a live loss plot and the preview pictures as they arrive, read from the run's
:class:`~extension.training.TrainingMonitor` by a timer.
"""
from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from ..hypernetwork.config import WEIGHT_INITS, ui_activations
from ..training import TrainingConfig, TrainingError, TrainingMonitor, create_hypernetwork, optimizer_names
from ..training.config import CLIP_GRAD_MODES, LATENT_SAMPLING, PRECISIONS
from ..training.templates import list_templates
from ..training.train import native_size
from .state import AppState

log = logging.getLogger(__name__)

DEFAULTS = TrainingConfig()
# AUTOMATIC1111's training options on the Settings tab (and /sdapi/v1/options); every run reads them
TRAINING_SETTINGS = ("save_optimizer_state", "training_write_csv_every", "dataset_filename_word_regex",
                     "dataset_filename_join_string")


def _model_widths(ctx: AppState) -> list[str]:
    model = ctx.loaded_model()
    if model is None:
        return ["768", "320", "640", "1280"]
    return [str(w) for w in sorted(model.attention_widths())]


def _status_html(text: str, kind: str = "info") -> str:
    return f'<div class="train-status train-status-{kind}">{html.escape(text)}</div>'


def loss_frame(monitor: TrainingMonitor | None):
    """The loss plot's data: one row per step (a pandas DataFrame, as ``gr.LinePlot`` wants)."""
    import pandas as pd

    points = monitor.losses() if monitor is not None else []
    return pd.DataFrame({"step": [p.step for p in points], "loss": [p.loss for p in points]})


def progress_html(monitor: TrainingMonitor | None) -> str:
    if monitor is None:
        return _status_html("No training has run since the server started.")
    kind = {"stopped": "error", "error": "error", "finished": "ok", "interrupted": "ok"}.get(monitor.state, "info")
    return _status_html(monitor.summary(), kind)


def build_create_panel(ctx: AppState, ui) -> tuple[Any, list]:
    """The Create panel; returns its Create event and the components whose choices list networks."""
    widths = _model_widths(ctx)
    with gr.Column(elem_id="train_create"):
        name = gr.Textbox(label="Name", elem_id="train_create_name")
        sizes = gr.CheckboxGroup(widths, value=widths, label="Modules (the loaded model's attention widths)",
                                 elem_id="train_create_sizes")
        structure = gr.Textbox("1, 2, 1", label="Layer structure", elem_id="train_create_layer_structure",
                               info="first and last 1, e.g. 1, 2, 1")
        with gr.Row():
            activation = gr.Dropdown(ui_activations(), value="linear", label="Activation function",
                                     elem_id="train_create_activation", info="Recommended: Swish / Linear (none)")
            weight_init = gr.Dropdown(list(WEIGHT_INITS), value="Normal", label="Weight initialization",
                                      elem_id="train_create_weight_init",
                                      info="Kaiming for relu-like, Xavier for sigmoid-like, Normal otherwise")
        with gr.Row():
            layer_norm = gr.Checkbox(False, label="Add layer normalization", elem_id="train_create_layer_norm")
            use_dropout = gr.Checkbox(False, label="Use dropout", elem_id="train_create_use_dropout")
            activate_output = gr.Checkbox(False, label="Activate the output layer too",
                                          elem_id="train_create_activate_output")
        dropout = gr.Textbox("0, 0, 0", label="Dropout structure", elem_id="train_create_dropout_structure",
                             info="0~0.35 incrementing sequence: 0, 0.05, 0.15")
        with gr.Row():
            overwrite = gr.Checkbox(False, label="Overwrite old hypernetwork", elem_id="train_create_overwrite")
            file_format = gr.Radio(["safetensors", "pt"], value="safetensors", label="File format",
                                   elem_id="train_create_format")
        create = gr.Button("Create hypernetwork", variant="primary", elem_id="train_create_button")
        result = gr.HTML("", elem_id="train_create_result", js_on_load=None)

    def do_create(name, sizes, structure, activation, weight_init, layer_norm, use_dropout, activate_output,
                  dropout, overwrite, file_format):
        try:
            path = create_hypernetwork(name, ctx.library, sizes=sizes or [], layer_structure=structure,
                                       activation_func=activation, weight_init=weight_init,
                                       add_layer_norm=layer_norm, use_dropout=use_dropout, dropout_structure=dropout,
                                       activate_output=activate_output, overwrite=overwrite, file_format=file_format)
        except TrainingError as exc:
            return _status_html(str(exc), "error")
        return _status_html(f"Created: {path}", "ok")

    ui.extras["train_sizes"] = (sizes, lambda: gr.update(choices=_model_widths(ctx), value=_model_widths(ctx)))
    event = create.click(do_create, [name, sizes, structure, activation, weight_init, layer_norm, use_dropout,
                                     activate_output, dropout, overwrite, file_format], [result],
                         api_visibility="private", queue=False)
    return event, [sizes]


def build_train_panel(ctx: AppState, ui) -> tuple[Any, Any]:
    """The Train panel; returns its network dropdown and its refresh function."""
    model = ctx.loaded_model()
    size = native_size(model) if model is not None else 512
    with gr.Row(elem_id="train_train", equal_height=False):
        with gr.Column(scale=3, min_width=420):  # the settings; the run on the right
            with gr.Row():
                network = gr.Dropdown(ctx.library.names(), label="Hypernetwork", elem_id="train_hypernetwork",
                                      allow_custom_value=False, scale=4)
                refresh = gr.Button("↻", elem_id="train_refresh", scale=0, min_width=48, elem_classes=["tool"])
            with gr.Row():
                learn_rate = gr.Textbox(DEFAULTS.learn_rate, label="Hypernetwork learning rate",
                                        elem_id="train_learn_rate", info="e.g. 5e-5:100, 5e-6:1500, 5e-7:10000")
                clip_mode = gr.Dropdown(list(CLIP_GRAD_MODES), value="disabled", label="Gradient clipping",
                                        elem_id="train_clip_grad_mode")
                clip_value = gr.Textbox(DEFAULTS.clip_grad_value, label="Clip value", elem_id="train_clip_grad_value")
            with gr.Row():
                batch_size = gr.Number(DEFAULTS.batch_size, precision=0, minimum=1, label="Batch size",
                                       elem_id="train_batch_size")
                gradient_step = gr.Number(DEFAULTS.gradient_step, precision=0, minimum=1,
                                          label="Gradient accumulation steps", elem_id="train_gradient_step")
            data_root = gr.Textbox(label="Dataset directory", elem_id="train_dataset_directory",
                                   placeholder="folder of pictures (captions in NAME.txt or the file names)")
            log_directory = gr.Textbox(DEFAULTS.log_directory, label="Log directory", elem_id="train_log_directory")
            with gr.Row():
                template = gr.Dropdown(list_templates(), value=DEFAULTS.template_filename, label="Prompt template",
                                       elem_id="train_template", allow_custom_value=True)
            with gr.Row():
                width = gr.Slider(8, 2048, value=size, step=8, label="Width", elem_id="train_width")
                height = gr.Slider(8, 2048, value=size, step=8, label="Height", elem_id="train_height")
                varsize = gr.Checkbox(False, label="Do not resize images", elem_id="train_varsize")
            steps = gr.Number(DEFAULTS.steps, precision=0, minimum=1, label="Max steps", elem_id="train_steps")
            with gr.Row():
                image_every = gr.Number(DEFAULTS.create_image_every, precision=0, minimum=0,
                                        label="Save an image to log directory every N steps, 0 to disable",
                                        elem_id="train_create_image_every")
                save_every = gr.Number(DEFAULTS.save_hypernetwork_every, precision=0, minimum=0,
                                       label="Save a copy of the hypernetwork to log directory every N steps, "
                                             "0 to disable",
                                       elem_id="train_save_every")
            with gr.Row():
                use_weight = gr.Checkbox(False, label="Use PNG alpha channel as loss weight",
                                         elem_id="train_use_weight")
                from_txt2img = gr.Checkbox(False, label="Read parameters (prompt, etc...) from txt2img tab when making "
                                           "previews", elem_id="train_preview_from_txt2img")
            with gr.Row():
                shuffle = gr.Checkbox(False, label="Shuffle tags by ',' when creating prompts", elem_id="train_shuffle")
                tag_drop = gr.Slider(0, 1, value=0, step=0.1, label="Drop out tags when creating prompts",
                                     elem_id="train_tag_drop_out")
                flip = gr.Checkbox(False, label="Random horizontal flip", elem_id="train_flip")
            latent = gr.Radio(list(LATENT_SAMPLING), value="once", label="Choose latent sampling method",
                              elem_id="train_latent_sampling")
            with gr.Row():
                optimizer = gr.Dropdown(optimizer_names(), value="AdamW", label="Optimizer", elem_id="train_optimizer")
                seed = gr.Number(-1, precision=0, label="Seed (-1: random)", elem_id="train_seed")
                precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Mixed precision",
                                        elem_id="train_mixed_precision")
                checkpointing = gr.Checkbox(False, label="Gradient checkpointing (less memory, slower)",
                                            elem_id="train_gradient_checkpointing")
                snr_gamma = gr.Number(0, minimum=0, label="Min-SNR gamma (0: off, AUTOMATIC1111's loss; e.g. 5)",
                                      elem_id="train_snr_gamma")
        with gr.Column(scale=2, min_width=360):
            with gr.Row():
                start = gr.Button("Train Hypernetwork", variant="primary", elem_id="train_start")
                interrupt = gr.Button("Interrupt", variant="stop", elem_id="train_interrupt")
            status = gr.HTML(progress_html(ctx.training), elem_id="train_progress", js_on_load=None)
            plot = gr.LinePlot(loss_frame(ctx.training), x="step", y="loss", title="Training loss", x_title="step",
                               y_title="loss", elem_id="train_loss_plot", height=260)
            previews = gr.Gallery(label="Previews", elem_id="train_previews", columns=4, height=260,
                                  object_fit="contain", interactive=False)
            timer = gr.Timer(1.0)

    def refresh_names(current):
        ctx.library.refresh()
        names = ctx.library.names()
        return gr.update(choices=names, value=current if current in names else None)

    refresh.click(refresh_names, [network], [network], api_visibility="private", queue=False)

    def run(name, learn_rate, clip_mode, clip_value, batch_size, gradient_step, data_root, log_directory, template,
            width, height, varsize, steps, image_every, save_every, use_weight, from_txt2img, shuffle, tag_drop, flip,
            latent, optimizer, seed, precision, checkpointing, snr_gamma, prompt, negative, txt_steps, sampler, cfg,
            txt_seed, txt_width, txt_height):
        monitor = TrainingMonitor()
        ctx.training = monitor
        try:
            config = TrainingConfig.from_request(dict(
                hypernetwork_name=name or "", learn_rate=learn_rate, clip_grad_mode=clip_mode,
                clip_grad_value=clip_value, batch_size=batch_size, gradient_step=gradient_step,
                data_root=data_root or "", log_directory=log_directory, template_filename=template,
                training_width=width, training_height=height, varsize=varsize, steps=steps,
                create_image_every=image_every, save_hypernetwork_every=save_every, use_weight=use_weight,
                preview_from_txt2img=from_txt2img, shuffle_tags=shuffle, tag_drop_out=tag_drop, flip=flip,
                latent_sampling_method=latent, optimizer=optimizer, seed=None if seed is None or seed < 0 else seed,
                mixed_precision=precision, gradient_checkpointing=checkpointing, snr_gamma=snr_gamma or 0,
                preview_prompt=prompt or "", preview_negative_prompt=negative or "", preview_steps=txt_steps,
                preview_sampler_name=sampler, preview_cfg_scale=cfg, preview_seed=txt_seed,
                preview_width=txt_width, preview_height=txt_height,
                clip_skip=int(ctx.settings.get("CLIP_stop_at_last_layers", 1) or 1),
                **{key: ctx.settings.get(key) for key in TRAINING_SETTINGS if ctx.settings.get(key) is not None}))
            result = ctx.train(config, monitor=monitor, source="ui")
        except TrainingError as exc:
            monitor.set_state("error", str(exc))
            return _status_html(str(exc), "error"), _shown_previews(monitor)
        except Exception as exc:  # noqa: BLE001 - the message belongs in the page; the server goes on
            log.exception("training failed")
            monitor.set_state("error", f"{type(exc).__name__}: {exc}")
            return _status_html(f"Training failed: {exc}", "error"), _shown_previews(monitor)
        # The finished run's message and its last previews arrive together: the timer may not tick again first.
        return _status_html(result.message, "ok" if result.status != "stopped" else "error"), _shown_previews(monitor)

    txt2img = [ui.prompt, ui.negative_prompt, ui.steps, ui.sampler, ui.cfg_scale, ui.seed, ui.width, ui.height]
    inputs = [network, learn_rate, clip_mode, clip_value, batch_size, gradient_step, data_root, log_directory,
              template, width, height, varsize, steps, image_every, save_every, use_weight, from_txt2img, shuffle,
              tag_drop, flip, latent, optimizer, seed, precision, checkpointing, snr_gamma, *txt2img]
    start.click(run, inputs, [status, previews], api_visibility="private", concurrency_limit=1, concurrency_id="gpu")
    interrupt.click(lambda: ctx.interrupt() and None, None, None, api_visibility="private", queue=False)

    def poll():
        monitor = ctx.training
        return progress_html(monitor), loss_frame(monitor), _shown_previews(monitor)

    timer.tick(poll, None, [status, plot, previews], api_visibility="private", queue=False, show_progress="hidden")
    return network, refresh_names


def _shown_previews(monitor: TrainingMonitor | None) -> list[tuple[str, str]]:
    """The gallery's items: each preview image with its step as caption."""
    return [(str(path), f"step {step}") for step, path in (monitor.previews() if monitor else [])]


def build_train_tab(ctx: AppState, ui) -> Any:
    """The tab's two panels (inside the ``gr.Tab`` context); returns the Create event."""
    with gr.Tabs(elem_id="train_tabs"):
        with gr.Tab("Create hypernetwork", id="train_create_tab", elem_id="train_create_tab"):
            created, _ = build_create_panel(ctx, ui)
        with gr.Tab("Train", id="train_train_tab", elem_id="train_train_tab"):
            network, refresh_names = build_train_panel(ctx, ui)
    created.then(refresh_names, [network], [network], api_visibility="private", queue=False)
    return created
