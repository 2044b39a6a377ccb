"""img2img and inpainting (extension/img2img.py, extension/masking.py) on tiny SD 1.x, 2.x and SDXL models with
random weights: the hypernetworks apply per call, strength 0 keeps the picture, a mask keeps what it does not
cover, A1111's infotext fields and steps, files under img2img-images, bad settings refused."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from extension import masking
from extension.checkpoints.manager import LoadedModel
from extension.hypernetwork.attention import attention_widths
from extension.img2img import Img2ImgRequest, encode_pictures, img2img, steps_run
from extension.infotext import parse_infotext
from extension.library import HypernetworkLibrary
from builders import make_hypernetwork, tiny_pipeline, tiny_sdxl_pipeline

SIZE = 32
FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tmp_path_factory):
    """``(model, library)``: a tiny model of the family and a folder with one network of its widths."""
    family = request.param
    pipe = tiny_sdxl_pipeline() if family == "sdxl" else tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp(f"hn-{family}")
    make_hypernetwork("style", sorted(attention_widths(pipe)), seed=5).save(folder / "style.pt")
    model = LoadedModel(pipe, name=f"tiny-{family}", architecture=family, device=torch.device("cpu"),
                        dtype=torch.float32)
    return model, HypernetworkLibrary(folder)


def picture(seed: int = 0, size: int = SIZE) -> Image.Image:
    """A smooth picture (a gradient with a disc): something a VAE keeps the shape of."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 1 - x], axis=-1) * 200 + 30
    rgb[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.06] = (240, 40, 40 + 20 * seed)
    return Image.fromarray(rgb.astype(np.uint8))


def left_half_mask(size: int = SIZE) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    return mask


def run(setup, **fields):
    model, library = setup
    values = dict(prompt="a red circle", width=SIZE, height=SIZE, steps=4, seed=3, init_images=[picture()])
    values.update(fields)
    return img2img(Img2ImgRequest(**values), model, library)


