"""img2img and inpainting the AUTOMATIC1111 way, on the txt2img machinery (:func:`extension.processing.sample`).

What differs from txt2img, all in :class:`Img2ImgMode`:

1. the pictures: each init image flattened on white and resized to the request's size (``resize_mode``, A1111's
   four modes); with a mask (white = inpaint), the mask thresholded, inverted (``inpainting_mask_invert``),
   blurred (``mask_blur``, OpenCV's Gaussian) and, for "Only masked" (``inpaint_full_res``), the masked box plus
   ``inpaint_full_res_padding`` cropped and generated at the request's size (:mod:`extension.masking`);
2. the start: the pictures encoded by the VAE (its mean), the "masked content" (``inpainting_fill``: fill,
   original, latent noise, latent nothing) applied, and each image's noise from its own CPU generator seeded
   ``seed + i`` (as txt2img), times ``initial_noise_multiplier``, added at the schedule's step A1111 starts
   from: of ``steps``, the last ``int(min(denoising_strength, 0.999) * steps) + 1`` run;
3. with a mask, between steps the kept part of the latents is put back to the picture noised to the next step
   (equal to A1111's blend of the denoised latents for its deterministic samplers), and at the end to the
   picture itself; once decoded, the original is laid over the kept part through the blurred mask and an
   "Only masked" result is pasted back into the whole picture.

A normal 4-channel UNet does the inpainting (A1111's way with a non-inpainting model). Prompt editing and tags,
hypernetworks per call, seeds, progress, interrupt, skip, previews and infotexts are txt2img's; the infotext
adds A1111's ``Denoising strength``, ``Mask blur``, ``Mask mode``, ``Inpaint area``, ``Masked area padding``,
``Masked content`` and ``Noise multiplier`` where they apply. Images are saved under
``<outdir>/img2img-images/YYYY-MM-DD/``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from . import masking
from .processing import (ProgressCallback, Txt2ImgMode, Txt2ImgRequest, Txt2ImgResult, initial_noise,
                         pipeline_view, sample, validate)

OUTPUT_SUBDIR = "img2img-images"
MAX_STRENGTH = 0.999  # A1111 never starts from pure noise: at most this share of the schedule runs


@dataclasses.dataclass
class Img2ImgRequest(Txt2ImgRequest):
    """txt2img's settings plus A1111's img2img ones (its API's defaults). ``width``/``height`` are the size
    generated at; ``init_images`` and ``mask`` are PIL images (white in the mask: inpaint)."""

    init_images: list = dataclasses.field(default_factory=list)
    mask: Any = None
    denoising_strength: float = 0.75
    resize_mode: int = 0  # masking.RESIZE_MODES
    mask_blur: int = 4
    inpainting_fill: int = 0  # masking.MASKED_CONTENT (the UI's default is 1, "original")
    inpaint_full_res: bool = True  # "Inpaint area": True "Only masked", False "Whole picture"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0  # 1: inpaint what is not masked
    initial_noise_multiplier: float = 1.0


def validate_img2img(request: Img2ImgRequest) -> tuple[Img2ImgRequest, list[str]]:
    """txt2img's checks, then the pictures' (``ValueError`` naming the field): at least one init image, a mask of
    the first image's size, numbers in A1111's ranges; several init images make a batch of that many."""
    request, messages = validate(request)
    images = list(request.init_images or [])
    if not images:
        raise ValueError("init_images: give at least one picture")
    if not all(isinstance(image, Image.Image) for image in images):
        raise ValueError("init_images: every entry must be a picture")
    if request.mask is not None:
        if not isinstance(request.mask, Image.Image):
            raise ValueError("mask: must be a picture")
        if request.mask.size != images[0].size:
            raise ValueError(f"mask: its size {request.mask.width}x{request.mask.height} differs from the init "
                             f"image's {images[0].width}x{images[0].height}")
    strength = float(request.denoising_strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"denoising_strength must be between 0 and 1, got {strength:g}")
    for field, choices in (("resize_mode", masking.RESIZE_MODES), ("inpainting_fill", masking.MASKED_CONTENT)):
        value = int(getattr(request, field))
        if not 0 <= value < len(choices):
            raise ValueError(f"{field} must be one of 0..{len(choices) - 1} "
                             f"({', '.join(f'{i}: {name}' for i, name in enumerate(choices))}), got {value}")
    for field in ("mask_blur", "inpaint_full_res_padding"):
        if int(getattr(request, field)) < 0:
            raise ValueError(f"{field} must be 0 or more, got {getattr(request, field)}")
    multiplier = float(request.initial_noise_multiplier)
    if not 0.0 <= multiplier <= 10.0:
        raise ValueError(f"initial_noise_multiplier must be between 0 and 10, got {multiplier:g}")
    batch_size = request.batch_size
    if len(images) > 1:  # A1111: the pictures are the batch
        if len(images) > batch_size:
            raise ValueError(f"init_images: {len(images)} pictures for a batch size of {batch_size}; give at most "
                             f"batch_size pictures, or one")
        batch_size = len(images)
    return dataclasses.replace(request, init_images=images, denoising_strength=strength, batch_size=batch_size,
                               resize_mode=int(request.resize_mode), mask_blur=int(request.mask_blur),
                               inpainting_fill=int(request.inpainting_fill),
                               inpaint_full_res=bool(request.inpaint_full_res),
                               inpaint_full_res_padding=int(request.inpaint_full_res_padding),
                               inpainting_mask_invert=int(request.inpainting_mask_invert),
                               initial_noise_multiplier=multiplier), messages


def steps_run(steps: int, denoising_strength: float) -> int:
    """The sampling steps A1111 runs (without "img2img_fix_steps"): ``int(min(strength, 0.999) * steps) + 1``."""
    return int(min(denoising_strength, MAX_STRENGTH) * steps) + 1


@dataclasses.dataclass
class PreparedPictures:
    """The request's pictures as the sampler starts from them (A1111's ``init``)."""

    pictures: list  # what is encoded, one per image of a batch (one picture: repeated)
    latent_mask: Image.Image | None  # white = inpaint, at the generated size (or the picture's, latent upscale)
    overlays: list | None  # the kept original of each picture, to lay over the result
    paste_to: tuple[int, int, int, int] | None  # "Only masked": where the result goes back (x, y, w, h)
    extra: dict  # infotext fields


def prepare_pictures(request: Img2ImgRequest) -> PreparedPictures:
    """Resize, mask, crop and fill as A1111's ``StableDiffusionProcessingImg2Img.init`` does."""
    width, height, mode = request.width, request.height, request.resize_mode
    extra: dict[str, Any] = {"Denoising strength": request.denoising_strength}
    mask = overlay_mask = crop = paste_to = None
    if request.mask is not None:
        mask = masking.binary_mask(request.mask)
        if request.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
            extra["Mask mode"] = "Inpaint not masked"
        if request.mask_blur > 0:
            mask = masking.gaussian_blur(mask, request.mask_blur)
            extra["Mask blur"] = request.mask_blur
        if request.inpaint_full_res:
            overlay_mask = mask
            crop = masking.crop_region(mask, request.inpaint_full_res_padding)
            crop = masking.expand_crop_region(crop, width, height, mask.width, mask.height)
            mask = masking.resize_image(2, mask.crop(crop), width, height).convert("L")
            paste_to = (crop[0], crop[1], crop[2] - crop[0], crop[3] - crop[1])
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = request.inpaint_full_res_padding
        else:
            # the latent upscale stretches the latents: its mask is stretched too (A1111 fills it, and fails)
            mask = masking.resize_image(0 if mode == masking.LATENT_UPSCALE else mode, mask, width, height).convert("L")
            overlay_mask = Image.fromarray(np.clip(np.asarray(mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8))
    pictures, overlays = [], [] if mask is not None else None
    for init_image in request.init_images:
        image = masking.flatten(init_image)
        if crop is None and mode != masking.LATENT_UPSCALE:
            image = masking.resize_image(mode, image, width, height)
        if mask is not None:
            shown = image if crop is not None or mode != masking.LATENT_UPSCALE else image.resize((width, height))
            overlays.append(masking.overlay(shown, overlay_mask))
        if crop is not None:
            image = masking.resize_image(2, image.crop(crop), width, height)
        if mask is not None and request.inpainting_fill == masking.FILL:
            image = masking.fill(image, mask if mask.size == image.size else mask.resize(image.size))
        pictures.append(image)
    if mask is not None and request.inpainting_fill != masking.ORIGINAL:
        extra["Masked content"] = masking.MASKED_CONTENT[request.inpainting_fill]
    if request.initial_noise_multiplier != 1.0:
        extra["Noise multiplier"] = request.initial_noise_multiplier
    return PreparedPictures(pictures, mask, overlays, paste_to, extra)


def img2img_pipeline_class(pipe):
    """diffusers' img2img pipeline for ``pipe``'s family (SDXL's or SD 1.x/2.x's)."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    return StableDiffusionXLImg2ImgPipeline if "text_encoder_2" in pipe.components else StableDiffusionImg2ImgPipeline


def encode_pictures(vae, pictures: list) -> torch.Tensor:
    """The pictures' latents: the VAE encoder's mean, scaled (fp16 VAEs that ask for it run in fp32, as
    diffusers' own SDXL pipelines do)."""
    batch = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32).transpose(2, 0, 1) / 255 for p in pictures]))
    dtype = vae.dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        with torch.no_grad():
            encoded = vae.encode((batch * 2 - 1).to(device=vae.device, dtype=vae.dtype)).latent_dist.mean
    finally:
        if upcast:
            vae.to(dtype=dtype)
    return encoded * vae.config.scaling_factor


