"""Affine hypernetworks folded into a host UNet's K/V projections, per generation, as object patches on a clone.

A network without activation or layer norm is an affine map ``x -> x + m * (M x + c)``; a chain of them at one
width is one such map, and the projection after it absorbs it: ``W (x + D x + c) + b = (W + W D) x + (W c + b)``
(:mod:`extension.hypernetwork.folding`). In a host, the attention patch of :mod:`extension.hosts.unet_patch` runs
the chain on every token of every self-attention call; folded, a call costs what the bare UNet's does.

The Forge family has one per-clone way to change what a module computes: *object patches*
(``patcher.add_object_patch(name, obj)``), set on the model while that clone is loaded and put back when another
clone loads (``forge_unpatch_model`` / ``unpatch_model``, which every generation without the clone triggers). Each
affected ``to_k`` / ``to_v`` is patched with a :class:`FoldedProjection`: a shallow copy of the host's own layer
that shares its parameters (same ``state_dict`` keys, moved and LoRA-patched with the model), whose forward
computes ``F.linear(x, W', b')``. ``W'`` is made at the first call from the weights as they are then (after any
LoRA merge), kept while they stay the same, and never written to the model.

A layer whose weights the host casts per call (low-VRAM swapping, fp8 or quantized storage: weight and input differ
in device or dtype, or the host's per-call flags are set on it, online LoRA included) runs the chain before the
host's own forward instead, which is exact. The host sets such flags on the copy it sees; they are honoured there
and written through to its own layer. Networks with any
non-affine module, or a patcher that lacks object patches, keep the attention patch.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..hypernetwork import Hypernetwork
from ..hypernetwork.reference import is_projection
from .unet_patch import HypernetworkAttentionPatch

K, V = 0, 1


def all_affine(networks: Sequence[tuple[Hypernetwork, float]]) -> bool:
    """Whether every network is affine at inference (no activation, no layer norm), so its chains fold."""
    return bool(networks) and all(network.config.is_affine for network, _ in networks)


# Per-call behaviours a host sets on a layer: its weights cast (and moved) at every call, fp8 scaling, LoRA applied
# at call time. Such a layer runs the chain before the host's own forward, which honours them, instead of folding.
HOST_CALL_TIME_FLAGS = ("parameters_manual_cast", "ldm_patched_cast_weights", "forge_online_loras", "scale_weight")


def _plain_weight(layer, x: torch.Tensor) -> bool:
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or type(weight) not in (torch.Tensor, torch.nn.Parameter):
        return False  # a host's quantized or wrapped tensor type
    if any(getattr(layer, flag, None) for flag in HOST_CALL_TIME_FLAGS):
        return False
    bias = getattr(layer, "bias", None)
    return weight.device == x.device and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)


class _HostForward:
    """What :meth:`FoldedProjections.project` plans against for one folded layer: its weights (the host's,
    shared), and the host's own forward on it for the modes that do not fold."""

    def __init__(self, layer):
        self.layer = layer

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def __call__(self, x):
        return self.layer.host_forward(x)


class FoldedProjection:
    """Mixed into a copy of a host's linear layer (:func:`folded_projection`): its forward is
    ``host_layer(chain(x))``, computed by the folded weights where the host's weights allow.

    The copy is what the host sees while the clone is loaded: flags it sets on it (per-call casting, online LoRA)
    are honoured here and written through to the host's own layer, which is put back afterwards.
    """

    hn_original: torch.nn.Module
    hn_placement: HypernetworkAttentionPatch
    hn_which: int
    hn_host: _HostForward

    def host_forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # the host's class, on this copy (its flags, its shared weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        placement, which = self.hn_placement, self.hn_which
        if not placement.touches(x.shape[-1]):
            return self.host_forward(x)
        active = placement.active_for(x)
        if _plain_weight(self, x) and active.folds.usable():
            return active.folds.project(self.hn_host, x, which)
        for network, multiplier in active.networks:  # the exact chain, then the host's own forward
            pair = network.layers.get(x.shape[-1])
            if pair is not None:
                x = pair[which](x, multiplier)
        return self.host_forward(x)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if not name.startswith("hn_"):
            setattr(self.hn_original, name, value)

    def __delattr__(self, name):
        super().__delattr__(name)
        if not name.startswith("hn_") and hasattr(self.hn_original, name):
            delattr(self.hn_original, name)


_classes: dict[type, type] = {}


def folded_projection(original: torch.nn.Module, placement: HypernetworkAttentionPatch, which: int):
    """A shallow copy of the host's ``original`` layer (parameters shared) that projects ``chain(x)`` by the
    folded weights; ``which`` is :data:`K` or :data:`V`."""
    host_class = type(original)
    folded_class = _classes.get(host_class)
    if folded_class is None:
        folded_class = _classes[host_class] = type(f"Folded{host_class.__name__}", (FoldedProjection, host_class), {})
    layer = copy.copy(original)  # shares _parameters, _buffers and _modules with the original
    for attribute, value in (("hn_original", original), ("hn_placement", placement), ("hn_which", which)):
        object.__setattr__(layer, attribute, value)  # plain attributes: no child module, the state_dict keys stay
    object.__setattr__(layer, "hn_host", _HostForward(layer))  # one per layer: the fold's plan is kept by identity
    layer.__class__ = folded_class
    return layer


def fold_patches(diffusion_model: torch.nn.Module, networks: Sequence[tuple[Hypernetwork, float]],
                 prefix: str = "diffusion_model.") -> dict[str, torch.nn.Module]:
    """``{object patch name: FoldedProjection}`` for every ``to_k`` / ``to_v`` whose width a network has."""
    placement = HypernetworkAttentionPatch(networks, memo=False)
    patches = {}
    for name, module in diffusion_model.named_modules():
        to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
        if not (is_projection(to_k) and is_projection(to_v)):
            continue
        for which, attribute, layer in ((K, "to_k", to_k), (V, "to_v", to_v)):
            # The previous generation's clone may still be loaded, its layers set on the model: wrap the host's own
            while isinstance(layer, FoldedProjection):
                layer = layer.hn_original
            if placement.touches(layer.in_features):
                patches[f"{prefix}{name}.{attribute}"] = folded_projection(layer, placement, which)
    return patches


def with_folded_hypernetworks(unet_patcher, networks: Sequence[tuple[Hypernetwork, float]]):
    """A clone of ``unet_patcher`` with ``networks`` (all affine) folded into its K/V projections, or None when
    this patcher cannot take object patches (or another extension patches the same layers already)."""
    diffusion_model = getattr(getattr(unet_patcher, "model", None), "diffusion_model", None)
    if not isinstance(diffusion_model, torch.nn.Module) or not hasattr(unet_patcher, "add_object_patch"):
        return None
    patches = fold_patches(diffusion_model, networks)
    taken = getattr(unet_patcher, "object_patches", {})
    if not patches or any(name in taken for name in patches):
        return None
    unet = unet_patcher.clone()
    for name, layer in patches.items():
        unet.add_object_patch(name, layer)
    return unet


def has_folded_projections(unet_patcher) -> bool:
    return any(isinstance(obj, FoldedProjection) for obj in getattr(unet_patcher, "object_patches", {}).values())