def array(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_the_hypernetwork_applies_per_call(setup):
    plain = run(setup)
    tagged = run(setup, prompt="a red circle <hypernet:style:1>")
    again = run(setup)
    assert tagged.hypernetworks == [("style", 1.0)] and plain.hypernetworks == []
    assert not np.array_equal(array(plain.images[0]), array(tagged.images[0]))
    assert np.array_equal(array(plain.images[0]), array(again.images[0]))  # nothing stayed on the model
    assert "Hypernet hashes" in parse_infotext(tagged.infotexts[0]) and not tagged.messages


def test_strength_zero_gives_back_the_picture_through_the_vae(setup):
    model, _ = setup
    with torch.no_grad():
        latents = encode_pictures(model.pipe.vae, [picture()])
        decoded = model.pipe.vae.decode(latents / model.pipe.vae.config.scaling_factor).sample
    through_vae = ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()
    kept, changed = run(setup, denoising_strength=0.0), run(setup, denoising_strength=1.0)
    # A1111 runs one step from the smallest noise: the picture as the VAE gives it back, give or take that step
    # (large with random weights; see the trained demo model below)
    distance = lambda result: np.abs(array(result.images[0]) - through_vae).mean()  # noqa: E731
    assert distance(kept) < 0.7 * distance(changed)
    assert parse_infotext(kept.infotexts[0])["Denoising strength"] == 0.0


def test_strength_zero_keeps_the_picture_on_the_trained_demo_model():
    from PIL import ImageDraw

    from extension.demo.architecture import IMAGE_SIZE
    from extension.demo.pretrained import is_trained_model, load_model

    if not is_trained_model():
        pytest.skip("the trained demo model is not in extension/demo/model")
    model = load_model(torch.device("cpu"), torch.float32)
    init = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    ImageDraw.Draw(init).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    request = dict(prompt="a blue square on a white background", width=IMAGE_SIZE, height=IMAGE_SIZE, steps=10,
                   seed=3, init_images=[init])
    distance = {strength: np.abs(array(img2img(Img2ImgRequest(**request, denoising_strength=strength), model,
                                               None).images[0]) - array(init)).mean() for strength in (0.0, 1.0)}
    assert distance[0.0] < 12 and distance[1.0] > 25, distance  # kept through the VAE; redrawn as the prompt says


def test_inpainting_keeps_what_the_mask_does_not_cover(setup):
    original = array(picture())
    result = run(setup, mask=left_half_mask(), mask_blur=0, inpaint_full_res=False, inpainting_fill=masking.ORIGINAL)
    image = array(result.images[0])
    assert image.shape == original.shape
    assert np.array_equal(image[:, SIZE // 2:], original[:, SIZE // 2:])  # the original laid over it
    assert np.abs(image[:, :SIZE // 2] - original[:, :SIZE // 2]).mean() > 10
    fields = parse_infotext(result.infotexts[0])
    assert fields["Denoising strength"] == 0.75 and "Mask blur" not in fields and "Masked content" not in fields


def test_inverted_blurred_only_masked_inpainting(setup):
    original = array(picture(size=48))
    mask = Image.new("L", (48, 48), 255)
    mask.paste(0, (8, 8, 24, 24))  # inverted: only this square changes
    result = run(setup, init_images=[picture(size=48)], mask=mask, inpainting_mask_invert=1, mask_blur=2,
                 inpaint_full_res=True, inpaint_full_res_padding=4, inpainting_fill=masking.LATENT_NOISE)
    image = array(result.images[0])
    assert image.shape == original.shape  # "Only masked": generated at 32x32, pasted back into the 48x48 picture
    assert np.array_equal(image[32:, :], original[32:, :]) and np.array_equal(image[:, 32:], original[:, 32:])
    assert np.abs(image[10:22, 10:22] - original[10:22, 10:22]).mean() > 10
    fields = parse_infotext(result.infotexts[0])
    assert (fields["Mask blur"], fields["Mask mode"], fields["Inpaint area"], fields["Masked area padding"],
            fields["Masked content"]) == ("2", "Inpaint not masked", "Only masked", "4", "latent noise")


def test_steps_files_and_seeds(setup, tmp_path):
    model, library = setup
    seen = []
    request = Img2ImgRequest(prompt="a cat [dog:0.5]", width=SIZE, height=SIZE, steps=8, seed=7, batch_size=2,
                             n_iter=2, denoising_strength=0.5, init_images=[picture()], resize_mode=1,
                             initial_noise_multiplier=0.9)
    result = img2img(request, model, library, outdir=tmp_path, progress=lambda step, total: seen.append(total))
    assert steps_run(8, 0.5) == 5 and set(seen) == {2 * 5}  # A1111: int(0.5 * 8) + 1 steps, two batches
    assert result.seeds == [7, 8, 9, 10] and len(result.paths) == 4
    assert all(path.parent.parent.name == "img2img-images" for path in result.paths)
    fields = parse_infotext(result.infotexts[0])
    assert fields["Steps"] == 8 and fields["Noise multiplier"] == "0.9" and fields["Denoising strength"] == 0.5


def test_masks_and_resizing_as_a1111():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    assert masking.resize_image(0, wide, 16, 16).size == (16, 16)
    cropped = masking.resize_image(1, wide, 16, 16)  # covers the square: the sides cut off
    assert cropped.size == (16, 16) and cropped.getpixel((0, 0)) == (255, 0, 0)
    filled = np.asarray(masking.resize_image(2, wide, 16, 16))  # fits inside: margins filled from the edges
    assert filled.shape == (16, 16, 3) and (filled[0, 8] > 200).any()
    sketch = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    sketch.putpixel((2, 2), (255, 255, 255, 255))
    assert np.asarray(masking.binary_mask(sketch)).sum() == 255  # an RGBA sketch: its opaque strokes
    blurred = np.asarray(masking.gaussian_blur(left_half_mask(16), 2))
    assert blurred[:, 0].min() == 255 and blurred[:, 15].max() == 0 and 0 < blurred[0, 8] < 255
    assert masking.crop_region(left_half_mask(16), 2) == (0, 0, 10, 16)
    assert masking.expand_crop_region((0, 0, 8, 16), 16, 16, 16, 16) == (0, 0, 16, 16)


@pytest.mark.parametrize("fields, message", [
    ({"init_images": []}, "init_images: give at least one picture"),
    ({"mask": Image.new("L", (16, 16))}, "mask: its size 16x16 differs"),
    ({"denoising_strength": 1.5}, "denoising_strength must be between 0 and 1"),
    ({"denoising_strength": -0.1}, "denoising_strength must be between 0 and 1"),
    ({"resize_mode": 4}, "resize_mode must be one of 0..3"),
    ({"inpainting_fill": 7}, "inpainting_fill must be one of 0..3"),
    ({"init_images": [picture(), picture(1)], "batch_size": 1}, "2 pictures for a batch size of 1"),
])
def test_bad_settings(fields, message):
    values = dict(width=SIZE, height=SIZE, steps=2, init_images=[picture()])
    values.update(fields)
    with pytest.raises(ValueError, match=message):
        img2img(Img2ImgRequest(**values), model=None, library=None)