class Img2ImgMode(Txt2ImgMode):
    """img2img's part of :func:`extension.processing.sample` (see the module docstring)."""

    subdir = OUTPUT_SUBDIR

    def __init__(self, request: Img2ImgRequest, prepared: PreparedPictures):
        self.request = request
        self.prepared = prepared
        self.latents = None  # the pictures' latents, encoded at the first batch
        self.batch: dict[str, torch.Tensor] = {}  # this batch's start, noise and masks

    def steps_run(self, request) -> int:
        return steps_run(request.steps, request.denoising_strength)

    def extra_params(self) -> dict:
        return dict(self.prepared.extra)

    def pipeline(self, pipe, scheduler):
        return pipeline_view(pipe, scheduler, cls=img2img_pipeline_class(pipe))

    def batch_kwargs(self, view, request, batch_index: int, seeds: list[int]) -> dict:
        unet = view.unet
        if self.latents is None:
            self.latents = encode_pictures(view.vae, self.prepared.pictures)
            if request.resize_mode == masking.LATENT_UPSCALE:
                factor = view.vae_scale_factor
                self.latents = torch.nn.functional.interpolate(
                    self.latents, size=(request.height // factor, request.width // factor), mode="bilinear")
        start = self.latents.to(device=unet.device, dtype=unet.dtype)
        if start.shape[0] == 1:
            start = start.repeat(len(seeds), 1, 1, 1)
        noise, generators = initial_noise(view, seeds, request.width, request.height)
        noise = noise.to(device=unet.device, dtype=unet.dtype)
        self.batch = {"start": start, "noise": noise}
        if self.prepared.latent_mask is not None:
            size = (start.shape[3], start.shape[2])
            inpaint = np.around(np.asarray(self.prepared.latent_mask.convert("RGB").resize(size),
                                           dtype=np.float32)[..., 0] / 255)
            inpaint = torch.from_numpy(inpaint)[None, None].to(device=unet.device, dtype=unet.dtype)
            if request.inpainting_fill == masking.LATENT_NOISE:
                start = start * (1 - inpaint) + noise * inpaint
            elif request.inpainting_fill == masking.LATENT_NOTHING:
                start = start * (1 - inpaint)
            self.batch.update(start=start, inpaint=inpaint)
        noise = noise * request.initial_noise_multiplier
        run = steps_run(request.steps, request.denoising_strength)

        def prepare_latents(image, timestep, *args, **kwargs):  # the pipeline's own would encode and draw again
            return view.scheduler.add_noise(start, noise, timestep[:1])

        view.prepare_latents = prepare_latents  # this call's view only
        # the pipeline runs int(steps * strength) steps: ask for exactly A1111's
        return dict(image=start, strength=min(1.0, (run + 0.5) / request.steps), generator=generators)

    def after_step(self, view, step: int, callback_kwargs: dict, last: bool) -> None:
        inpaint = self.batch.get("inpaint")
        if inpaint is None:
            return
        start, latents = self.batch["start"], callback_kwargs["latents"]
        if last:
            kept = start
        else:
            scheduler = view.scheduler
            index = (scheduler.begin_index or 0) + step + 1
            kept = scheduler.add_noise(start, self.batch["noise"], scheduler.timesteps[index].reshape(1))
        callback_kwargs["latents"] = latents * inpaint + kept.to(latents.dtype) * (1 - inpaint)

    def finish(self, images: list, batch_index: int) -> list:
        overlays = self.prepared.overlays
        if not overlays:
            return images
        return [masking.apply_overlay(image, overlays[i % len(overlays)], self.prepared.paste_to)
                for i, image in enumerate(images)]


def img2img(request: Img2ImgRequest, model, library, *, outdir: Path | None = None,
            progress: ProgressCallback | None = None, job=None) -> Txt2ImgResult:
    """img2img, or inpainting when ``request.mask`` is given, with ``model`` (a loaded checkpoint); the rest as
    :func:`extension.processing.txt2img` (``library``, ``outdir``, ``progress``, ``job``).

    Raises:
        ValueError: settings that cannot make an image (no picture, a mask of another size, a strength
            outside 0..1, an unknown resize mode or masked content, and txt2img's).
    """
    request, messages = validate_img2img(request)
    mode = Img2ImgMode(request, prepare_pictures(request))
    return sample(request, mode, model, library, messages, outdir=outdir, progress=progress, job=job)


__all__ = ["Img2ImgRequest", "Img2ImgMode", "img2img", "prepare_pictures", "steps_run", "validate_img2img"]
