"""Every random choice of a training run, derived from the run's seed and where it is made.

Nothing draws from a global generator: the noise, timestep, template line, tag order, flip and latent
sample for one sample at one step come from a generator seeded with ``(seed, purpose, step, index...)``.
So a run resumed at any step draws exactly what the uninterrupted run drew there, the processes of a
multi-process run draw independently of each other, and a preview or a generation in between changes
nothing.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def _entropy(seed: int, keys: tuple) -> list[int]:
    words = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFFFFFFFFFF)
    return words


def numpy_rng(seed: int, *keys) -> np.random.Generator:
    """A NumPy generator for ``keys`` (strings or integers) under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, keys)))


def torch_generator(seed: int, *keys) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``keys`` under ``seed`` (draw on the CPU, then move: same on any device)."""
    state = np.random.SeedSequence(_entropy(seed, keys)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)
