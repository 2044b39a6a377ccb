"""The demo hypernetwork's card: a preview image and a short description beside its file.

``models/hypernetworks/demo.safetensors`` gets ``demo.preview.png`` (example prompts drawn by the demo
model with the network at 1.0) and ``demo.txt``, the files the hypernetwork browser shows.
"""
from __future__ import annotations

from pathlib import Path

from ..fileio import atomic_write_text
from ..images import save_png_as
from .dataset import grid
from .evaluate import generate
from ..hypernetwork.attention import hypernetworks_applied

DESCRIPTION = (
    "Demo style for the built-in demo model: draws its shapes as thick outlines instead of filled "
    "(clean rings and hollow squares; triangles and stars come out as rough hollow scribbles). "
    "Made for the demo model only (attention widths 48, 64 and 80). "
    "Try \"a red circle on a white background <hypernet:demo:1>\"; at lower multipliers most shapes stay filled."
)
PREVIEW_PROMPTS = (
    "a red circle on a white background",
    "an orange square on a blue background",
    "a blue circle on a black background",
    "a yellow star on a black background",
)


def card_paths(network_path) -> tuple[Path, Path]:
    """``(preview, description)`` paths beside a network file."""
    network_path = Path(network_path)
    stem = network_path.with_suffix("")
    return stem.with_name(stem.name + ".preview.png"), stem.with_name(stem.name + ".txt")


def write_card(pipe, network, network_path, steps: int = 20, scale: int = 2) -> tuple[Path, Path]:
    """Draw the preview (4 prompts with the network at 1.0) and write the description."""
    preview, description = card_paths(network_path)
    prompts = list(PREVIEW_PROMPTS)
    with hypernetworks_applied(pipe, [(network, 1.0)]):
        images = generate(pipe, prompts, list(range(len(prompts))), steps)
    save_png_as(grid(images, 2, scale), preview)  # both beside the network file a server may be listing
    atomic_write_text(description, DESCRIPTION + "\n")
    return preview, description
