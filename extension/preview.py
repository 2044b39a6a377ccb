"""Live previews of a generation: a cheap picture of the latents a sampling step left.

AUTOMATIC1111's "Approx cheap" preview multiplies the latent channels by a fixed 4x3 matrix fitted to the SD
VAE. Here the matrix is fitted to whatever VAE the model has (the demo model's too): one small synthetic
picture of coloured blocks is encoded, and the least-squares map from each latent pixel (plus a constant) to
the mean colour of the block it covers is the preview's decoder. It costs one encode of a 16x16-latent
picture, made on first use by the :class:`LatentPreview` of one generation (nothing is kept between
generations or at module level), and each preview is then a matrix product.

The latents are those of the sampler's current step (noisy early on, as AUTOMATIC1111's previews of the
noisy latents are).
"""
from __future__ import annotations

import threading

import torch

FIT_CELLS = 16  # the fitting picture is FIT_CELLS x FIT_CELLS blocks of one colour, one latent pixel each


def fit_latent_to_rgb(vae, factor: int, seed: int = 0) -> torch.Tensor:
    """The ``(channels + 1, 3)`` least-squares map from scaled latents (and 1) to RGB in [-1, 1] for ``vae``."""
    generator = torch.Generator("cpu").manual_seed(seed)
    colours = torch.rand(1, 3, FIT_CELLS, FIT_CELLS, generator=generator) * 2 - 1
    picture = torch.nn.functional.interpolate(colours, scale_factor=factor, mode="nearest")
    parameter = next(vae.parameters())
    with torch.inference_mode():
        encoded = vae.encode(picture.to(device=parameter.device, dtype=parameter.dtype)).latent_dist.mean
    latents = scale_latents(vae, encoded.float().cpu())
    size = latents.shape[-1]
    target = torch.nn.functional.adaptive_avg_pool2d(picture, size)  # the colour each latent pixel covers
    x = torch.cat([latents[0].flatten(1), torch.ones(1, size * size)]).T  # (pixels, channels + 1)
    y = target[0].flatten(1).T  # (pixels, 3)
    return torch.linalg.lstsq(x, y).solution


def scale_latents(vae, encoded: torch.Tensor) -> torch.Tensor:
    """VAE latents as the pipeline's sampling loop holds them (shifted, then scaled by the VAE config)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = getattr(vae.config, "scaling_factor", None) or 1.0
    return (encoded - shift) * scale


class LatentPreview:
    """The latest latents of one generation and how to picture them; :meth:`update` from the step callback,
    :meth:`image` from whoever asks (another thread). Thread-safe."""

    def __init__(self, pipe, width: int, height: int):
        self.pipe, self.width, self.height = pipe, width, height
        self._lock = threading.Lock()
        self._latents: torch.Tensor | None = None
        self._map: torch.Tensor | None = None

    def update(self, latents: torch.Tensor) -> None:
        """Remember the first image's latents of the step just made (a reference; nothing is copied here)."""
        with self._lock:
            self._latents = latents[0] if latents.dim() == 4 else latents

    def image(self):
        """The latest latents as a PIL image of the generation's size, or None before the first step."""
        from PIL import Image

        with self._lock:
            latents = self._latents
        if latents is None:
            return None
        latents = latents.detach().float().cpu()
        with self._lock:
            if self._map is None or self._map.shape[0] != latents.shape[0] + 1:
                self._map = fit_latent_to_rgb(self.pipe.vae, int(self.pipe.vae_scale_factor))
            matrix = self._map
        channels, h, w = latents.shape
        rgb = torch.cat([latents.flatten(1), torch.ones(1, h * w)]).T @ matrix  # (pixels, 3)
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(h, w, 3).numpy()
        return Image.fromarray(pixels, "RGB").resize((self.width, self.height), Image.Resampling.BILINEAR)
