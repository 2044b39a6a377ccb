"""Prompt and negative prompt of different lengths: AUTOMATIC1111 runs the UNet on each alone (its default,
``pad_cond_uncond`` off); here one batch with the padding masked out of cross-attention must give the same
numbers, on SD 1.x, SD 2.x and SDXL UNets, with and without hypernetworks, in every UNet call of a txt2img.

The bound: every output element within 1e-5 of AUTOMATIC1111's separate runs (outputs are ~1; fp32 rounding of
the different batch and softmax length gives ~1e-6), while attending to the padding moves them by ~1e-2.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from builders import make_hypernetwork, tiny_pipeline
from extension.checkpoints.manager import LoadedModel
from extension.hypernetwork.attention import (ActiveHypernetworks, attention_widths, install_hypernetwork_processors,
                                              remove_hypernetwork_processors)
from extension.library import HypernetworkLibrary
from extension.processing import Txt2ImgRequest, txt2img
from extension.prompt.conditioning import ScheduledConditioning, encode, encode_texts
from extension.prompt.padding import KWARG, TextPadding

BOUND = 1e-5  # fp32 rounding, see the module docstring
LONG = " ".join(["dog"] * 80)  # two chunks: 154 tokens
LONG_PROMPT = " ".join(["a red circle"] * 30)  # 90 tokens: two chunks


def split_reference(unet, sample, timestep, context, lengths, cross_attention_kwargs, added_cond_kwargs):
    """AUTOMATIC1111's way: the negative half and the prompt half each alone, each with only its own tokens."""
    rows = sample.shape[0] // 2
    outputs = []
    for part, length in zip((slice(0, rows), slice(rows, 2 * rows)), lengths):
        added = None if added_cond_kwargs is None else {k: v[part] for k, v in added_cond_kwargs.items()}
        outputs.append(unet(sample[part], timestep, encoder_hidden_states=context[part, :length],
                            cross_attention_kwargs=cross_attention_kwargs, added_cond_kwargs=added,
                            return_dict=False)[0])
    return torch.cat(outputs)


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def family(request):
    pipe = tiny_pipeline(request.param)
    network = make_hypernetwork("padnet", sorted(attention_widths(pipe)), seed=5, activation_func="relu")
    yield request.param, pipe, network
    remove_hypernetwork_processors(pipe)


@pytest.mark.parametrize("with_network", [False, True])
@pytest.mark.parametrize("prompt,negative", [("a red circle", LONG), (LONG, "blurry")])
def test_masked_batch_is_each_text_alone(family, with_network, prompt, negative):
    name, pipe, network = family
    conditioning = encode(pipe, prompt, negative, architecture=name)
    long_first = prompt == LONG
    assert conditioning.masks_padding and conditioning.prompt_embeds.shape[1] == 154
    assert (conditioning.prompt_length, conditioning.negative_length) == ((154, 77) if long_first else (77, 154))
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    added = None
    if name == "sdxl":
        added = {"text_embeds": torch.randn(2, 32, generator=generator), "time_ids": torch.randn(2, 6, generator=generator)}
    context = torch.cat([conditioning.negative_prompt_embeds, conditioning.prompt_embeds])
    networks = {"hypernetworks": ActiveHypernetworks([(network, 0.8)] if with_network else [])}
    install_hypernetwork_processors(pipe)
    with torch.no_grad():
        masked = pipe.unet(sample, 500, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False,
                           cross_attention_kwargs={**networks, KWARG: TextPadding(1, conditioning)})[0]
        attended = pipe.unet(sample, 500, encoder_hidden_states=context, added_cond_kwargs=added,
                             cross_attention_kwargs=networks, return_dict=False)[0]
        reference = split_reference(pipe.unet, sample, 500, context,
                                    (conditioning.negative_length, conditioning.prompt_length), networks, added)
    assert (masked - reference).abs().max().item() <= BOUND
    assert (attended - reference).abs().max().item() > 1e-3  # the padding matters: the comparison can fail


# -- txt2img ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return LoadedModel(tiny_pipeline("sd1", seed=3), name="tiny-sd1", architecture="sd1", device=torch.device("cpu"),
                       dtype=torch.float32)


