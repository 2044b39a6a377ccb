"""Pictures and masks for img2img and inpainting, as AUTOMATIC1111 prepares them (``modules/images.py``
``resize_image``, ``modules/masking.py``, the mask steps of ``StableDiffusionProcessingImg2Img.init``).

Pure functions of PIL images; :mod:`extension.img2img` puts them together. White in a mask is what is
inpainted (changed), black what is kept.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# A1111's "Resize mode", by index (what the API's resize_mode takes)
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
LATENT_UPSCALE = 3
# A1111's "Masked content", by index (the API's inpainting_fill); "original" (1) writes nothing in the infotext
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)
BACKGROUND = "#ffffff"  # A1111's img2img_background_color: what transparent pixels become


def flatten(image: Image.Image, color: str = BACKGROUND) -> Image.Image:
    """``image`` as RGB, transparent parts on ``color``."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, color)
        background.paste(image, mask=image)
        image = background
    return image.convert("RGB")


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's ``resize_image`` without upscalers: 0 stretches to the size, 1 scales to cover it and crops the
    excess (centred), 2 scales to fit inside and fills the margins with the picture's edge rows or columns
    stretched. Any other mode (3, the latent upscale, does the resize on latents) acts as 2, as in A1111."""
    def resize(picture, w, h):
        return picture.resize((w, h), resample=Image.LANCZOS)

    if mode == 0:
        return resize(image, width, height)
    ratio, source_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > source_ratio else image.width * height // image.height
        src_h = height if ratio <= source_ratio else image.height * width // image.width
        result = Image.new("RGB", (width, height))
        result.paste(resize(image, src_w, src_h), box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return result
    src_w = width if ratio < source_ratio else image.width * height // image.height
    src_h = height if ratio >= source_ratio else image.height * width // image.width
    resized = resize(image, src_w, src_h)
    result = Image.new("RGB", (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < source_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            result.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            result.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                         box=(0, fill_height + src_h))
    elif ratio > source_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            result.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            result.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                         box=(fill_width + src_w, 0))
    return result


def binary_mask(mask: Image.Image) -> Image.Image:
    """A1111's ``create_binary_mask``: an RGBA mask with any transparency is its alpha channel thresholded at
    128 (what a sketch layer gives); anything else its luminance."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
    return mask.convert("L")


def gaussian_blur(mask: Image.Image, sigma: float) -> Image.Image:
    """OpenCV's ``GaussianBlur`` as A1111 calls it: a kernel of ``2 * int(2.5 * sigma + 0.5) + 1`` taps, along x
    and then along y, edges mirrored without repeating the border pixel."""
    if sigma <= 0:
        return mask
    radius = int(2.5 * sigma + 0.5)
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    values = np.asarray(mask, dtype=np.float64)
    for axis in (1, 0):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        mode = "reflect" if values.shape[axis] > radius else "symmetric"
        padded = np.pad(values, pad, mode=mode)
        length = values.shape[axis]
        values = sum(tap * np.take(padded, range(i, i + length), axis=axis) for i, tap in enumerate(taps))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int]:
    """A1111's ``get_crop_region``: the box around the mask's white, grown by ``pad`` within the picture; the
    whole picture when the mask is empty (A1111 would fail there)."""
    box = mask.getbbox()
    if not box:
        return 0, 0, mask.width, mask.height
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(region, width: int, height: int, image_width: int, image_height: int):
    """A1111's ``expand_crop_region``: ``region`` grown to the generation's aspect ratio, kept in the picture."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        grow = int((x2 - x1) / (width / height) - (y2 - y1))
        y1, y2 = _shift_inside(y1 - grow // 2, y2 + grow - grow // 2, image_height)
    else:
        grow = int((y2 - y1) * (width / height) - (x2 - x1))
        x1, x2 = _shift_inside(x1 - grow // 2, x2 + grow - grow // 2, image_width)
    return x1, y1, x2, y2


def _shift_inside(low: int, high: int, size: int) -> tuple[int, int]:
    if high >= size:
        low, high = low - (high - size), size
    if low < 0:
        low, high = 0, high - low
    return low, min(high, size)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked part painted over with ever less blurred copies of the rest."""
    result = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def overlay(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The original as A1111 lays it over an inpainted image: ``image`` where ``mask`` is black, transparent
    where it is white."""
    layer = Image.new("RGBa", image.size)
    layer.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    return layer.convert("RGBA")


def apply_overlay(image: Image.Image, layer: Image.Image, paste_to: tuple[int, int, int, int] | None) -> Image.Image:
    """A1111's ``apply_overlay``: an "only masked" result put back at ``paste_to`` (x, y, w, h) in a picture the
    size of ``layer``, then ``layer`` (the kept original) over it."""
    if paste_to is not None:
        x, y, w, h = paste_to
        base = Image.new("RGBA", layer.size)
        base.paste(resize_image(1, image, w, h), (x, y))
        image = base
    image = image.convert("RGBA")
    image.alpha_composite(layer)
    return image.convert("RGB")


__all__ = ["RESIZE_MODES", "MASKED_CONTENT", "FILL", "ORIGINAL", "LATENT_NOISE", "LATENT_NOTHING", "LATENT_UPSCALE",
           "flatten", "resize_image", "binary_mask", "gaussian_blur", "crop_region", "expand_crop_region", "fill",
           "overlay", "apply_overlay"]
