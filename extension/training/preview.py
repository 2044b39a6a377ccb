"""Preview pictures during training: a txt2img with the network as it is now, saved with its infotext.

As AUTOMATIC1111: the prompt is the first prompt of the current batch, 20 steps at the training size, a
random seed and the default sampler, unless the run asks for its own preview settings (or the txt2img tab's).
The network runs in eval mode at multiplier 1, from a copy of its current weights; the run's own random
draws do not depend on the preview (see :mod:`extension.training.randomness`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..hypernetwork import Hypernetwork
from ..images import save_png_as
from ..processing import Txt2ImgRequest, txt2img
from .config import TrainingConfig


class PinnedNetwork:
    """Stands in for the hypernetworks folder in a preview: ``<hypernet:NAME>`` is the network being trained
    (its file on disk is older), any other name is unknown."""

    def __init__(self, name: str, network: Hypernetwork):
        self.name, self.network = name, network

    def resolve(self, requests):
        networks, messages = [], []
        for request in requests:
            if request.name == self.name:
                networks.append((self.network, request.multiplier))
            else:
                messages.append(f"<hypernet:{request.name}>: only the network being trained applies in a preview")
        return networks, messages


def preview_request(config: TrainingConfig, batch_prompt: str, width: int, height: int) -> Txt2ImgRequest:
    """The txt2img request of a preview (the network's tag is added by :func:`make_preview`)."""
    if config.preview_from_txt2img:
        return Txt2ImgRequest(prompt=config.preview_prompt, negative_prompt=config.preview_negative_prompt,
                              steps=config.preview_steps, sampler_name=config.preview_sampler_name,
                              cfg_scale=config.preview_cfg_scale, seed=config.preview_seed,
                              width=config.preview_width or width, height=config.preview_height or height,
                              clip_skip=config.clip_skip)
    return Txt2ImgRequest(prompt=batch_prompt, steps=20, width=width, height=height, seed=-1,
                          clip_skip=config.clip_skip)


def make_preview(network: Hypernetwork, name: str, model, request: Txt2ImgRequest, path: Path):
    """Draw ``request`` with a snapshot of ``network`` at 1.0 and save it at ``path``; returns the image."""
    snapshot = Hypernetwork.from_state(network.to_state(), name=name)
    snapshot.filename, snapshot.sha256 = network.filename, network.sha256
    tagged = dataclasses.replace(request, prompt=f"{request.prompt} <hypernet:{name}:1>".strip())
    result = txt2img(tagged, model, PinnedNetwork(name, snapshot))
    image = result.images[0]
    save_png_as(image, path, result.infotexts[0])
    return image
