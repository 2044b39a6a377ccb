"""Training inside a host: the Train tab (Create and Train), ``POST /sdapi/v1/train/hypernetwork``, and the run.

The run is a :class:`~extension.hosts.training_process.TrainingProcess` (the project's own packages, in a process
of its own: see docs/ARCHITECTURE.md, "The host wing") made to feel in-process:

- it holds the host's queue lock and job state for its whole length, as the host's own long jobs do, so
  generations wait for it and the host's progress bar (with its ETA) and Interrupt button follow it;
- its progress arrives in a :class:`~extension.training.monitor.TrainingMonitor`, from which the host's state is
  set: step, steps, a text line with the loss and learning rate and a loss plot, each new preview as the live
  preview;
- Interrupt asks it to save and stop;
- the host's model leaves the device while it trains (the host loads it back when it next generates), and the
  network it wrote is in the cards at once.

It trains the checkpoint loaded in the host, on the parameters of the standalone Train tab (AUTOMATIC1111's, with
its bugs fixed: ``docs/training.md``).
"""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import Body, HTTPException

from ...training.config import CLIP_GRAD_MODES, LATENT_SAMPLING, PRECISIONS, TrainingConfig, TrainingError
from ..training_process import TrainingProcess
from . import folder, loss_plot

log = logging.getLogger(__name__)

# The host settings AUTOMATIC1111's training reads, passed on where the host has them.
HOST_SETTINGS = {"save_training_settings_to_txt": None, "training_write_csv_every": "training_write_csv_every",
                 "dataset_filename_word_regex": "dataset_filename_word_regex",
                 "dataset_filename_join_string": "dataset_filename_join_string",
                 "save_optimizer_state": "save_optimizer_state", "CLIP_stop_at_last_layers": "clip_skip"}


def training_roots() -> list[Path]:
    """Where datasets and logs may be: the host's data folder, then every ``--train-data-dir``."""
    from modules import paths_internal, shared

    roots = [Path(paths_internal.data_path)]
    roots += [Path(p) for p in (getattr(shared.cmd_opts, "train_data_dir", None) or [])]
    return [root.expanduser().resolve() for root in roots]


def request_values(values: dict[str, Any]) -> dict[str, Any]:
    """The request's values checked here first (a bad one is answered at once, before a process starts), with
    the host's settings under what the request leaves out."""
    from modules import shared

    from ...training.templates import list_templates

    values = {k: v for k, v in values.items() if v is not None and k != "id_task"}
    name = str(values.get("hypernetwork_name") or "").strip()
    if not name:
        raise TrainingError("hypernetwork_name: choose a hypernetwork (create one first)")
    if folder.library().get(name) is None:
        raise TrainingError(folder.library().unknown_message(name))
    values["hypernetwork_name"] = name
    template = values.get("template_filename")
    if template is not None and str(template) not in list_templates():
        raise TrainingError(f"template_filename: no template {template!r} (available: {', '.join(list_templates())})")
    for option, field in HOST_SETTINGS.items():
        if field and field not in values and option in shared.opts.data:
            values[field] = shared.opts.data[option]
    TrainingConfig.from_request(values).validated()  # raises TrainingError naming the field
    from ...confine import OutsideRoots, confine_dir

    for field in ("data_root", "log_directory"):
        try:
            confine_dir(values.get(field) or "", training_roots(), field)
        except OutsideRoots as exc:
            raise TrainingError(str(exc)) from None
    return values


def free_device() -> tuple[int, Any]:
    """Take the host's models off the device for the run.

    Returns:
        How many were moved, and what to call after the run: nothing in the Forge family (it loads them back when
        it next needs them), the model back to the device in AUTOMATIC1111.
    """
    for module in ("backend.memory_management", "ldm_patched.modules.model_management"):
        try:
            management = __import__(module, fromlist=["unload_all_models"])
        except ImportError:
            continue
        count = len(getattr(management, "current_loaded_models", []))
        management.unload_all_models()
        getattr(management, "soft_empty_cache", lambda *a, **k: None)()
        return count, lambda: None
    from modules import sd_models, shared

    model = shared.sd_model
    if model is None:
        return 0, lambda: None
    sd_models.send_model_to_cpu(model)
    return 1, lambda: sd_models.send_model_to_device(model)


