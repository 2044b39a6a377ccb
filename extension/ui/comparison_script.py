"""Script "Hypernetwork strength comparison": the same seed at several multipliers, as one labelled grid.

What users do by hand to judge a hypernetwork (seed fixed, ``<hypernet:NAME:0>``, ``:0.5``, ``:1``, ...):
pick hypernetworks and multipliers in the txt2img tab's Script dropdown and press Generate. Each row is a
hypernetwork, each column a multiplier; every other part of the prompt and every parameter stays the same,
and one seed is used for every cell. The grid is saved in ``OUTDIR/txt2img-grids`` with its infotext (the
first cell's, plus the hypernetworks and multipliers compared) and shown first in the gallery, followed by
the cells (each saved with its own infotext, as any generation).
"""
from __future__ import annotations

import dataclasses
import datetime
import logging

import gradio as gr

from extension.images import save_png
from extension.infotext import quote
from extension.prompt.tags import hypernetwork_requests, parse_prompt
from extension.ui.callbacks import Script
from extension.ui.comparison import draw_grid, multiplier_label, parse_multipliers, plan_prompts
from extension.processing import Txt2ImgResult
from extension.ui.txt2img import GradioProgress

log = logging.getLogger(__name__)

TITLE = "Hypernetwork strength comparison"
MAX_CELLS = 100
DEFAULT_MULTIPLIERS = "0, 0.5, 1, 1.5"


def save_grid(ctx, grid, infotext: str, seed: int) -> str:
    """The grid as ``OUTDIR/txt2img-grids/NNNNN-<seed>-hypernet-comparison-<time>.png``, with its infotext."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(save_png(grid, ctx.outdir / "txt2img-grids", f"{seed}-hypernet-comparison-{stamp}", infotext))


def network_list(ctx, names) -> str:
    """``"name: shorthash, ..."`` of the compared networks (the grid's infotext names every one)."""
    parts = []
    for name in names:
        entry = ctx.library.get(name)
        try:
            parts.append(f"{name}: {ctx.library.sha256(entry)[:10]}" if entry is not None else name)
        except OSError:
            parts.append(name)
    return ", ".join(parts)


class StrengthComparison(Script):
    def title(self) -> str:
        return TITLE

    def ui(self, ctx, ui):
        names = ctx.library.names()
        with gr.Row():
            networks = gr.Dropdown(names, value=[], multiselect=True, label="Hypernetworks (rows)",
                                   info="none chosen: the hypernetworks tagged in the prompt",
                                   elem_id=self.elem_id("networks"), scale=3)
            refresh = gr.Button("↻", elem_id=self.elem_id("refresh"), scale=0, min_width=48, elem_classes=["tool"])
        multipliers = gr.Textbox(DEFAULT_MULTIPLIERS, label="Multipliers (columns)",
                                 info="comma-separated, or a range like 0-2 (+0.25) or 0-2 [5]",
                                 elem_id=self.elem_id("multipliers"))

        def refresh_names(current):
            choices = ctx.library.names()
            return gr.update(choices=choices, value=[n for n in (current or []) if n in choices])

        refresh.click(refresh_names, [networks], [networks], api_visibility="private", queue=False)
        ui.extras["comparison_networks"] = (networks, refresh_names)
        return [networks, multipliers]

    def api_args(self, ctx) -> list[dict]:
        return [{"label": "Hypernetworks (rows)", "value": [], "choices": ctx.library.names()},
                {"label": "Multipliers (columns)", "value": DEFAULT_MULTIPLIERS}]

    def run(self, ctx, request, names, multipliers_text, progress=None):
        prompt = getattr(request, "prompt", "")
        multipliers = parse_multipliers(multipliers_text)
        names = [n for n in (names or []) if n]
        if not names:
            names = [r.name for r in hypernetwork_requests(parse_prompt(prompt)[1])[0]]
            names = list(dict.fromkeys(names))
        if not names:
            raise ValueError("choose the hypernetworks to compare (or tag them in the prompt)")
        unknown = [n for n in names if ctx.library.get(n) is None]
        if unknown:
            raise ValueError(f"not in the hypernetworks folder: {', '.join(unknown)}")
        cells = plan_prompts(prompt, names, multipliers)
        if len(cells) > MAX_CELLS:
            raise ValueError(f"{len(cells)} images is too many for one grid (at most {MAX_CELLS})")
        job = ctx.jobs.current  # the host began the job; it has this many images
        if job is not None:
            job.job_count = len(cells)
        tracker = GradioProgress(progress, jobs=len(cells))
        images = [[None] * len(multipliers) for _ in names]
        out = Txt2ImgResult(request=request)
        messages: list[str] = []
        for i, cell in enumerate(cells):
            if job is not None and job.interrupted.is_set():
                out.interrupted = True
                break
            tracker.job = i
            cell_request = dataclasses.replace(request, prompt=cell.prompt, batch_size=1, n_iter=1)
            generation = ctx.generate(cell_request, tracker, job_no=i)
            messages.extend(m for m in generation.messages if m not in messages)
            if not generation.images:
                continue
            images[cell.row][cell.column] = generation.images[0]
            out.images.append(generation.images[0])
            out.infotexts.append(generation.infotexts[0] if generation.infotexts else "")
            out.seeds.append(generation.seeds[0] if generation.seeds else getattr(request, "seed", -1))
            if generation.paths:
                out.paths.append(generation.paths[0])
            if generation.interrupted:
                out.interrupted = True
                break
        out.messages = messages
        if not out.images:
            return out
        grid = draw_grid(images, names, [f"× {multiplier_label(m)}" for m in multipliers])
        seed = out.seeds[0]
        base = out.infotexts[0] or prompt
        grid_info = (f"{base}, Script: {quote(TITLE)}, Hypernetworks: {quote(network_list(ctx, names))}, "
                     f"Multipliers: {quote(', '.join(multiplier_label(m) for m in multipliers))}")
        try:
            grid_path = save_grid(ctx, grid, grid_info, seed)
        except OSError as exc:
            grid_path = None
            out.messages.append(f"The grid could not be saved: {exc}")
        out.images.insert(0, grid)
        out.infotexts.insert(0, grid_info)
        out.seeds.insert(0, seed)
        if grid_path and len(out.paths) == len(out.images) - 1:
            out.paths.insert(0, grid_path)
        else:
            out.paths = []
        return out


def ui_loaded(ctx, ui, demo):
    found = ui.extras.get("comparison_networks")
    if found:
        networks, refresh_names = found
        demo.load(refresh_names, [networks], [networks], api_visibility="private", queue=False)


def register(callbacks) -> None:
    callbacks.add_txt2img_script(StrengthComparison())
    callbacks.on_ui_loaded(ui_loaded)
