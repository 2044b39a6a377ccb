"""The training pictures: every image in the dataset folder, its caption, its size and its loss weight.

- Every file in the folder (not its sub-folders) with an image suffix is a picture; files of other kinds
  (captions ``NAME.txt``, notes) are skipped. A picture that cannot be read is an error naming it, before
  anything starts (AUTOMATIC1111 skipped it silently), and so is a folder with no pictures.
- Pictures are turned upright by their EXIF orientation (AUTOMATIC1111 1.10) and converted to RGB. Unless
  ``varsize``, each is resized bicubically to the training size, ignoring its aspect (as AUTOMATIC1111);
  with ``varsize`` ("do not resize") it keeps its size, cropped to a multiple of 8 around its centre, and
  pictures are batched by size.
- With ``use_weight``, the alpha channel, resized to the latent size as (width, height) (AUTOMATIC1111
  passed them swapped), becomes the loss weight: shifted to a minimum of 0 and scaled to a mean of 1; a
  picture without alpha weighs 1 everywhere.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .config import TrainingError
from .randomness import numpy_rng
from .templates import caption_of

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SIZE_STEP = 8  # training sizes are multiples of 8 pixels


@dataclasses.dataclass
class Picture:
    """One training picture, ready to encode.

    Args:
        path: the file.
        caption: its caption (from ``NAME.txt`` or the file name).
        pixels: ``(3, H, W)`` in [-1, 1]; dropped (None) once the latents are encoded.
        weight: the latent-sized loss weight, mean 1, or None without ``use_weight``.
    """

    path: Path
    caption: str
    pixels: torch.Tensor              # (3, H, W) in [-1, 1]
    weight: torch.Tensor | None       # latent-sized (H / f, W / f), mean 1; None when weights are off

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])


def _alpha_weight(image, width: int, height: int, factor: int) -> torch.Tensor:
    from PIL import Image

    size = (width // factor, height // factor)
    if "A" not in image.getbands():
        return torch.ones(size[1], size[0])
    alpha = np.asarray(image.getchannel("A").resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    alpha = alpha - alpha.min()
    mean = alpha.mean()
    if mean <= 0:
        return torch.ones(size[1], size[0])
    return torch.from_numpy(alpha / mean)


def _open(path: Path, width: int, height: int, varsize: bool, use_weight: bool, factor: int
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise TrainingError(f"{path}: the picture cannot be read ({type(exc).__name__}: {exc})") from None
    if varsize:
        w, h = image.size
        w8, h8 = w - w % SIZE_STEP, h - h % SIZE_STEP
        if w8 < SIZE_STEP or h8 < SIZE_STEP:
            raise TrainingError(f"{path}: the picture is {w}x{h}, too small to train on")
        left, top = (w - w8) // 2, (h - h8) // 2
        image = image.crop((left, top, left + w8, top + h8))
    else:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    weight = _alpha_weight(image.convert("RGBA") if "transparency" in image.info else image, *image.size, factor) \
        if use_weight else None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels = torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0
    return pixels, weight


def load_pictures(data_root, width: int, height: int, *, varsize: bool = False, use_weight: bool = False,
                  word_regex: str = "", join_string: str = " ", latent_factor: int = 8) -> list[Picture]:
    """Every picture in ``data_root`` with its caption (sorted by file name).

    Args:
        data_root: the dataset folder.
        width, height: the training size (ignored with ``varsize``); multiples of 8.
        varsize: keep each picture's size (cropped to a multiple of 8).
        use_weight: read the alpha channel as the loss weight.
        word_regex, join_string: AUTOMATIC1111's file-name caption settings.
        latent_factor: pixels per latent pixel (the VAE's scale factor: 8 on Stable Diffusion), for the weights.

    Returns:
        The :class:`Picture` s, sorted by file name.

    Raises:
        TrainingError: a missing or empty folder, or a picture that cannot be read, naming it.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise TrainingError(f"data_root {str(data_root)!r}: no such folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TrainingError(f"data_root {root}: the folder holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
    pictures = []
    for path in files:
        pixels, weight = _open(path, width, height, varsize, use_weight, latent_factor)
        pictures.append(Picture(path, caption_of(path, word_regex, join_string), pixels, weight))
    return pictures


def batch_plan(sizes: list[tuple[int, int]], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: picture indices grouped by size, shuffled by ``(seed, epoch)``.

    Each size bucket is shuffled and cut into batches of ``batch_size`` (a bucket's remainder is dropped
    unless the bucket is smaller than a batch: then it is one smaller batch), and the batches are shuffled.
    With one size this is AUTOMATIC1111's epoch: ``len // batch_size`` batches of a fresh permutation.

    Args:
        sizes: each picture's ``(width, height)``, by index.
        batch_size: pictures per batch.
        seed: the run's seed.
        epoch: the epoch, 0-based.

    Returns:
        The batches, each a list of picture indices.
    """
    rng = numpy_rng(seed, "epoch", epoch)
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        buckets.setdefault(size, []).append(index)
    batches = []
    for size in sorted(buckets):
        members = [buckets[size][i] for i in rng.permutation(len(buckets[size]))]
        if len(members) < batch_size:
            batches.append(members)
            continue
        batches.extend(members[i:i + batch_size] for i in range(0, len(members) - batch_size + 1, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