@pytest.fixture(scope="module")
def library(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("padding-networks")
    make_hypernetwork("padnet", sorted(attention_widths(model.pipe)), seed=6, activation_func="relu").save(
        root / "padnet.safetensors")
    return HypernetworkLibrary(root)


class CheckedUNetCalls:
    """Recomputes every UNet call of a generation AUTOMATIC1111's way (:func:`split_reference`) and keeps the
    largest difference, with the lengths each call masked to."""

    def __init__(self, unet):
        self.unet, self.worst, self.lengths, self.calls, self._inside = unet, 0.0, [], 0, False
        self._handle = unet.register_forward_hook(self._check, with_kwargs=True)

    def _check(self, module, args, kwargs, output):
        if self._inside:
            return
        self.calls += 1
        extra = dict(kwargs.get("cross_attention_kwargs") or {})
        padding = extra.pop(KWARG, None)
        context = kwargs["encoder_hidden_states"]
        lengths = padding.lengths if padding is not None else (None, None)
        lengths = tuple(context.shape[1] if n is None else n for n in lengths)
        self.lengths.append(lengths)
        self._inside = True
        try:
            reference = split_reference(module, args[0], args[1], context, lengths, extra or None,
                                        kwargs.get("added_cond_kwargs"))
        finally:
            self._inside = False
        self.worst = max(self.worst, (output[0] - reference).abs().max().item())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def generate(model, library, prompt, negative, **changes):
    values = dict(prompt=prompt, negative_prompt=negative, steps=4, width=32, height=32, seed=5, cfg_scale=6.0,
                  sampler_name="Euler a")
    values.update(changes)
    return txt2img(Txt2ImgRequest(**values), model, library)


@pytest.mark.parametrize("prompt,negative,lengths", [
    ("a red circle <hypernet:padnet:0.7>", LONG, {(154, 77)}),
    (f"{LONG_PROMPT} <hypernet:padnet:0.7>", "blurry", {(77, 154)}),
    # prompt editing: A1111 encodes a schedule's texts in one batch, so the short text gets an attended empty
    # chunk and both of the prompt's texts count 154 tokens; the negative prompt's padding is masked
    (f"[a red circle:{LONG_PROMPT}:0.5]", "blurry", {(77, 154)}),
    ("a red circle", "[blurry:" + LONG + ":2]", {(154, 77)}),
])
def test_every_unet_call_of_txt2img_is_a1111s(model, library, prompt, negative, lengths):
    with CheckedUNetCalls(model.pipe.unet) as checked:
        result = generate(model, library, prompt, negative)
    assert checked.calls == 4 and set(checked.lengths) == lengths
    assert checked.worst <= BOUND
    assert "Pad conds" not in result.infotexts[0]


def test_a_schedules_texts_are_padded_to_its_longest_as_a1111_encodes_them(model):
    pipe = model.pipe
    scheduled = ScheduledConditioning(pipe, f"[a red circle:{LONG_PROMPT}:0.5]", "blurry", 4)
    short, long_ = scheduled.at(0), scheduled.at(3)
    alone = encode_texts(pipe, ["a red circle"])[0]
    empty = encode_texts(pipe, [""])[0]
    assert short.prompt_embeds.shape[1] == long_.prompt_embeds.shape[1] == 154
    torch.testing.assert_close(short.prompt_embeds, torch.cat([alone, empty], dim=1))
    torch.testing.assert_close(long_.prompt_embeds, encode_texts(pipe, [LONG_PROMPT])[0])
    assert (short.prompt_length, short.negative_length) == (154, 77) and scheduled.masks_padding


def test_pad_cond_uncond_attends_to_the_padding_and_says_so(model, library):
    default = generate(model, library, "a red circle", LONG)
    with CheckedUNetCalls(model.pipe.unet) as checked:
        padded = generate(model, library, "a red circle", LONG, pad_cond_uncond=True)
    assert set(checked.lengths) == {(154, 154)}  # nothing masked: the empty-prompt padding is seen
    assert "Pad conds: True" in padded.infotexts[0] and "Pad conds" not in default.infotexts[0]
    assert not np.array_equal(np.asarray(default.images[0]), np.asarray(padded.images[0]))
    assert Txt2ImgRequest.from_infotext(padded.infotexts[0]).pad_cond_uncond is True
    assert Txt2ImgRequest.from_infotext(default.infotexts[0]).pad_cond_uncond is None  # the setting decides
    same_length = generate(model, library, "a red circle", "blurry", pad_cond_uncond=True)
    assert "Pad conds" not in same_length.infotexts[0]  # A1111 writes it only when it padded


def test_text_padding_rows_follow_the_cfg_batch():
    conditioning = encode_padding_lengths(prompt=77, negative=154)
    padding = TextPadding(2, conditioning)
    mask = padding.mask(torch.zeros(4, 154, 8))
    assert mask.shape == (4, 1, 154)
    assert (mask[:2] == 0).all()  # the negative rows see all 154 tokens
    assert (mask[2:, :, :77] == 0).all() and torch.isinf(mask[2:, :, 77:]).all()  # the prompt rows only 77
    assert padding.mask(torch.zeros(2, 154, 8))[:, :, 77:].isinf().all()  # guidance off: prompt rows only
    padding.follow(encode_padding_lengths(prompt=None, negative=None))
    assert padding.mask(torch.zeros(4, 154, 8)) is None
    with pytest.raises(ValueError, match="3 rows"):
        padding.mask(torch.zeros(3, 154, 8))


def encode_padding_lengths(prompt, negative):
    from extension.prompt.conditioning import Conditioning

    return Conditioning(torch.zeros(1, 154, 8), torch.zeros(1, 154, 8), prompt_length=prompt, negative_length=negative)