def loaded_checkpoint() -> Path:
    from modules import shared

    info = getattr(shared.sd_model, "sd_checkpoint_info", None)
    filename = getattr(info, "filename", None)
    if not filename or not os.path.isfile(filename):
        raise TrainingError("no checkpoint is loaded: load one in the checkpoint list first")
    return Path(filename).resolve()  # a linked checkpoint: the training process is given the file's own folder


def run(values: dict[str, Any]) -> tuple[str, Any, list[Path]]:
    """One run, start to end, inside the host's job (the caller holds the queue lock and has begun the job).

    Returns:
        AUTOMATIC1111's answer text, the :class:`~extension.training.result.TrainingResult`, and the previews'
        paths in order.
    """
    from modules import shared

    values = request_values(values)
    checkpoint = loaded_checkpoint()
    moved, bring_back = free_device()
    log.warning("hypernetworks: training %s on %s in its own process; %d model(s) left the device for it",
                values["hypernetwork_name"], checkpoint.name, moved)
    try:
        process = TrainingProcess(values, checkpoint, folder.library().root, training_roots()).start()
    except BaseException:
        bring_back()
        raise
    state = shared.state
    state.job = "train hypernetwork"
    state.job_count, state.job_no = 1, 0
    shown = {"previews": 0}

    def update() -> None:
        monitor = process.monitor
        state.sampling_steps = max(1, monitor.last_step - monitor.first_step)
        state.sampling_step = max(0, monitor.step - monitor.first_step)
        state.textinfo = loss_plot.progress_html(monitor)
        previews = monitor.previews()
        if len(previews) > shown["previews"]:
            shown["previews"] = len(previews)
            try:
                from PIL import Image

                with Image.open(previews[-1][1]) as image:
                    state.assign_current_image(image.copy())
            except OSError:
                pass

    try:
        result, info = process.wait(on_update=update, should_stop=lambda: bool(state.interrupted))
    except BaseException:
        process.kill()
        raise
    finally:
        try:
            bring_back()
        finally:
            folder.library().refresh()  # the file it wrote is in the cards at once
    return info, result, [path for _, path in process.monitor.previews()]


def train_route(args: dict[str, Any] = Body(...)) -> dict:
    """``POST /sdapi/v1/train/hypernetwork``: AUTOMATIC1111's arguments; answers when the run ends with
    ``info`` in AUTOMATIC1111's words (``/sdapi/v1/progress`` follows it, ``/sdapi/v1/interrupt`` stops it with a
    save). A refused run is a 422 naming the field."""
    from modules import shared
    from modules.call_queue import queue_lock

    if not isinstance(args, dict):
        raise HTTPException(status_code=422, detail="the body must be a JSON object of training parameters")
    with queue_lock:
        shared.state.begin(job="train_hypernetwork")
        try:
            info, result, _ = run(args)
        except TrainingError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        finally:
            shared.state.end()
    if result.status == "error":  # the training process refused the run before it started (its own checks)
        raise HTTPException(status_code=422, detail=result.message)
    return {"info": info}


# -- the Train tab ---------------------------------------------------------------------------------------------
def _previews(files, most: int = 16) -> list:
    """The run's last preview images, loaded (a path outside the host's served folders would not show)."""
    from PIL import Image

    images = []
    for path in list(files)[-most:]:
        try:
            with Image.open(path) as image:
                images.append(image.copy())
        except OSError:
            continue
    return images


def _click(button, fn, inputs, outputs, js: str | None = None):
    """``button.click`` with the page-side function, under the name this host's Gradio knows (``_js`` before 4)."""
    import gradio as gr

    kwargs = {}
    if js:
        kwargs["js" if int(gr.__version__.split(".")[0]) >= 4 else "_js"] = js
    return button.click(fn=fn, inputs=inputs, outputs=outputs, **kwargs)


