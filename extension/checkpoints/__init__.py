"""Stable Diffusion checkpoints: finding, recognising and loading them offline.

- :mod:`.device`: ``--device`` and ``--precision``;
- :mod:`.detect`: what a file is (family, v-prediction, the key prefixes);
- :mod:`.weights`: reading a single file's tensors safely;
- :mod:`.convert`: single files and diffusers folders into pipelines, from the shipped configs;
- :mod:`.manager`: the checkpoints folder and the one loaded checkpoint.
"""
from .convert import load_diffusers_folder, load_single_file
from .detect import detect_architecture
from .device import resolve_device, resolve_dtype
from .manager import BuiltinModel, CheckpointInfo, LoadedModel, ModelManager

__all__ = ["BuiltinModel", "CheckpointInfo", "LoadedModel", "ModelManager", "detect_architecture",
           "load_diffusers_folder", "load_single_file", "resolve_device", "resolve_dtype"]
