"""Does the demo model draw what it is asked? Read the colours back from generated pictures and count.

A sample is right when both hold:
- the background: the median colour of the picture's border (outer 3 pixels) is closest to the asked
  background colour (among the backgrounds the model knows);
- the shape: among the pixels that differ clearly from that border colour, the most saturated quarter has
  a mean colour closest to the asked shape colour (among the shape colours). A picture with almost no
  such pixels (a blank background) counts as wrong.

The shape is read too, and reported apart (``shape_right``): the filled template (circle, square,
triangle, star) that, centred on the shape's centroid with the same area, overlaps it best.

``looks_outlined`` tells a shape drawn as an outline (the demo hypernetwork's style) from a filled one:
the pixels around the shape's centroid are background. Shared by the test suite and the held-out report
(``python -m extension.demo.evaluate``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import architecture
from .dataset import Picture, draw
from .vocabulary import BACKGROUNDS, COLOURS, EXAMPLE_PROMPTS, SHAPES, caption, combinations

BORDER = 3
SHAPE_DISTANCE = 80.0   # RGB distance from the background above which a pixel belongs to the shape
MIN_SHAPE_PIXELS = 12


@dataclasses.dataclass(frozen=True)
class Case:
    colour: str
    shape: str
    background: str
    seed: int

    @property
    def prompt(self) -> str:
        return caption(self.colour, self.shape, self.background)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a picture shows, read back: the nearest background and shape colour names (``None``: no shape)."""

    background: str
    colour: str | None
    outlined: bool | None
    shape: str | None = None


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(rgb - np.asarray(palette[name], float)) for name in names]
    return names[int(np.argmin(distances))]


