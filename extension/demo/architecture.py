"""Architecture of the demo model, and a random-weight copy of it built from a seed.

An SD 1.x-shaped pipeline, small enough for a CPU: a UNet with self-attention at widths 64 and 80
and cross-attention at width 48 (a width no block has, so hypernetwork modules chosen by width tell
self- from cross-attention), a 2-layer CLIP text encoder over the real CLIP vocabulary, and a small VAE
(32x32 pixels <-> 4x16x16 latents). The trained demo model (``extension/demo/model``) has this shape;
the random-weight copy is the fast fixture for tests that do not care what is drawn.
"""
from __future__ import annotations

import torch

IMAGE_SIZE = 64
LATENT_SIZE = 16
CROSS_ATTENTION_DIM = 48
SELF_ATTENTION_WIDTHS = (64, 80)  # the widths of the blocks that have attention
ATTENTION_WIDTHS = SELF_ATTENTION_WIDTHS + (CROSS_ATTENTION_DIM,)

UNET_CONFIG = dict(
    sample_size=LATENT_SIZE, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64, 80), layers_per_block=1, cross_attention_dim=CROSS_ATTENTION_DIM,
    attention_head_dim=4, norm_num_groups=16,
)
VAE_CONFIG = dict(
    sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False,
    scaling_factor=1.0,
)
TEXT_ENCODER_CONFIG = dict(
    vocab_size=49408, hidden_size=CROSS_ATTENTION_DIM, intermediate_size=192, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, projection_dim=CROSS_ATTENTION_DIM,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
    prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
)


def build_components(seed: int = 0):
    """``(unet, vae, text_encoder)`` with weights drawn from ``seed`` (deterministic on CPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    devices = [] if not torch.cuda.is_available() else list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        vae = AutoencoderKL(**VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))
    return unet.eval(), vae.eval(), text_encoder.eval()


def build_random_pipeline(seed: int = 0, torch_dtype: torch.dtype = torch.float32):
    """A ``StableDiffusionPipeline`` of the demo architecture with random weights drawn from ``seed``."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from ..tokenizer import clip_tokenizer

    unet, vae, text_encoder = build_components(seed)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, vae, text_encoder):  # nn.Module.to: diffusers' own .to() warns about every dtype cast
        torch.nn.Module.to(module, dtype=torch_dtype)
    return pipe
