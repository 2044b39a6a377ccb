"""Hypernetworks the way AUTOMATIC1111's attention reads them: entries of its ``shared.loaded_hypernetworks``.

AUTOMATIC1111 has no per-generation UNet patcher. Every attention variant it has (``sd_hijack_optimizations``)
calls ``apply_hypernetworks(shared.loaded_hypernetworks, context, layer)`` at call time, and each entry there needs
``.layers[width] = (k_module, v_module)``, callables ``x -> x + mlp(x) * multiplier`` (its own
``HypernetworkModule`` keeps the multiplier in a class attribute, shared by every network). :class:`LoadedHypernetwork`
is such an entry for one of this project's networks, with the generation's multiplier bound to it: the modules are
the core's (:class:`~extension.hypernetwork.modules.HypernetworkModule`, the same operations in the same order, so
a ``.pt`` file gives AUTOMATIC1111's numbers), placed on the call's device and dtype lazily and never changed.

The list is the host's one global: it is filled when a generation's ``hypernet`` handler activates (every batch and
the hires pass) and emptied when it deactivates, inside the host's queue lock, as the host's own handler does.

Nothing here imports a host: only torch and the core.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..hypernetwork import Hypernetwork
from .unet_patch import HypernetworkAttentionPatch


class BoundModule(torch.nn.Module):
    """One network's K or V module at one width, with its multiplier: ``x -> x + mlp(x) * multiplier``.

    A module (with no parameters of its own) because AUTOMATIC1111 assigns it to every attention layer it runs
    through (``layer.hyper_k = ...``), where a module may already be registered under that name."""

    def __init__(self, placement: HypernetworkAttentionPatch, index: int, width: int, which: int):
        super().__init__()
        object.__setattr__(self, "placement", placement)  # not a child: its networks are the library's
        self.index, self.width, self.which = index, width, which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        network, multiplier = self.placement.active_for(x).networks[self.index]
        return network.layers[self.width][self.which](x, multiplier)


class LoadedHypernetwork:
    """An entry of AUTOMATIC1111's ``shared.loaded_hypernetworks``: ``name``, ``multiplier`` and ``layers``."""

    def __init__(self, network: Hypernetwork, multiplier: float, placement: HypernetworkAttentionPatch, index: int):
        self.name = network.name
        self.filename = getattr(network, "filename", None)
        self.multiplier = float(multiplier)
        self.layers = {width: (BoundModule(placement, index, width, 0), BoundModule(placement, index, width, 1))
                       for width in network.layers}

    def __repr__(self) -> str:
        return f"LoadedHypernetwork({self.name!r}, {self.multiplier})"


def loaded_entries(networks: Sequence[tuple[Hypernetwork, float]]) -> list[LoadedHypernetwork]:
    """The entries for ``networks`` (``(network, multiplier)`` pairs in prompt order; zero multipliers left out,
    which AUTOMATIC1111 computes to the same context)."""
    networks = [(network, float(m)) for network, m in networks if m != 0]
    placement = HypernetworkAttentionPatch(networks, memo=False)  # one device copy per network, shared by entries
    return [LoadedHypernetwork(network, m, placement, index) for index, (network, m) in enumerate(networks)]
