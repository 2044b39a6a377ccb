"""Builders shared by the tests: tiny SD 1.x / 2.x / SDXL pipelines with random weights, test networks, and a
folder of networks for the demo model (the UI tests)."""
from __future__ import annotations

from pathlib import Path

import torch

from extension.checkpoints.convert import CONFIGS_DIR
from extension.hypernetwork import Hypernetwork
from extension.tokenizer import clip_tokenizer

BOS, EOS = 49406, 49407


def make_hypernetwork(name: str, sizes, seed: int, **structure) -> Hypernetwork:
    """A ``[1, 2, 1]`` ReLU network with a visible effect: Xavier init instead of A1111's near-zero N(0, 0.01).

    ``structure`` overrides any constructor argument (``activation_func=None`` for a linear network, ...).
    """
    options = dict(layer_structure=[1, 2, 1], activation_func="relu", weight_init="XavierNormal")
    options.update(structure)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Hypernetwork(name, enable_sizes=sizes, **options)


MISFIT = "sd1_anime"  # widths of SD 1.x only: none exists in the demo model
PARTIAL = "mixed_sizes"  # one demo width, one SD 1.x width
BROKEN = "broken"


def make_hypernetwork_dir(folder: Path) -> dict[str, Path]:
    """A folder with two networks for the demo model (``demo_style`` with a preview and a description,
    ``demo_linear`` in ``sub/``), one whose widths do not fit it (:data:`MISFIT`), one that partly fits
    (:data:`PARTIAL`), and a broken file (:data:`BROKEN`). The weights are seeded: the same files every time.
    Returns ``{name: path}``."""
    from PIL import Image

    from extension.demo.architecture import ATTENTION_WIDTHS, CROSS_ATTENTION_DIM

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name, filename, sizes, seed, step=0, **structure):
        hn = make_hypernetwork(name, sizes, seed, **structure)
        hn.step = step
        paths[name] = folder / filename
        hn.save(paths[name])

    save("demo_style", "demo_style.pt", ATTENTION_WIDTHS, seed=1, step=1200)  # [1, 2, 1] relu, Xavier
    (folder / "demo_style.txt").write_text("Bold strokes for the demo model (a test network).", encoding="utf-8")
    Image.new("RGB", (64, 64), (200, 60, 40)).save(folder / "demo_style.png")
    save("demo_linear", "sub/demo_linear.safetensors", [CROSS_ATTENTION_DIM], seed=2, layer_structure=[1, 1],
         activation_func=None, weight_init="Normal")
    save(MISFIT, f"{MISFIT}.pt", [768, 320], seed=3, layer_structure=[1, 0.1, 1], activation_func="swish",
         weight_init="Normal")
    (folder / f"{MISFIT}.txt").write_text("An SD 1.x network: its widths do not exist in the demo model.",
                                          encoding="utf-8")
    save(PARTIAL, f"{PARTIAL}.pt", [CROSS_ATTENTION_DIM, 768], seed=4, layer_structure=[1, 0.1, 1],
         activation_func=None, weight_init="Normal")
    paths[BROKEN] = folder / f"{BROKEN}.pt"
    paths[BROKEN].write_bytes(b"this is not a hypernetwork, just some bytes\n" * 4)
    return paths


def _clip_config(hidden, act="quick_gelu", pad=49407, projection=None):
    from transformers import CLIPTextConfig
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=projection or hidden,
                          hidden_act=act, bos_token_id=49406, eos_token_id=49407, pad_token_id=pad)


def tiny_pipeline(family, seed=0):
    """An SD1-, SD2- or SDXL-shaped pipeline with tiny widths and random weights."""
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    scheduler = PNDMScheduler.from_pretrained(str(CONFIGS_DIR / "sd1"), subfolder="scheduler")
    if family == "sdxl":
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=2, sample_size=8, norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
            cross_attention_dim=64)
        vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1,
                            norm_num_groups=4, sample_size=32, scaling_factor=0.13025)
        return StableDiffusionXLPipeline(
            vae=vae.eval(), unet=unet.eval(), scheduler=scheduler,
            text_encoder=CLIPTextModel(_clip_config(32)).eval(), tokenizer=clip_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(_clip_config(32, "gelu", 0)).eval(), tokenizer_2=clip_tokenizer("!"),
            add_watermarker=False)
    sd2 = family == "sd2"
    unet = UNet2DConditionModel(
        block_out_channels=(16, 16, 32, 32), layers_per_block=2, sample_size=8, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(2, 2, 4, 4) if sd2 else 4, use_linear_projection=sd2, cross_attention_dim=24)
    vae = AutoencoderKL(block_out_channels=[8, 8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=1,
                        norm_num_groups=4, sample_size=64)
    text_encoder = CLIPTextModel(_clip_config(24, "gelu" if sd2 else "quick_gelu", 0 if sd2 else 49407))
    return StableDiffusionPipeline(
        vae=vae.eval(), unet=unet.eval(), text_encoder=text_encoder.eval(), scheduler=scheduler,
        tokenizer=clip_tokenizer("!" if sd2 else "<|endoftext|>"), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False)


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny SDXL-shaped pipeline: self-attention width 32, text width 24 + 24 = 48, pooled 24 (Euler)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=16, norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=72,
            cross_attention_dim=48)
        vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1,
                            norm_num_groups=4, sample_size=32, scaling_factor=0.13025)
        encoder_1 = CLIPTextModel(_clip_config(24, "quick_gelu", EOS))
        encoder_2 = CLIPTextModelWithProjection(_clip_config(24, "gelu", 0))
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(), unet=unet.eval(), text_encoder=encoder_1.eval(), text_encoder_2=encoder_2.eval(),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"), add_watermarker=False,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"))
    pipe.set_progress_bar_config(disable=True)
    return pipe