def _shape_mask(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frame = np.concatenate([pixels[:BORDER].reshape(-1, 3), pixels[-BORDER:].reshape(-1, 3),
                            pixels[:, :BORDER].reshape(-1, 3), pixels[:, -BORDER:].reshape(-1, 3)])
    border = np.median(frame, axis=0)
    return border, np.linalg.norm(pixels - border, axis=-1) > SHAPE_DISTANCE


def looks_outlined(mask: np.ndarray) -> bool:
    """True when most of the 5x5 pixels around the mask's centroid lie outside it (a hollow shape)."""
    ys, xs = np.nonzero(mask)
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    window = mask[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3]
    return bool(window.mean() < 0.5)


def _template(shape: str, x: float, y: float, radius: float, rotation: float, size: int) -> np.ndarray:
    background, colour = next(iter(BACKGROUNDS)), next(iter(COLOURS))
    picture = Picture(colour, shape, background, x, y, radius, rotation)
    pixels = np.asarray(draw(picture, size), dtype=float)
    return np.linalg.norm(pixels - np.asarray(BACKGROUNDS[background], float), axis=-1) > SHAPE_DISTANCE


def _template_area(shape: str, size: int) -> float:
    """Pixels a shape of radius 0.3 covers (area grows with the square of the radius)."""
    return float(_template(shape, 0.5, 0.5, 0.3, 0.0, size).sum())


def nearest_shape(mask: np.ndarray) -> str:
    """The shape whose filled template, centred on the mask's centroid with the same area, overlaps it best."""
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx, cy, area = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size, float(mask.sum())
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        radius = 0.3 * math.sqrt(area / _template_area(shape, size))
        centroid_shift = _template(shape, 0.5, 0.5, radius, 0.0, size).nonzero()[0].mean() / size + 0.5 / size - 0.5
        for rotation in (-20.0, -10.0, 0.0, 10.0, 20.0):
            template = _template(shape, cx, cy - centroid_shift, radius, rotation, size)
            iou = (template & mask).sum() / max(1, (template | mask).sum())
            if iou > best_iou:
                best, best_iou = shape, iou
    return best


def read_picture(image: Image.Image) -> Reading:
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    border, mask = _shape_mask(pixels)
    background = _nearest(border, BACKGROUNDS)
    if mask.sum() < MIN_SHAPE_PIXELS:
        return Reading(background, None, None)
    candidates = pixels[mask]
    saturation = (candidates.max(axis=1) - candidates.min(axis=1)) / np.maximum(candidates.max(axis=1), 1.0)
    top = candidates[saturation >= np.quantile(saturation, 0.75)]
    outlined = looks_outlined(mask)
    return Reading(background, _nearest(top.mean(axis=0), COLOURS), outlined, None if outlined else nearest_shape(mask))


def cases(count: int, seed: int, held_out: bool | None) -> list[Case]:
    """``count`` cases drawn evenly over the chosen combinations (see :func:`vocabulary.combinations`)."""
    rng = np.random.default_rng(seed)
    pool = combinations(held_out=held_out)
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))])[:count]
    return [Case(*pool[i], seed=int(rng.integers(2**31))) for i in order]


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int = 20, guidance: float = 5.0,
             batch_size: int = 24) -> list[Image.Image]:
    """One picture per ``(prompt, seed)``, batched; the seed drives a CPU generator (device independent)."""
    images = []
    for start in range(0, len(prompts), batch_size):
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[start:start + batch_size]]
        latents = torch.stack([torch.randn((4, architecture.LATENT_SIZE, architecture.LATENT_SIZE), generator=g)
                               for g in generators]).to(pipe.device, pipe.unet.dtype)
        result = pipe(prompts[start:start + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                      height=architecture.IMAGE_SIZE, width=architecture.IMAGE_SIZE, latents=latents,
                      generator=generators, output_type="pil")
        images.extend(result.images)
    return images


@dataclasses.dataclass
class Score:
    total: int = 0
    right: int = 0
    background_right: int = 0
    colour_right: int = 0
    shape_right: int = 0
    blank: int = 0
    outlined: int = 0
    wrong: list = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.right / max(1, self.total)

    def summary(self) -> dict:
        return {"right": self.right, "total": self.total, "rate": round(self.rate, 3),
                "background_right": self.background_right, "colour_right": self.colour_right,
                "shape_right": self.shape_right,
                "blank": self.blank, "outlined": self.outlined}


def score(cases_: list[Case], images: list[Image.Image]) -> Score:
    result = Score()
    for case, image in zip(cases_, images):
        reading = read_picture(image)
        result.total += 1
        result.background_right += reading.background == case.background
        result.colour_right += reading.colour == case.colour
        result.shape_right += reading.shape == case.shape
        result.blank += reading.colour is None
        result.outlined += bool(reading.outlined)
        if reading.background == case.background and reading.colour == case.colour:
            result.right += 1
        else:
            result.wrong.append((case.prompt, case.seed, reading))
    return result


def prompt_following(pipe, cases_: list[Case], steps: int = 20, guidance: float = 5.0,
                     batch_size: int = 24) -> tuple[Score, list[Image.Image]]:
    images = generate(pipe, [c.prompt for c in cases_], [c.seed for c in cases_], steps, guidance, batch_size)
    return score(cases_, images), images


def report(pipe, samples: int = 96, seed: int = 1234, steps: int = 20, guidance: float = 5.0,
           hypernetwork=None) -> dict:
    """Figures for trained and held-out combinations (and, given a hypernetwork, the same with it at 1.0)."""
    from ..hypernetwork.attention import hypernetworks_applied

    figures = {"steps": steps, "guidance": guidance, "sampler": type(pipe.scheduler).__name__}
    for name, held_out in (("trained", False), ("held_out", True)):
        chosen = cases(samples, seed, held_out)
        figures[name] = prompt_following(pipe, chosen, steps, guidance)[0].summary()
        if hypernetwork is not None:
            with hypernetworks_applied(pipe, [(hypernetwork, 1.0)]):
                figures[name + "_with_hypernetwork"] = prompt_following(pipe, chosen, steps, guidance)[0].summary()
    return figures


def main(argv: list[str]) -> int:
    from ..hypernetwork import load_hypernetwork
    from .dataset import grid
    from ..hypernetwork.attention import hypernetworks_applied
    from .pretrained import HYPERNETWORK_PATH, MODEL_DIR, load_pipeline

    parser = argparse.ArgumentParser(description="Measure how often the demo model draws what it is asked.")
    parser.add_argument("--model", default=str(MODEL_DIR))
    parser.add_argument("--hypernetwork", default=None, help=f"also measure with this network (e.g. {HYPERNETWORK_PATH})")
    parser.add_argument("--samples", type=int, default=96, help="per split (trained, held out)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", default=None, help="save a PNG grid of the example prompts here")
    args = parser.parse_args(argv)
    from ..quiet_warnings import quiet_image_processor_fallback  # a command line like launch.py's modes: the same quiet

    quiet_image_processor_fallback()
    pipe = load_pipeline(args.model, device=args.device)
    network = load_hypernetwork(args.hypernetwork).to(args.device) if args.hypernetwork else None
    figures = report(pipe, args.samples, steps=args.steps, guidance=args.guidance, hypernetwork=network)
    print(json.dumps(figures, indent=2))
    if args.grid:
        prompts = [p for p in EXAMPLE_PROMPTS for _ in range(4)]
        seeds = list(range(len(prompts)))
        images = generate(pipe, prompts, seeds, args.steps, args.guidance)
        if network is not None:
            with hypernetworks_applied(pipe, [(network, 1.0)]):
                images += generate(pipe, prompts, seeds, args.steps, args.guidance)
        grid(images, 8, 2).save(Path(args.grid))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
