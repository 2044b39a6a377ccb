"""The demo model's training pictures: one coloured shape on a plain background, drawn with Pillow.

Everything is deterministic from a seed: :func:`sample_pictures` draws the attributes (colour, shape,
background, position, size, rotation) with NumPy's PCG64, and :func:`draw` renders one picture at four
times its size and box-downsamples it, for smooth edges. ``outline=True`` draws the shape as a thick
outline instead of filled: the style the demo hypernetwork learns.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

from .vocabulary import BACKGROUNDS, COLOURS, caption, combinations

SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Picture:
    """What one training picture shows; positions and sizes are fractions of the picture's side."""

    colour: str
    shape: str
    background: str
    x: float
    y: float
    radius: float
    rotation: float
    outline: bool = False

    def caption(self, with_background: bool = True) -> str:
        return caption(self.colour, self.shape, self.background if with_background else None)


def sample_pictures(count: int, seed: int, held_out: bool = False, outline: bool = False) -> list[Picture]:
    """``count`` pictures over the trained combinations (``held_out=True``: the held-out ones instead)."""
    rng = np.random.default_rng(seed)
    choices = combinations(held_out=held_out)
    pictures = []
    for index in rng.integers(len(choices), size=count):
        colour, shape, background = choices[index]
        radius = float(rng.uniform(0.2, 0.36))
        margin = radius + 0.06
        pictures.append(Picture(
            colour=colour, shape=shape, background=background,
            x=float(rng.uniform(margin, 1 - margin)), y=float(rng.uniform(margin, 1 - margin)),
            radius=radius, rotation=float(rng.uniform(-20, 20)), outline=outline,
        ))
    return pictures


def _star_points(cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        angle = math.radians(rotation - 90 + 36 * i)
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def draw(picture: Picture, size: int) -> Image.Image:
    """Render ``picture`` as a ``size`` x ``size`` RGB image."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[picture.background])
    pen = ImageDraw.Draw(image)
    cx, cy, r = picture.x * big, picture.y * big, picture.radius * big
    colour = COLOURS[picture.colour]
    width = max(1, round(r * 0.3))
    fill, outline = (None, colour) if picture.outline else (colour, None)
    line = width if picture.outline else 1
    if picture.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=line)
    elif picture.shape == "square":
        pen.regular_polygon((cx, cy, r * 1.05), 4, rotation=picture.rotation, fill=fill, outline=outline,
                            width=line)
    elif picture.shape == "triangle":
        pen.regular_polygon((cx, cy + r * 0.15, r * 1.15), 3, rotation=picture.rotation, fill=fill,
                            outline=outline, width=line)
    elif picture.shape == "star":
        points = _star_points(cx, cy, r * 1.1, picture.rotation)
        if picture.outline:  # Pillow's wide polygon outline breaks at a star's inner corners
            pen.line(points + points[:2], fill=colour, width=round(width * 0.7), joint="curve")
        else:
            pen.polygon(points, fill=colour)
    else:
        raise ValueError(f"unknown shape {picture.shape!r}")
    return image.resize((size, size), Image.Resampling.BOX)


def _draw_chunk(args: tuple[list[Picture], int]) -> np.ndarray:
    pictures, size = args
    return np.stack([np.asarray(draw(picture, size)) for picture in pictures])


def render(pictures: list[Picture], size: int, workers: int = 1) -> np.ndarray:
    """All ``pictures`` as one ``uint8`` array ``(N, size, size, 3)``; ``workers > 1`` draws in processes."""
    if not pictures:
        return np.zeros((0, size, size, 3), np.uint8)
    if workers <= 1 or len(pictures) < 256:
        return _draw_chunk((pictures, size))
    step = math.ceil(len(pictures) / (workers * 4))
    chunks = [(pictures[i:i + step], size) for i in range(0, len(pictures), step)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(_draw_chunk, chunks)))


def grid(images: list[Image.Image], columns: int, scale: int = 1) -> Image.Image:
    """Paste equally sized images into a grid (scaled up by ``scale`` with nearest neighbour)."""
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * width * scale, rows * height * scale), (255, 255, 255))
    for i, image in enumerate(images):
        tile = image.resize((width * scale, height * scale), Image.Resampling.NEAREST) if scale > 1 else image
        sheet.paste(tile, ((i % columns) * width * scale, (i // columns) * height * scale))
    return sheet


def write_folder(folder, count: int = 100, seed: int = 1, outline: bool = True, size: int = 64) -> list[Picture]:
    """A training folder for the Train tab: ``NNNN.png`` pictures with their captions in ``NNNN.txt``
    (``outline=True``: the demo hypernetwork's style). Returns what was drawn."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pictures = sample_pictures(count, seed, outline=outline)
    for index, picture in enumerate(pictures):
        draw(picture, size).save(folder / f"{index:04d}.png")
        (folder / f"{index:04d}.txt").write_text(picture.caption() + "\n", encoding="utf-8")
    return pictures


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m extension.demo.dataset",
                                     description="Write a folder of demo pictures with captions, for training.")
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--filled", action="store_true", help="filled shapes (default: outlines)")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    write_folder(args.folder, args.count, args.seed, outline=not args.filled, size=args.size)
    print(f"wrote {args.count} pictures to {args.folder}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