_txt2img: dict[str, Any] = {}  # the txt2img tab's components the previews may copy ("Read parameters")
TXT2IMG_IDS = {"txt2img_prompt": "preview_prompt", "txt2img_neg_prompt": "preview_negative_prompt",
               "txt2img_steps": "preview_steps", "txt2img_sampling": "preview_sampler_name",
               "txt2img_cfg_scale": "preview_cfg_scale", "txt2img_seed": "preview_seed",
               "txt2img_width": "preview_width", "txt2img_height": "preview_height"}


_host_train_tab: dict[str, bool] = {"seen": False}
HOST_TRAIN_TAB_ID = "ti_output"  # AUTOMATIC1111's (and reForge's) own Train tab, built before extensions' tabs


def remember_component(component, **kwargs) -> None:
    """``on_after_component``: keep the txt2img components the Train tab reads (built before the tab), and note
    whether the host has a Train tab of its own."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    if elem_id == HOST_TRAIN_TAB_ID:
        _host_train_tab["seen"] = True
    if elem_id in TXT2IMG_IDS:
        _txt2img[TXT2IMG_IDS[elem_id]] = component


def ui_tabs():
    import gradio as gr
    from modules import call_queue, shared

    from ...hypernetwork.config import WEIGHT_INITS, ui_activations
    from ...training import optimizer_names
    from ...training.templates import list_templates
    from . import model

    defaults = TrainingConfig()

    def widths() -> list[str]:
        return [str(w) for w in sorted(model.attention_widths(shared.sd_model) or [768, 320, 640, 1280])]

    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Tabs(elem_id="hn_train_tabs"):
            with gr.Tab(label="Create hypernetwork", id="hn_create_tab", elem_id="hn_create_tab"):
                name = gr.Textbox(label="Name", elem_id="hn_create_name")
                sizes = gr.CheckboxGroup(label="Modules", value=widths(), choices=widths(), elem_id="hn_create_sizes")
                structure = gr.Textbox("1, 2, 1", label="Enter hypernetwork layer structure",
                                       placeholder="1st and last digit must be 1. ex:'1, 2, 1'",
                                       elem_id="hn_create_layer_structure")
                activation = gr.Dropdown(value="linear", label="Select activation function of hypernetwork.",
                                         choices=ui_activations(), elem_id="hn_create_activation")
                weight_init = gr.Dropdown(value="Normal", label="Select Layer weights initialization.",
                                          choices=list(WEIGHT_INITS), elem_id="hn_create_weight_init")
                layer_norm = gr.Checkbox(label="Add layer normalization", elem_id="hn_create_layer_norm")
                use_dropout = gr.Checkbox(label="Use dropout", elem_id="hn_create_use_dropout")
                dropout = gr.Textbox("0, 0, 0", label="Enter hypernetwork Dropout structure (or empty).",
                                     placeholder="1st and last digit must be 0 and values should be between 0 and 1. "
                                                 "ex:'0, 0.01, 0'", elem_id="hn_create_dropout_structure")
                activate_output = gr.Checkbox(label="Activate the output layer too",
                                              elem_id="hn_create_activate_output")
                overwrite = gr.Checkbox(label="Overwrite Old Hypernetwork", elem_id="hn_create_overwrite")
                file_format = gr.Radio(["safetensors", "pt"], value="safetensors", label="File format",
                                       elem_id="hn_create_file_format")
                create = gr.Button(value="Create hypernetwork", variant="primary", elem_id="hn_create_button")
                created = gr.HTML(elem_id="hn_create_result")
            with gr.Tab(label="Train", id="hn_train_tab", elem_id="hn_train_tab"):
                gr.HTML("Train a hypernetwork on the loaded checkpoint; it runs in a process of its own "
                        "(<code>docs/training.md</code>).")
                with gr.Row():
                    network = gr.Dropdown(label="Hypernetwork", choices=folder.library().names(),
                                          elem_id="hn_train_network")
                    refresh = gr.Button(value="🔄", elem_id="hn_train_refresh", elem_classes=["tool"])
                learn_rate = gr.Textbox(label="Hypernetwork Learning rate", value=defaults.learn_rate,
                                        placeholder="0.00001", elem_id="hn_train_hypernetwork_learn_rate")
                with gr.Row():
                    clip_mode = gr.Dropdown(value="disabled", label="Gradient Clipping", choices=list(CLIP_GRAD_MODES),
                                            elem_id="hn_train_clip_grad_mode")
                    clip_value = gr.Textbox(value=defaults.clip_grad_value, placeholder="Gradient clip value",
                                            show_label=False, elem_id="hn_train_clip_grad_value")
                with gr.Row():
                    batch_size = gr.Number(label="Batch size", value=defaults.batch_size, precision=0,
                                           elem_id="hn_train_batch_size")
                    gradient_step = gr.Number(label="Gradient accumulation steps", value=defaults.gradient_step,
                                              precision=0, elem_id="hn_train_gradient_step")
                data_root = gr.Textbox(label="Dataset directory", placeholder="Path to directory with input images",
                                       elem_id="hn_train_dataset_directory")
                log_directory = gr.Textbox(label="Log directory", placeholder="Path to directory where to write "
                                           "outputs", value=defaults.log_directory, elem_id="hn_train_log_directory")
                template = gr.Dropdown(label="Prompt template", value=defaults.template_filename,
                                       choices=list_templates(), elem_id="hn_train_template_file")
                training_width = gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512,
                                           elem_id="hn_train_training_width")
                training_height = gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512,
                                            elem_id="hn_train_training_height")
                varsize = gr.Checkbox(label="Do not resize images", value=False, elem_id="hn_train_varsize")
                steps = gr.Number(label="Max steps", value=defaults.steps, precision=0, elem_id="hn_train_steps")
                with gr.Row():
                    image_every = gr.Number(label="Save an image to log directory every N steps, 0 to disable",
                                            value=defaults.create_image_every, precision=0,
                                            elem_id="hn_train_create_image_every")
                    save_every = gr.Number(label="Save a copy of embedding to log directory every N steps, 0 to "
                                           "disable", value=defaults.save_hypernetwork_every, precision=0,
                                           elem_id="hn_train_save_embedding_every")
                use_weight = gr.Checkbox(label="Use PNG alpha channel as loss weight", value=False,
                                         elem_id="hn_train_use_weight")
                from_txt2img = gr.Checkbox(label="Read parameters (prompt, etc...) from txt2img tab when making "
                                           "previews", value=False, elem_id="hn_train_preview_from_txt2img")
                shuffle_tags = gr.Checkbox(label="Shuffle tags by ',' when creating prompts.", value=False,
                                           elem_id="hn_train_shuffle_tags")
                tag_drop_out = gr.Slider(minimum=0, maximum=1, step=0.1, label="Drop out tags when creating prompts.",
                                         value=0, elem_id="hn_train_tag_drop_out")
                flip = gr.Checkbox(label="Random horizontal flip", value=False, elem_id="hn_train_flip")
                latent = gr.Radio(label="Choose latent sampling method", value="once", choices=list(LATENT_SAMPLING),
                                  elem_id="hn_train_latent_sampling_method")
                with gr.Row():
                    optimizer = gr.Dropdown(label="Optimizer", value=defaults.optimizer, choices=optimizer_names(),
                                            elem_id="hn_train_optimizer")
                    seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0, elem_id="hn_train_seed")
                    precision = gr.Dropdown(label="Mixed precision", value="auto", choices=list(PRECISIONS),
                                            elem_id="hn_train_precision")
                checkpointing = gr.Checkbox(label="Gradient checkpointing (less memory, slower)", value=False,
                                            elem_id="hn_train_checkpointing")
                snr_gamma = gr.Number(label="Min-SNR gamma (0: off, AUTOMATIC1111's loss; e.g. 5)", value=0,
                                      elem_id="hn_train_snr_gamma")
                with gr.Row():
                    interrupt = gr.Button(value="Interrupt", elem_id="hn_train_interrupt")
                    train = gr.Button(value="Train Hypernetwork", variant="primary", elem_id="hn_train_button")
                # javascript/hypernetworks_host_training.js starts the host's progress polling over these.
                gr.HTML(elem_id="hn_train_error")
                gr.HTML(elem_id="hn_train_progress")
                output = gr.Text(elem_id="hn_train_output", value="", show_label=False)
                gallery = gr.Gallery(label="Output", show_label=False, elem_id="hn_train_gallery", columns=4)
                outcome = gr.HTML(elem_id="hn_train_outcome")
                dummy = gr.Textbox(visible=False)  # the task id from the progress script (a Label takes no str)

        def do_create(name, sizes, structure, activation, weight_init, layer_norm, use_dropout, dropout,
                      activate_output, overwrite, file_format):
            from ...training import create_hypernetwork as create_network

            try:
                path = create_network(name, folder.library(), sizes=[int(s) for s in sizes or []],
                                      layer_structure=structure, activation_func=activation, weight_init=weight_init,
                                      add_layer_norm=layer_norm, use_dropout=use_dropout, dropout_structure=dropout,
                                      activate_output=activate_output, overwrite=overwrite, file_format=file_format)
            except TrainingError as exc:
                return gr.update(), f"<p class='hn-error'>{html.escape(str(exc))}</p>"
            names = folder.library().names()
            return (gr.update(choices=names, value=Path(path).stem),
                    f"Created: {html.escape(str(path))}")

        _click(create, do_create, [name, sizes, structure, activation, weight_init, layer_norm, use_dropout, dropout,
                                   activate_output, overwrite, file_format], [network, created])
        def do_refresh():
            folder.library().refresh()
            return gr.update(choices=folder.library().names())

        _click(refresh, do_refresh, [], [network])

        preview_fields = list(_txt2img)
        preview_inputs = [_txt2img[field] for field in preview_fields]

        def do_train(id_task, network, learn_rate, clip_mode, clip_value, batch_size, gradient_step, data_root,
                     log_directory, template, width, height, varsize, steps, image_every, save_every, use_weight,
                     from_txt2img, shuffle_tags, tag_drop_out, flip, latent, optimizer, seed, precision,
                     checkpointing, snr_gamma, *preview):
            values = dict(hypernetwork_name=network, learn_rate=learn_rate, clip_grad_mode=clip_mode,
                          clip_grad_value=clip_value, batch_size=batch_size, gradient_step=gradient_step,
                          data_root=data_root, log_directory=log_directory, template_filename=template,
                          training_width=width, training_height=height, varsize=varsize, steps=steps,
                          create_image_every=image_every, save_hypernetwork_every=save_every, use_weight=use_weight,
                          preview_from_txt2img=from_txt2img, shuffle_tags=shuffle_tags, tag_drop_out=tag_drop_out,
                          flip=flip, latent_sampling_method=latent, optimizer=optimizer,
                          seed=None if seed is None or seed < 0 else int(seed), mixed_precision=precision,
                          gradient_checkpointing=checkpointing, snr_gamma=snr_gamma or 0)
            if from_txt2img:
                values.update(zip(preview_fields, preview))
            try:
                info, result, previews = run(values)
            except TrainingError as exc:
                return "", gr.update(), f"<p class='hn-error'>{html.escape(str(exc))}</p>"
            files = "".join(f"<br><code>{html.escape(str(f))}</code>" for f in result.files[-5:])
            return info, _previews(previews) or gr.update(), f"<p>{html.escape(result.message)}</p>{files}"

        train_inputs = [dummy, network, learn_rate, clip_mode, clip_value, batch_size, gradient_step, data_root,
                        log_directory, template, training_width, training_height, varsize, steps, image_every,
                        save_every, use_weight, from_txt2img, shuffle_tags, tag_drop_out, flip, latent, optimizer,
                        seed, precision, checkpointing, snr_gamma, *preview_inputs]
        _click(train, call_queue.wrap_gradio_gpu_call(do_train, extra_outputs=[gr.update(), gr.update()]),
               train_inputs, [output, gallery, outcome], js="sdHypernetworksStartTraining")
        _click(interrupt, lambda: shared.state.interrupt(), [], [])
    # AUTOMATIC1111 and reForge keep their own Train tab (embeddings, their hypernetwork training): ours sits beside.
    return [(tab, "Train hypernetwork" if _host_train_tab["seen"] else "Train", "hypernetworks_train")]
