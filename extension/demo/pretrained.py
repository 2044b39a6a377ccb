"""Where the trained demo model lives, and loading it like any diffusers folder.

The folder is ``save_pretrained`` of a ``StableDiffusionPipeline`` without its tokenizer (the tokenizer
is built from the CLIP vocabulary shipped in ``extension/assets/clip``, so it is passed in on loading).
Weights are stored in fp16 to keep the folder small; configs make them load as fp32.
"""
from __future__ import annotations

from pathlib import Path

import torch

MODEL_DIR = Path(__file__).resolve().parent / "model"
HYPERNETWORK_PATH = Path(__file__).resolve().parents[2] / "models" / "hypernetworks" / "demo.safetensors"


def is_trained_model(path=MODEL_DIR) -> bool:
    """True when ``path`` holds a diffusers folder (its ``model_index.json``)."""
    return (Path(path) / "model_index.json").is_file()


def load_pipeline(path=MODEL_DIR, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The trained demo model as a ``StableDiffusionPipeline`` on ``device`` in ``dtype``."""
    from diffusers import StableDiffusionPipeline

    from ..tokenizer import clip_tokenizer

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), tokenizer=clip_tokenizer(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, dtype=dtype, local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
