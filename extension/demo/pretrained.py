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
    """The trained demo model as a ``StableDiffusionPipeline`` on ``device`` in ``dtype``, loaded by the same
    function as any diffusers folder in the checkpoints folder."""
    from ..checkpoints.manager import load_diffusers_folder

    pipe, _ = load_diffusers_folder(Path(path), torch.device(device), dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
