"""Hypernetworks as attention patches on a UNet patcher: the per-generation contract of the Forge family.

Forge, Forge Neo, Forge Classic, reForge (and ComfyUI) run a UNet through a *patcher* whose ``clone()`` shares
the weights and copies the options, and whose ``set_model_attn1_patch`` / ``set_model_attn2_patch`` add a
callable ``f(n, context, value, extra_options) -> (n, context, value)`` that runs before every self- and
cross-attention's ``to_q`` / ``to_k`` / ``to_v``: ``to_k`` reads ``context`` and ``to_v`` reads ``value``
(``../shared/hosts/README.md`` has the file and line in each host).

:class:`HypernetworkAttentionPatch` is AUTOMATIC1111's ``apply_hypernetworks`` in that shape: each network's K
module rewrites ``context``, its V module ``value``, chosen by the context's width, several networks chained in
prompt order (K into K, V into V); ``n`` (what ``to_q`` reads) is untouched. :func:`with_hypernetworks` puts it
on a clone, so the host's own patcher, and every generation without a tag, stay as they were.

Nothing here imports a host: only torch and the core.
"""
from __future__ import annotations

import threading
from typing import Sequence

import torch

from ..hypernetwork import Hypernetwork
from ..hypernetwork.attention import ActiveHypernetworks


class HypernetworkAttentionPatch:
    """One generation's networks, as an attention patch.

    Args:
        networks: ``(network, multiplier)`` pairs in prompt order (the library's shared objects: never changed
            here; device and precision copies come from ``Hypernetwork.for_inference``).
        memo: remember the transformed context by tensor identity (:meth:`ActiveHypernetworks.transform_cached`).
            Right for cross-attention, where every layer of a UNet call reads the same text context; wasted
            on self-attention, whose context is new at every call.
    """

    def __init__(self, networks: Sequence[tuple[Hypernetwork, float]], memo: bool):
        self.networks = tuple((network, float(multiplier)) for network, multiplier in networks)
        self.memo = memo
        self._widths = frozenset(w for network, m in self.networks if m != 0 for w in network.layers)
        self._placed: dict[tuple[str, torch.dtype], ActiveHypernetworks] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "HypernetworkAttentionPatch":
        # The host's clone() deep-copies its options: a clone shares this object (the networks are read-only
        # here) instead of copying every module on each clone.
        return self

    def to(self, device) -> "HypernetworkAttentionPatch":
        """The host moves patches with the model; networks are placed lazily, by the tensors a call brings."""
        return self

    def touches(self, width: int) -> bool:
        return width in self._widths

    def active_for(self, context: torch.Tensor) -> ActiveHypernetworks:
        """The networks placed on ``context``'s device in its dtype (made once per device and dtype)."""
        key = (str(context.device), context.dtype)
        active = self._placed.get(key)
        if active is None:
            with self._lock:
                active = self._placed.get(key)
                if active is None:
                    with torch.inference_mode(False):  # copies the library can keep (not inference tensors)
                        placed = [(network.for_inference(context.device, context.dtype), m)
                                  for network, m in self.networks]
                    active = self._placed[key] = ActiveHypernetworks(placed)
        return active

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options=None):
        if context is None or not self.touches(context.shape[-1]):
            return n, context, value
        active = self.active_for(context)
        if value is context:
            context_k, context_v = active.transform_cached(context) if self.memo else active.transform(context)
            return n, context_k, context_v
        # An earlier patch gave K and V different inputs: each chain continues from its own.
        context_k, context_v = context, value
        for network, multiplier in active.networks:
            context_k, context_v = network.apply(context_k, context_v, multiplier)
        return n, context_k, context_v

    def __repr__(self) -> str:
        return f"HypernetworkAttentionPatch({[(n.name, m) for n, m in self.networks]}, memo={self.memo})"


def with_hypernetworks(unet_patcher, networks: Sequence[tuple[Hypernetwork, float]]):
    """A clone of ``unet_patcher`` that applies ``networks`` in self- and cross-attention.

    Args:
        unet_patcher: the host's UNet patcher (anything with ``clone``, ``set_model_attn1_patch`` and
            ``set_model_attn2_patch``); it is not changed.
        networks: ``(network, multiplier)`` pairs in prompt order.

    Returns:
        The clone, or ``unet_patcher`` itself when no network has a non-zero multiplier.
    """
    networks = [(network, m) for network, m in networks if m != 0]
    if not networks:
        return unet_patcher
    unet = unet_patcher.clone()
    unet.set_model_attn1_patch(HypernetworkAttentionPatch(networks, memo=False))
    unet.set_model_attn2_patch(HypernetworkAttentionPatch(networks, memo=True))
    return unet


def has_hypernetwork_patch(unet_patcher) -> bool:
    """Whether ``unet_patcher`` already carries a :class:`HypernetworkAttentionPatch` (so it is not added twice
    when a host calls the per-sampling hook twice without resetting its UNet)."""
    patches = getattr(unet_patcher, "model_options", {}).get("transformer_options", {}).get("patches", {})
    return any(isinstance(p, HypernetworkAttentionPatch) for name in ("attn1_patch", "attn2_patch")
               for p in patches.get(name, ()))
