"""AUTOMATIC1111's way of applying hypernetworks, as the reference that tests and benchmarks compare against.

Forward pre-hooks on every attention's ``to_k`` and ``to_v``: the context each reads is replaced by the
chain of the networks' K (or V) modules for the context's width, in order, at every call. That is what
AUTOMATIC1111's ``apply_hypernetworks`` computes inside its attention forward, in self- and cross-attention
alike, with no caching and no folding. The project itself applies networks through
:mod:`extension.hypernetwork.attention` (or, in a host, :mod:`extension.hosts.unet_patch`) only; outside tests and
``bench/`` only :func:`attention_modules` is used (the host wing reads a host UNet's attention widths with it).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch

from .modules import Hypernetwork


def attention_modules(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """Every attention of ``unet``: anything whose ``to_k`` and ``to_v`` are linear layers (modules with an
    ``in_features``: ``torch.nn.Linear``, or a host's own linear class, such as Forge's, which is not a subclass).

    Args:
        unet: a diffusers UNet, a host's UNet, or any module.

    Returns:
        The attention modules, in ``unet.modules()`` order.
    """
    return [module for module in unet.modules() if is_projection(getattr(module, "to_k", None))
            and is_projection(getattr(module, "to_v", None))]


def is_projection(layer) -> bool:
    return isinstance(layer, torch.nn.Module) and isinstance(getattr(layer, "in_features", None), int)


def _pre_hook(networks: tuple[tuple[Hypernetwork, float], ...], which: int):
    def hook(module: torch.nn.Module, args: tuple):
        context = args[0]
        for network, multiplier in networks:
            pair = network.layers.get(context.shape[-1])
            if pair is not None:
                context = pair[which](context, multiplier)
        return (context, *args[1:])

    return hook


@contextlib.contextmanager
def a1111_hooks(unet: torch.nn.Module, networks: Iterable[tuple[Hypernetwork, float]]) -> Iterator[None]:
    """Within the block, ``unet`` runs with ``networks`` (``(network, multiplier)`` pairs, chained in order)
    applied AUTOMATIC1111's way; the hooks go afterwards.

    Args:
        unet: a diffusers UNet (or any module whose attentions have ``to_k``/``to_v`` Linears).
        networks: the networks and multipliers, in prompt order.
    """
    networks = tuple(networks)
    handles = []
    try:
        for attention in attention_modules(unet):
            handles.append(attention.to_k.register_forward_pre_hook(_pre_hook(networks, 0)))
            handles.append(attention.to_v.register_forward_pre_hook(_pre_hook(networks, 1)))
        yield
    finally:
        for handle in handles:
            handle.remove()
