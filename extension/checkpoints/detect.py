"""What a checkpoint file is: its family (SD 1.x, SD 2.x, SDXL) from its keys, and whether it predicts v.

Single files keep the original LDM key layout: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*``
(VAE), ``cond_stage_model.*`` (SD 1.x / 2.x text encoder) or ``conditioner.embedders.*`` (SDXL).

v-prediction cannot be read from the weights. Like AUTOMATIC1111: a ``NAME.yaml`` beside the file decides
(``model.params.parameterization: "v"`` means v-prediction, anything else epsilon); else a ``NAME.config/``
folder's scheduler decides; else, for SD 2.x only, AUTOMATIC1111's test is run (one UNet call on a constant
input: a mean of ``output - input`` below -1 means v-prediction; it tells the 768-v models from the 512 ones).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import ModelError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
ARCHITECTURES = ("sd1", "sd2", "sd2-v", "sdxl")
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."


def describe_non_checkpoint(keys) -> str | None:
    """What a dict that is not a full SD checkpoint looks like (a hypernetwork, LoRA, ...), or None.

    Args:
        keys: the keys of the file's state dict.

    Returns:
        A phrase for the user (``"it looks like a LoRA (put it in models/Lora)"``), or None when the keys have
        UNet weights.
    """
    keys = list(keys)
    if not keys:
        return "it holds no tensors"
    if any(not isinstance(k, str) for k in keys) or {"layer_structure", "activation_func"} & set(keys):
        return "it looks like a hypernetwork (put it in models/hypernetworks)"
    strs = [k for k in keys if isinstance(k, str)]
    if any(k.startswith(UNET_PREFIX) for k in strs):
        return None
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) or ".lora_down." in k
           or ".lora_A." in k or ".lora_up." in k or k.endswith(".alpha") for k in strs):
        return "it looks like a LoRA (put it in models/Lora)"
    if any(re.match(r"\d+\.", k) for k in strs):  # "768.k.linear.0.weight": this project's hypernetwork files
        return "it looks like a hypernetwork (put it in models/hypernetworks)"
    if {"string_to_param", "emb_params", "clip_l", "clip_g"} & set(strs):
        return "it looks like a textual-inversion embedding (put it in embeddings/)"
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.")) for k in strs) and \
            any("quant_conv" in k for k in strs):
        return "it looks like a VAE on its own (put it in models/VAE)"
    if any(k.startswith(("down_blocks.", "mid_block.", "conv_in.")) for k in strs):
        return "it looks like a diffusers UNet weight file, not a whole checkpoint (use a diffusers folder)"
    return "it has no UNet weights (model.diffusion_model.*)"


def cross_attention_width(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """The text width the UNet cross-attends to, read from the first ``attn2.to_k`` weight of a single file.

    Args:
        shapes: ``{key: shape}`` of a single-file checkpoint.

    Returns:
        The width (768 on SD 1.x, 1024 on SD 2.x, 2048 on SDXL), or None when no such weight exists.
    """
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(shape[1])
    return None


def detect_architecture(shapes: Mapping[str, Sequence[int]], filename: str | os.PathLike = "checkpoint") -> str:
    """The family of a single-file checkpoint from its keys and shapes: ``'sd1'``, ``'sd2'`` or ``'sdxl'``.

    SD 1.x has a CLIP text model under ``cond_stage_model.transformer.*``, SD 2.x an OpenCLIP one under
    ``cond_stage_model.model.*``, SDXL two under ``conditioner.embedders.{0,1}.*``. Whether an SD 2.x model
    predicts v is not in the keys (see the module docstring). Anything else is a :class:`ModelError`.

    Args:
        shapes: ``{key: shape}`` of a single-file checkpoint.
        filename: what messages name.

    Raises:
        ModelError: not a checkpoint, an inpainting or other special UNet, an SDXL refiner, or no text encoder.
    """
    looks = describe_non_checkpoint(shapes.keys())
    if looks:
        raise ModelError(f"{filename}: not a Stable Diffusion checkpoint: {looks}")
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise ModelError(f"{filename}: not a Stable Diffusion checkpoint: no UNet input layer "
                         f"({UNET_PREFIX}input_blocks.0.0.weight)")
    in_channels = int(conv_in[1])
    if in_channels == 9:
        raise ModelError(f"{filename}: an inpainting checkpoint (9 UNet input channels); only txt2img "
                         "checkpoints (4 channels) are supported")
    if in_channels != 4:
        raise ModelError(f"{filename}: a UNet with {in_channels} input channels (instruct-pix2pix, depth or "
                         "another special model); only txt2img checkpoints (4 channels) are supported")
    keys = list(shapes)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has(SDXL_TEXT2_PREFIX) and has(SDXL_TEXT_PREFIX):
        return "sdxl"
    if has(SDXL_REFINER_TEXT_PREFIX):
        raise ModelError(f"{filename}: an SDXL refiner checkpoint; only base models are supported")
    if has(SD2_TEXT_PREFIX):
        return "sd2"
    if has(SD1_TEXT_PREFIX):
        return "sd1"
    raise ModelError(f"{filename}: no text encoder weights (cond_stage_model.* or conditioner.embedders.*); "
                     "checkpoints without a text encoder are not supported")


def yaml_prediction_type(path: Path) -> str | None:
    """``'v_prediction'``/``'epsilon'`` from an AUTOMATIC1111 ``NAME.yaml`` beside ``path``, or None.

    Args:
        path: the checkpoint file (its ``.yaml`` twin is read).

    Raises:
        ModelError: the yaml exists but cannot be read.
    """
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    import yaml
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{yaml_path}: unreadable config beside the checkpoint ({exc})") from exc
    return "v_prediction" if _says_v(data) else "epsilon"


def _says_v(node) -> bool:
    """An LDM yaml with ``parameterization: "v"``, or an SGM (SDXL) one with a ``...VScaling`` denoiser."""
    if isinstance(node, dict):
        if node.get("parameterization") == "v":
            return True
        if isinstance(node.get("target"), str) and node["target"].split(".")[-1].startswith("VScaling"):
            return True
        return any(_says_v(v) for v in node.values())
    if isinstance(node, list):
        return any(_says_v(v) for v in node)
    return False


def sidecar_config_dir(path) -> Path | None:
    """The ``NAME.config/`` diffusers config folder beside a single file, when there is one.

    Args:
        path: the checkpoint file.

    Returns:
        The folder when it holds a ``model_index.json``, else None.
    """
    candidate = Path(path).with_suffix(".config")
    return candidate if (candidate / "model_index.json").is_file() else None


def guess_v_prediction(unet) -> bool:
    """AUTOMATIC1111's test for SD 2.x: v-models answer a constant input far below it at t=999.

    Args:
        unet: the loaded UNet (one forward pass on an 8x8 input, no gradients).

    Returns:
        True when the mean of ``output - input`` is below -1.
    """
    param = next(unet.parameters())
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=param.device, dtype=param.dtype)
        cond = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=param.device, dtype=param.dtype)
        t = torch.tensor([999], device=param.device)
        out = unet(x, t, encoder_hidden_states=cond).sample
        return (out.float() - x.float()).mean().item() < -1
