"""The img2img tab: a picture to start from, or one to inpaint (a mask drawn on it, or uploaded beside it), the
prompt boxes and parameters of txt2img plus img2img's, the hypernetwork cards, Generate/Interrupt/Skip, gallery.

Its components are a :class:`~extension.ui.txt2img.PageUI` of their own (``tabname="img2img"``: ids start with
``img2img_``), sharing ``extras`` with the txt2img tab's, so scripts find both tabs' panels. A card click adds its
tag to this tab's prompt when the card is on this tab (``javascript/hypernetworks.js``). Generate runs
:func:`extension.img2img.img2img` through :meth:`AppState.generate`, in line with every other job.
"""
from __future__ import annotations

import time
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from .. import masking
from .state import AppState
from .txt2img import (GradioProgress, PageUI, build_extra_network_tabs, build_prompt_row, build_results,
                      build_sampling_rows, failed_outputs, generation_outputs, resolve_seed, wire_results)

# the input sub-tabs: what the picture and the mask come from
IMG2IMG, INPAINT, INPAINT_UPLOAD = "img2img", "inpaint", "inpaint upload"
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")


def sketch_mask(editor: dict | None) -> tuple[Any, Any]:
    """``(picture, mask)`` from the inpaint editor's value: the background, and white wherever a brush layer
    was painted (``None`` when nothing was)."""
    if not editor or editor.get("background") is None:
        return None, None
    background = editor["background"]
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        layer = layer.convert("RGBA")
        if layer.size != background.size:
            layer = layer.resize(background.size)
        painted |= np.asarray(layer)[..., 3] > 0
    if not painted.any():
        return background, None
    return background, Image.fromarray(painted.astype(np.uint8) * 255, mode="L")


def pictures(mode: str, image, editor, base, mask) -> tuple[Any, Any]:
    """``(init picture, mask or None)`` for the selected input sub-tab; ``ValueError`` saying what is missing."""
    if mode == INPAINT:
        image, mask = sketch_mask(editor)
        if image is None:
            raise ValueError("Inpaint: upload a picture, then paint over what should change.")
        if mask is None:
            raise ValueError("Inpaint: paint a mask over the part of the picture that should change.")
        return image, mask
    if mode == INPAINT_UPLOAD:
        if base is None or mask is None:
            raise ValueError("Inpaint upload: give the picture and its mask (white = change).")
        return base, mask
    if image is None:
        raise ValueError("img2img: upload a picture to start from.")
    return image, None


def make_request(values: dict, mode: str, image, editor, base, mask, *, resize_mode: int, denoising_strength: float,
                 mask_blur: int, mask_mode: int, inpainting_fill: int, inpaint_area: int, padding: int):
    """The :class:`~extension.img2img.Img2ImgRequest` for the tab's values (txt2img's in ``values``)."""
    from ..img2img import Img2ImgRequest

    init, mask = pictures(mode, image, editor, base, mask)
    return Img2ImgRequest(**values, init_images=[init], mask=mask, resize_mode=int(resize_mode),
                          denoising_strength=float(denoising_strength), mask_blur=int(mask_blur),
                          inpainting_mask_invert=int(mask_mode), inpainting_fill=int(inpainting_fill),
                          inpaint_full_res=bool(inpaint_area), inpaint_full_res_padding=int(padding))


