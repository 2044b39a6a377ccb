"""The always-on script that applies a generation's hypernetworks, as attention patches on a clone of the UNet.

The host resets ``p.sd_model.forge_objects`` before every sampling (first pass and hires pass), so a patch set
earlier would be lost; ``process_before_every_sampling`` runs right after each reset. It clones the current UNet
patcher, adds :class:`~extension.hosts.unet_patch.HypernetworkAttentionPatch` and hands the clone to this
generation only (``p.sd_model.forge_objects`` is the generation's shallow copy). With no tag it does nothing at
all, so the host's image is bit-identical to the host without the extension.
"""
from __future__ import annotations

from modules import scripts

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
        if has_hypernetwork_patch(forge_objects.unet):
            return  # called twice without a reset of the UNet in between: the patch is on already
        forge_objects.unet = with_hypernetworks(forge_objects.unet, networks)
