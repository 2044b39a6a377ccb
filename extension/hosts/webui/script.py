"""The always-on script that applies a generation's hypernetworks, as attention patches on a clone of the UNet.

The host resets ``p.sd_model.forge_objects`` before every sampling (first pass and hires pass), so a patch set
earlier would be lost; ``process_before_every_sampling`` runs right after each reset. It clones the current UNet
patcher, adds :class:`~extension.hosts.unet_patch.HypernetworkAttentionPatch` and hands the clone to this
generation only (``p.sd_model.forge_objects`` is the generation's shallow copy). With no tag it does nothing at
all, so the host's image is bit-identical to the host without the extension. Networks that are all affine are
folded into the K/V projections instead (:mod:`~extension.hosts.unet_fold`), which costs nothing per call.
"""
from __future__ import annotations

from modules import scripts

from ..unet_fold import all_affine, has_folded_projections, with_folded_hypernetworks
from ..unet_patch import has_hypernetwork_patch, with_hypernetworks
from .network import networks_of


class HypernetworkScript(scripts.Script):
    sorting_priority = 0

    def title(self):
        return "Hypernetworks"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return []

    def process_before_every_sampling(self, p, *args, **kwargs):
        networks = networks_of(p)
        forge_objects = getattr(p.sd_model, "forge_objects", None)
        if not networks or forge_objects is None:
            return
        unet = forge_objects.unet
        if has_hypernetwork_patch(unet) or has_folded_projections(unet):
            return  # called twice without a reset of the UNet in between: the patch is on already
        networks = [(network, m) for network, m in networks if m != 0]
        folded = with_folded_hypernetworks(unet, networks) if all_affine(networks) else None
        forge_objects.unet = folded if folded is not None else with_hypernetworks(unet, networks)