def build_img2img_tab(ctx: AppState, page: PageUI, model_info: dict) -> PageUI:
    """Create the tab (inside its ``gr.Tab``) and wire its generation; returns its components."""
    ui = PageUI(tabname="img2img", extras=page.extras, checkpoint=page.checkpoint)
    ui.result = gr.State(None)
    ui.selected = gr.State(None)
    mode = gr.State(IMG2IMG)
    build_prompt_row(ctx, ui, "img2img")
    controls: dict[str, Any] = {}

    def img2img_rows():
        with gr.Row():
            controls["resize_mode"] = gr.Radio(list(masking.RESIZE_MODES), value=masking.RESIZE_MODES[0],
                                               type="index", label="Resize mode", elem_id="img2img_resize_mode")
        with gr.Row():
            controls["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                       elem_id="img2img_denoising_strength")

    with gr.Row(elem_id="img2img_main", equal_height=False):
        with gr.Column(scale=1, min_width=360, elem_id="img2img_left"):
            with gr.Tabs(elem_id="img2img_input_tabs"):
                with gr.Tab("img2img", id="img2img_img2img_tab", elem_id="img2img_img2img_tab") as tab_img2img:
                    image = gr.Image(type="pil", label="Picture to start from", elem_id="img2img_image",
                                     sources=["upload", "clipboard"], image_mode="RGBA", height=360)
                with gr.Tab("Inpaint", id="img2img_inpaint_tab", elem_id="img2img_inpaint_tab") as tab_inpaint:
                    editor = gr.ImageEditor(type="pil", label="Paint over what should change", elem_id="img2maskimg",
                                            sources=["upload", "clipboard"], layers=False, transforms=(), height=360,
                                            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                with gr.Tab("Inpaint upload", id="img2img_inpaint_upload_tab",
                            elem_id="img2img_inpaint_upload_tab") as tab_upload:
                    base = gr.Image(type="pil", label="Picture", elem_id="img_inpaint_base",
                                    sources=["upload", "clipboard"], image_mode="RGBA", height=300)
                    mask = gr.Image(type="pil", label="Mask (white = change)", elem_id="img_inpaint_mask",
                                    sources=["upload", "clipboard"], image_mode="RGBA", height=300)
            with gr.Group(elem_id="img2img_inpaint_controls"):
                with gr.Row():
                    controls["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur",
                                                      elem_id="img2img_mask_blur")
                    controls["mask_mode"] = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], type="index",
                                                     label="Mask mode", elem_id="img2img_mask_mode")
                with gr.Row():
                    controls["inpainting_fill"] = gr.Radio(list(masking.MASKED_CONTENT), type="index",
                                                           value=masking.MASKED_CONTENT[masking.ORIGINAL],
                                                           label="Masked content", elem_id="img2img_inpainting_fill")
                    controls["inpaint_area"] = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index",
                                                        label="Inpaint area", elem_id="img2img_inpaint_full_res")
                    controls["padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                    elem_id="img2img_inpaint_full_res_padding")
            with gr.Tabs(elem_id="img2img_extra_tabs"):
                with gr.Tab("Generation", id="img2img_generation", elem_id="img2img_generation_tab"):
                    random_seed, reuse_seed = build_sampling_rows(ui, "img2img", model_info, img2img_rows)
                build_extra_network_tabs(ctx, ui)
        with gr.Column(scale=1, min_width=320, elem_id="img2img_results"):
            build_results(ui, "img2img")

    for tab, name in ((tab_img2img, IMG2IMG), (tab_inpaint, INPAINT), (tab_upload, INPAINT_UPLOAD)):
        tab.select(lambda name=name: name, None, [mode], api_visibility="private", queue=False)
    names = list(controls)

    def generate(mode_value, image_value, editor_value, base_value, mask_value, prompt, negative_prompt, sampler,
                 scheduler, steps, cfg_scale, width, height, seed, batch_count, batch_size, clip_skip, *control_values,
                 progress=gr.Progress()):
        values = dict(prompt=prompt or "", negative_prompt=negative_prompt or "", sampler_name=sampler,
                      scheduler=scheduler, steps=int(steps), cfg_scale=float(cfg_scale), width=int(width),
                      height=int(height), seed=resolve_seed(seed), batch_size=int(batch_size),
                      n_iter=int(batch_count), clip_skip=int(clip_skip))
        started = time.monotonic()
        try:
            request = make_request(values, mode_value, image_value, editor_value, base_value, mask_value,
                                   **dict(zip(names, control_values)))
            generation = ctx.generate(request, GradioProgress(progress), source="ui")
        except Exception as exc:  # noqa: BLE001 - show the user what went wrong
            return failed_outputs(exc)
        return generation_outputs(generation, started)

    inputs = [mode, image, editor, base, mask, ui.prompt, ui.negative_prompt, ui.sampler, ui.scheduler, ui.steps,
              ui.cfg_scale, ui.width, ui.height, ui.seed, ui.batch_count, ui.batch_size, ui.clip_skip,
              *controls.values()]
    outputs = [ui.gallery, ui.infotext, ui.messages, ui.result, ui.selected]
    ui.generated = ui.generate.click(generate, inputs, outputs, api_name="img2img", concurrency_limit=1,
                                     concurrency_id="gpu", show_progress="full", show_progress_on=[ui.gallery])
    wire_results(ctx, ui, random_seed, reuse_seed)
    return ui


__all__ = ["build_img2img_tab", "make_request", "pictures", "sketch_mask"]
