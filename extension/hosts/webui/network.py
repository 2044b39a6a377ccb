"""The ``hypernet`` extra network inside a host: ``<hypernet:NAME:M>`` tags -> loaded networks on ``p``.

The host parses the tags out of the prompt and calls :meth:`HypernetworkExtraNetwork.activate` with them for every
batch (and again for the hires pass). What the tags ask for is resolved by the core (the tag grammar of
:mod:`extension.prompt.tags`, the library's loading and messages) and kept on the processing object ``p``, which
is this generation's alone; the per-sampling script (:mod:`.script`) reads it from there in the Forge family. In
AUTOMATIC1111, which has no per-sampling UNet patcher, they also fill the host's ``shared.loaded_hypernetworks``
for the pass, which its attention applies (:mod:`extension.hosts.a1111_attention`). Problems (an unknown
name, a bad multiplier, a file that does not load, a network that does not fit the model) are reported as the
host reports them: a comment under the image, a warning in the console and a toast in the page; the image is
still made.
"""
from __future__ import annotations

import logging

import torch
from modules import extra_networks, shared

from ...hypernetwork.attention import compatibility_messages
from ...infotext import hypernet_hashes
from ...prompt.tags import HYPERNET, NetworkTag, hypernetwork_requests
from ..a1111_attention import loaded_entries
from ..detect import A1111, running_host
from . import folder, model

log = logging.getLogger(__name__)

# Where one generation's networks travel: an attribute of the host's processing object.
P_ATTRIBUTE = "hypernetworks_to_apply"
HASHES_FIELD = "Hypernet hashes"


def networks_of(p) -> tuple:
    """The ``(network, multiplier)`` pairs the current pass of ``p`` applies (empty when none)."""
    return getattr(p, P_ATTRIBUTE, ())


def report(p, message: str) -> None:
    """A problem with a tag, told the way the host tells them."""
    log.warning("hypernetworks: %s", message)
    p.comment(message)
    try:
        import gradio as gr

        gr.Warning(message)
    except Exception:  # noqa: BLE001 - outside a page request there is no toast to show
        pass


class HypernetworkExtraNetwork(extra_networks.ExtraNetwork):
    """The host's ``hypernet`` handler (it replaces the built-in one, which applies nothing in Forge)."""

    def __init__(self):
        super().__init__(HYPERNET)

    def activate(self, p, params_list):
        params_list = list(params_list)
        add_to_prompt(p, params_list)
        tags = [NetworkTag(HYPERNET, tuple(str(item) for item in params.items),
                           "<hypernet:" + ":".join(str(item) for item in params.items) + ">")
                for params in params_list]
        requests, messages = hypernetwork_requests(tags)
        library = folder.library()
        named = []  # (name as tagged, network, multiplier), in prompt order
        for request in requests:
            with torch.inference_mode(False):  # the host generates under inference mode; the library's cached
                loaded, problems = library.resolve([request])  # networks must stay ordinary tensors
            messages += problems
            named += [(request.name, network, multiplier) for network, multiplier in loaded]
        widths = model.attention_widths(p.sd_model)
        if widths:
            checkpoint, shorthash = model.checkpoint_name_and_hash(p.sd_model)
            for network in dict.fromkeys(network for _, network, _ in named):
                messages += compatibility_messages(network, widths, checkpoint_name=checkpoint,
                                                   checkpoint_hash=shorthash)
        setattr(p, P_ATTRIBUTE, tuple((network, multiplier) for _, network, multiplier in named))
        if running_host() == A1111:  # no UNet patcher there: its attention reads the host's list
            set_loaded_hypernetworks(networks_of(p))
        hashes = hypernet_hashes((name, network.shorthash()) for name, network, _ in named)
        if hashes:
            p.extra_generation_params[HASHES_FIELD] = hashes
        else:
            p.extra_generation_params.pop(HASHES_FIELD, None)
        for message in dict.fromkeys(messages):
            report(p, message)

    def deactivate(self, p):
        if running_host() == A1111:
            set_loaded_hypernetworks(())


def set_loaded_hypernetworks(networks) -> None:
    """AUTOMATIC1111: the list its attention layers apply (``shared.loaded_hypernetworks``), filled in place as its
    own handler does (:mod:`extension.hosts.a1111_attention`)."""
    shared.loaded_hypernetworks[:] = loaded_entries(networks)


def add_to_prompt(p, params_list: list) -> None:
    """AUTOMATIC1111's "Add hypernetwork to prompt" (``sd_hypernetwork``): the chosen network, at the default
    multiplier, is added to every prompt (and to the infotext) unless a tag already names it."""
    chosen = getattr(shared.opts, "sd_hypernetwork", "None") or "None"
    if chosen == "None":
        return
    if any(params.items and params.items[0] == chosen for params in params_list):
        return
    if folder.library().get(chosen) is None:
        report(p, f'Setting "Add hypernetwork to prompt" names {chosen!r}, which is not in the folder.')
        return
    multiplier = shared.opts.data.get("extra_networks_default_multiplier", 1.0)
    tag = f"<{HYPERNET}:{chosen}:{multiplier}>"  # as AUTOMATIC1111 writes it (1.0, not 1): infotexts match
    p.all_prompts = [f"{prompt}{tag}" for prompt in p.all_prompts]
    params_list.append(extra_networks.ExtraNetworkParams(items=[chosen, str(multiplier)]))
