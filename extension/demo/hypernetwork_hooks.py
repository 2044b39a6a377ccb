"""Apply a hypernetwork to a diffusers UNet with forward pre-hooks, independently of any attention processor.

AUTOMATIC1111's semantics: in every attention, self- and cross-, the context that feeds ``to_k`` is
replaced by ``k_module(context)`` and the one that feeds ``to_v`` by ``v_module(context)``, the module
pair chosen by the context's width (``context.shape[-1]``). Widths the network has no modules for pass
through. Used to train and preview the demo hypernetwork; the UI applies networks through the project's
attention processor instead, with the same result.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..hypernetwork import Hypernetwork


def _pre_hook(hypernetwork: Hypernetwork, which: int, multiplier: float):
    def hook(module: torch.nn.Module, args: tuple):
        context = args[0]
        pair = hypernetwork.layers.get(context.shape[-1])
        if pair is None:
            return None
        return (pair[which](context, multiplier), *args[1:])

    return hook


def attention_modules(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """Every attention of ``unet`` (anything with ``to_k`` and ``to_v`` Linear layers)."""
    return [module for module in unet.modules()
            if isinstance(getattr(module, "to_k", None), torch.nn.Linear)
            and isinstance(getattr(module, "to_v", None), torch.nn.Linear)]


@contextlib.contextmanager
def hypernetwork_applied(unet: torch.nn.Module, hypernetwork: Hypernetwork, multiplier: float = 1.0) -> Iterator[None]:
    """Within the block, ``unet`` runs with ``hypernetwork`` applied at ``multiplier``; the hooks go afterwards."""
    handles = []
    try:
        for attention in attention_modules(unet):
            handles.append(attention.to_k.register_forward_pre_hook(_pre_hook(hypernetwork, 0, multiplier)))
            handles.append(attention.to_v.register_forward_pre_hook(_pre_hook(hypernetwork, 1, multiplier)))
        yield
    finally:
        for handle in handles:
            handle.remove()
