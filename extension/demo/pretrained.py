"""The trained demo model: where it lives, loading it, and the built-in model the host falls back on.

The folder is ``save_pretrained`` of a ``StableDiffusionPipeline`` without its tokenizer (the tokenizer
is built from the CLIP vocabulary shipped in ``extension/assets/clip``, so it is passed in on loading).
Weights are stored in fp16 to keep the folder small; configs make them load as fp32. When the folder is
missing (or a test asks for it), a random-weight pipeline of the same architecture stands in.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import BuiltinModel, CheckpointInfo, LoadedModel, load_diffusers_folder
from ..fileio import sha256_file
from ..paths import HYPERNETWORK_DIR

MODEL_DIR = Path(__file__).resolve().parent / "model"
HYPERNETWORK_PATH = HYPERNETWORK_DIR / "demo.safetensors"  # the demo hypernetwork (outlined shapes)
NAME = "demo"                 # infotext "Model:" of the trained demo model; the dropdown shows it too
RANDOM_NAME = "demo-random"   # the random-weight stand-in used when the demo model is not trained
ARCHITECTURE = "demo"


def is_trained_model(path=MODEL_DIR) -> bool:
    """True when ``path`` holds a diffusers folder (its ``model_index.json``)."""
    return (Path(path) / "model_index.json").is_file()


def load_pipeline(path=MODEL_DIR, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The trained demo model as a ``StableDiffusionPipeline`` on ``device`` in ``dtype``, loaded by the same
    function as any diffusers folder in the checkpoints folder."""
    pipe, _ = load_diffusers_folder(Path(path), torch.device(device), dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_model(device: torch.device, dtype: torch.dtype, path=MODEL_DIR, *, random: bool = False) -> LoadedModel:
    """The demo model as a :class:`LoadedModel`: trained from ``path``, or random weights when it is missing."""
    path = Path(path)
    if not random and is_trained_model(path):
        pipe = load_pipeline(path, device, dtype)
        files = [p for p in path.rglob("*") if p.is_file()]
        info = CheckpointInfo(title=NAME, model_name=NAME, filename=str(path.resolve()), name=NAME,
                              name_for_extra=NAME, kind="diffusers", size=sum(p.stat().st_size for p in files),
                              mtime=max((p.stat().st_mtime for p in files), default=0.0))
        return LoadedModel(pipe, name=NAME, architecture=ARCHITECTURE, device=device, dtype=dtype, info=info,
                           hasher=lambda: sha256_file(path))
    from .architecture import build_random_pipeline

    pipe = build_random_pipeline(torch_dtype=dtype).to(device)
    return LoadedModel(pipe, name=RANDOM_NAME, architecture=ARCHITECTURE, device=device, dtype=dtype)


def builtin_model(path=MODEL_DIR, *, random: bool = False) -> BuiltinModel:
    """The demo model as the host's fallback (``ModelManager(builtin=...)``): called ``demo`` (or
    ``demo-random``), loaded on the manager's device and precision."""
    trained = not random and is_trained_model(path)
    return BuiltinModel(NAME, lambda device, dtype: load_model(device, dtype, path, random=random),
                        aliases=(RANDOM_NAME,), path=Path(path).resolve() if trained else None)
