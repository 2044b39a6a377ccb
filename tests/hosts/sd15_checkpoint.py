"""Write a random-weights SD 1.5 single-file checkpoint at the real key names and shapes, in fp16.

Forge recognises a checkpoint only by its keys and shapes (``huggingface_guess``), so the host tests need a file
that looks exactly like SD 1.5: the UNet as ``model.diffusion_model.*``, the VAE as ``first_stage_model.*`` and
CLIP as ``cond_stage_model.transformer.*``, in the original (LDM) names. It is built here from the SD 1.5 configs
that the host ships (``backend/huggingface/runwayml/stable-diffusion-v1-5``) with the host's diffusers and
transformers, seeded, and converted to the original names with the host's own converter
(``huggingface_guess.diffusers_convert``). Nothing is downloaded.

Run with the host's Python: ``python tests/hosts/sd15_checkpoint.py FORGE_TREE OUT.safetensors``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def build(tree: Path, out: Path, seed: int = 0) -> None:
    sys.path.insert(0, str(tree / "repositories" / "huggingface_guess"))
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from huggingface_guess.diffusers_convert import convert_unet_state_dict, convert_vae_state_dict
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = tree / "backend" / "huggingface" / "runwayml" / "stable-diffusion-v1-5"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(json.loads((configs / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((configs / "vae" / "config.json").read_text()))
    clip = CLIPTextModel(CLIPTextConfig.from_json_file(str(configs / "text_encoder" / "config.json")))
    state = {}
    state.update({f"model.diffusion_model.{k}": v for k, v in convert_unet_state_dict(unet.state_dict()).items()})
    state.update({f"first_stage_model.{k}": v for k, v in convert_vae_state_dict(vae.state_dict()).items()})
    state.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.state_dict().items()})
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    partial = out.with_name(out.name + ".partial")
    save_file(state, str(partial))
    partial.rename(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
