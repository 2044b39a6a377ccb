"""txt2img: A1111 prompt conditioning, seeds, hypernetworks per call, messages, infotexts, files, interrupt."""
from __future__ import annotations

import copy
import hashlib
import os
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from extension.demo.architecture import ATTENTION_WIDTHS, CROSS_ATTENTION_DIM, build_random_pipeline
from extension.jobs import Job
from extension.library import HypernetworkLibrary
from extension.checkpoints.manager import LoadedModel
from extension.images import next_sequence_number
from extension.processing import Txt2ImgRequest, txt2img
from extension.prompt.conditioning import (apply_emphasis, encode_prompt, encode_sd, EncoderLayer, parse_prompt_attention,
                                     tokenize_prompt)
from extension.tokenizer import clip_tokenizer
from builders import make_hypernetwork, tiny_sdxl_pipeline

BOS, EOS = 49406, 49407
CAT, DOG, COMMA = 2368, 1929, 267


# -- prompt emphasis (A1111's own doctest cases) -------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
    ("[unbalanced", [("unbalanced", 0.9090909090909091)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("", [("", 1.0)]),
    ("\\\\", [("\\", 1.0)]),
])
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def test_short_prompt_is_one_chunk(tokenizer):
    chunks, count = tokenize_prompt(tokenizer, "a photo of a cat")
    assert count == 5 and len(chunks) == 1
    assert chunks[0].tokens[:7] == [BOS, 320, 1125, 539, 320, CAT, EOS] and len(chunks[0].tokens) == 77
    assert chunks[0].tokens[7:] == [EOS] * 70 and chunks[0].multipliers == [1.0] * 77


def test_weights_follow_tokens(tokenizer):
    chunks, _ = tokenize_prompt(tokenizer, "(cat:1.5) [dog]")
    assert chunks[0].tokens[:4] == [BOS, CAT, DOG, EOS]
    assert chunks[0].multipliers[:4] == [1.0, 1.5, 1 / 1.1, 1.0]


def test_long_prompts_are_chunked_by_75(tokenizer):
    chunks, count = tokenize_prompt(tokenizer, " ".join(["cat"] * 100))
    assert count == 100 and len(chunks) == 2
    assert chunks[0].tokens == [BOS] + [CAT] * 75 + [EOS]
    assert chunks[1].tokens == [BOS] + [CAT] * 25 + [EOS] * 51


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(tokenizer):
    chunks, _ = tokenize_prompt(tokenizer, " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10))
    assert chunks[0].tokens[1:72] == [CAT] * 70 + [COMMA] and chunks[0].tokens[72:] == [EOS] * 5
    assert chunks[1].tokens[1:12] == [DOG] * 10 + [EOS]


def test_break_starts_a_new_chunk(tokenizer):
    chunks, _ = tokenize_prompt(tokenizer, "cat BREAK dog")
    assert len(chunks) == 2 and chunks[0].tokens[:3] == [BOS, CAT, EOS] and chunks[1].tokens[:3] == [BOS, DOG, EOS]


@pytest.fixture(scope="module")
def pipe():
    return build_random_pipeline(seed=0)


@pytest.fixture(scope="module")
def biased_encoder(pipe):
    """The demo text encoder with a non-zero final-layer-norm bias, so chunk means are not ~0 (as in real CLIP)."""
    encoder = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        encoder.final_layer_norm.bias.normal_(0.3, 0.2, generator=torch.Generator().manual_seed(0))
    return encoder


def ids(tokens):
    return torch.tensor([tokens])


def test_plain_prompt_equals_diffusers_encoding(pipe, tokenizer):
    ours, _ = encode_prompt(pipe.text_encoder, tokenizer, "a photo of a cat")
    theirs, _ = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)
    assert ours.shape == (1, 77, CROSS_ATTENTION_DIM)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_clip_skip_is_a1111s(pipe, tokenizer):
    chunks, _ = tokenize_prompt(tokenizer, "a photo of a cat")
    with torch.no_grad():
        out = pipe.text_encoder(ids(chunks[0].tokens), output_hidden_states=True)
        expected = pipe.text_encoder.final_layer_norm(out.hidden_states[-2])
    ours, _ = encode_prompt(pipe.text_encoder, tokenizer, "a photo of a cat", EncoderLayer(skip=2))
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, encode_prompt(pipe.text_encoder, tokenizer, "a photo of a cat")[0])


def test_emphasis_scales_tokens_and_restores_the_mean(biased_encoder, tokenizer):
    plain, _ = encode_prompt(biased_encoder, tokenizer, "a cat")
    weighted, _ = encode_prompt(biased_encoder, tokenizer, "a (cat:1.5)")
    multipliers = torch.ones(1, 77)
    multipliers[0, 2] = 1.5
    expected = plain * multipliers.unsqueeze(-1)
    expected = expected * (plain.mean() / expected.mean())
    torch.testing.assert_close(weighted, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted.mean(), plain.mean(), atol=1e-6, rtol=1e-5)


def test_emphasis_formula_per_chunk():
    z = torch.randn(2, 77, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    multipliers = torch.ones(2, 77)
    multipliers[1, 5] = 2.0
    out = apply_emphasis(z, multipliers)
    torch.testing.assert_close(out[0], z[0])  # chunk means restored one chunk at a time
    expected = z[1] * multipliers[1].unsqueeze(-1)
    torch.testing.assert_close(out[1], expected * (z[1].mean() / expected.mean()))


def test_long_prompt_concatenates_chunk_encodings(biased_encoder, tokenizer):
    text = " ".join(["cat"] * 100)
    ours, _ = encode_prompt(biased_encoder, tokenizer, text)
    assert ours.shape == (1, 154, CROSS_ATTENTION_DIM)
    chunks, _ = tokenize_prompt(tokenizer, text)
    with torch.no_grad():
        first = biased_encoder(ids(chunks[0].tokens)).last_hidden_state
        second = biased_encoder(ids(chunks[1].tokens)).last_hidden_state
    torch.testing.assert_close(ours[:, :77], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:, 77:], second, atol=1e-5, rtol=1e-5)


def test_negative_and_positive_are_padded_to_the_same_length(pipe):
    cond = encode_sd(pipe, "cat", " ".join(["dog"] * 80))
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 154, CROSS_ATTENTION_DIM)
    cat, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, "cat")
    dogs, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, " ".join(["dog"] * 80))
    empty, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, "")
    torch.testing.assert_close(cond.prompt_embeds[:, :77], cat)  # the prompt, then A1111's empty-prompt chunk
    torch.testing.assert_close(cond.prompt_embeds[:, 77:], empty)
    torch.testing.assert_close(cond.negative_prompt_embeds, dogs)


def test_sd2_pads_with_its_pad_token_after_the_end():
    from extension.prompt.conditioning import TokenizerSpec, _pad_after_end

    sd2_tokenizer = clip_tokenizer("!")
    chunks, _ = tokenize_prompt(sd2_tokenizer, "a cat")
    padded = _pad_after_end(chunks[0].tokens, TokenizerSpec.of(sd2_tokenizer))
    assert padded[:4] == [BOS, 320, CAT, EOS] and padded[4:] == [0] * 73


# -- txt2img ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("hypernetworks")
    make_hypernetwork("style", ATTENTION_WIDTHS, seed=1).save(root / "style.pt")
    make_hypernetwork("other", ATTENTION_WIDTHS, seed=2).save(root / "other.safetensors")
    sd1 = make_hypernetwork("sd1net", (768, 320, 640, 1280), seed=3)
    sd1.sd_checkpoint, sd1.sd_checkpoint_name = "0123456789", "v1-5"
    sd1.save(root / "sd1net.pt")
    trained_elsewhere = make_hypernetwork("elsewhere", ATTENTION_WIDTHS, seed=4)
    trained_elsewhere.sd_checkpoint, trained_elsewhere.sd_checkpoint_name = "9999999999", "another-model"
    trained_elsewhere.save(root / "elsewhere.pt")
    return HypernetworkLibrary(root)


@pytest.fixture(scope="module")
def model(pipe):
    return LoadedModel(pipe, name="demo-random", architecture="demo", device=torch.device("cpu"), dtype=torch.float32,
                       hasher=lambda: "ab" * 32)


def request(prompt="a red circle", **changes):
    values = dict(prompt=prompt, negative_prompt="blurry", steps=3, width=32, height=32, seed=11, cfg_scale=5.0)
    values.update(changes)
    return Txt2ImgRequest(**values)


def short_hash(library, name):
    """The first 10 hex digits of the file's sha256, read from the file (AUTOMATIC1111's short hash)."""
    return hashlib.sha256(library.get(name).path.read_bytes()).hexdigest()[:10]


def pixels(result):
    return [np.asarray(image) for image in result.images]


def same_images(a, b):
    assert a.images and b.images, "no images to compare"  # two empty results would be "the same"
    return len(a.images) == len(b.images) and all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b)))


def test_same_seed_and_settings_give_the_same_image(model, library):
    first = txt2img(request(), model, library)
    assert first.messages == [] and first.seeds == [11] and first.images[0].size == (32, 32)
    assert same_images(first, txt2img(request(), model, library))
    assert not same_images(first, txt2img(request(seed=12), model, library))


def test_multiplier_zero_is_the_image_without_the_tag_and_the_tag_changes_it(model, library):
    without = txt2img(request(), model, library)
    zero = txt2img(request("a red circle <hypernet:style:0>"), model, library)
    assert zero.messages == [] and same_images(without, zero)
    with_tag = txt2img(request("a red circle <hypernet:style:1>"), model, library)
    assert not same_images(without, with_tag)
    assert with_tag.hypernetworks == [("style", 1.0)]
    assert f'Hypernet hashes: "style: {short_hash(library, "style")}"' in with_tag.infotexts[0]
    assert with_tag.infotexts[0].startswith("a red circle <hypernet:style:1>\nNegative prompt: blurry\n")
    stacked = txt2img(request("a red circle <hypernet:style:0.7> <hypernet:other:-0.4>"), model, library)
    assert not same_images(with_tag, stacked) and stacked.hypernetworks == [("style", 0.7), ("other", -0.4)]
    assert (f'Hypernet hashes: "style: {short_hash(library, "style")}, other: {short_hash(library, "other")}"'
            in stacked.infotexts[0])


def test_problems_become_messages_and_the_image_is_still_made(model, library):
    result = txt2img(request("a red circle <hypernet:nosuch> <hypernet:style:abc> <lora:x:1> <hypernet:sd1net>"
                             " <hypernet:elsewhere:0.5>"), model, library)
    assert len(result.images) == 1
    text = "\n".join(result.messages)
    assert "nosuch" in text and "abc" in text and "lora" in text
    assert "sd1net" in text and "no effect" in text
    assert "elsewhere" in text and "another-model" in text
    assert result.hypernetworks == [("sd1net", 1.0), ("elsewhere", 0.5)]


def test_without_a_library_tags_are_ignored_with_a_message(model):
    result = txt2img(request("a red circle <hypernet:style>"), model, None)
    assert len(result.images) == 1 and "ignored" in result.messages[0]


def test_seeds_batches_files_and_infotexts(model, library, tmp_path):
    steps_seen = []
    result = txt2img(request("a red circle <hypernet:style:0.5>", batch_size=2, n_iter=2, seed=100), model, library,
                     outdir=tmp_path, progress=lambda step, total: steps_seen.append((step, total)))
    assert result.seeds == [100, 101, 102, 103] and len(result.images) == 4
    assert steps_seen == [(i, 6) for i in range(1, 7)]
    folder = result.paths[0].parent
    assert folder.parent.name == "txt2img-images" and len(folder.name) == 10  # YYYY-MM-DD
    assert [p.name for p in result.paths] == ["00000-100.png", "00001-101.png", "00002-102.png", "00003-103.png"]
    for path, infotext, seed in zip(result.paths, result.infotexts, result.seeds):
        with Image.open(path) as saved:
            assert saved.info["parameters"] == infotext
        assert f"Seed: {seed}," in infotext
    again = txt2img(request(seed=5), model, library, outdir=tmp_path)
    assert again.paths[0].name == "00004-5.png" and next_sequence_number(folder) == 5
    # each image depends on its own seed only: image 3 of the batch run equals a single run at seed 102
    alone = txt2img(request("a red circle <hypernet:style:0.5>", seed=102), model, library)
    assert np.abs(pixels(alone)[0].astype(int) - pixels(result)[2].astype(int)).max() <= 1


def test_pasting_the_infotext_back_gives_the_same_request(model, library):
    original = request("a (red:1.2) circle <hypernet:style:0.8>", sampler_name="DPM++ 2M", scheduler="Karras",
                       clip_skip=2, seed=-1)
    result = txt2img(original, model, library)
    assert result.request.seed >= 0 and result.request.scheduler == "Automatic"  # Karras is DPM++ 2M's own
    pasted = Txt2ImgRequest.from_infotext(result.infotexts[0])
    assert pasted == result.request
    assert "Clip skip: 2" in result.infotexts[0] and "Sampler: DPM++ 2M, Schedule type: Automatic" in result.infotexts[0]
    assert same_images(result, txt2img(pasted, model, library))


def test_interrupt_stops_between_steps(model, library):
    job = Job("txt2img", job_count=3)
    steps_seen = []

    def progress(step, total):
        steps_seen.append(step)
        if step == 1:
            job.interrupted.set()

    result = txt2img(request(steps=4, n_iter=3), model, library, progress=progress, job=job)
    assert result.interrupted and steps_seen == [1] and len(result.images) == 1
    assert "Interrupted" in result.messages[-1]
    assert (job.sampling_step, job.sampling_steps, job.job_no) == (1, 4, 0)
    already = txt2img(request(), model, library, job=job)
    assert already.interrupted and already.images == []


def test_skip_ends_the_current_batch_and_the_next_one_runs(model, library):
    job = Job("txt2img", job_count=3)
    steps_seen = []

    def progress(step, total):
        steps_seen.append(step)
        if step == 2:  # during the first batch (steps 1-4 of 12)
            job.skipped.set()

    result = txt2img(request(steps=4, n_iter=3, seed=11), model, library, progress=progress, job=job)
    assert not result.interrupted and len(result.images) == 3 and result.seeds == [11, 12, 13]
    assert steps_seen == [1, 2, 5, 6, 7, 8, 9, 10, 11, 12]  # the first batch stopped after its 2nd step
    assert not job.skipped.is_set() and any("Skipped" in m for m in result.messages)
    alone = txt2img(request(steps=4, n_iter=1, seed=12), model, library)
    assert np.array_equal(np.asarray(result.images[1]), np.asarray(alone.images[0]))  # later batches unaffected


def test_bad_settings(model, library):
    with pytest.raises(ValueError):
        txt2img(request(steps=0), model, library)
    result = txt2img(request(width=36, sampler_name="Nonsense"), model, library)
    assert result.images[0].size == (32, 32)
    assert any("multiple of 8" in m for m in result.messages) and any("Nonsense" in m for m in result.messages)
    assert result.request.sampler_name == "Euler a"


def test_concurrent_txt2img_with_different_networks(model, library):
    prompts = ["a red circle <hypernet:style:1>", "a red circle", "a red circle <hypernet:other:0.9>"]
    sequential = [txt2img(request(p), model, library) for p in prompts]
    results = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def worker(i):
        barrier.wait()
        results[i] = txt2img(request(prompts[i]), model, library)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, sequential):
        assert same_images(got, expected)


# -- prompt editing ---------------------------------------------------------------------------------------------
class UNetCalls:
    """The text context (and SDXL's pooled text embeds) of every UNet call, in order."""

    def __init__(self, pipe):
        self.contexts, self.pooled = [], []
        self._handle = pipe.unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.contexts.append(kwargs["encoder_hidden_states"].clone())
        added = kwargs.get("added_cond_kwargs") or {}
        if "text_embeds" in added:
            self.pooled.append(added["text_embeds"].clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def cfg_batch(conditioning, pooled=False):
    if pooled:
        return torch.cat([conditioning.negative_pooled_prompt_embeds, conditioning.pooled_prompt_embeds])
    return torch.cat([conditioning.negative_prompt_embeds, conditioning.prompt_embeds])


@pytest.mark.parametrize("sampler,steps,switch_after", [
    ("Euler a", 4, 2),  # [(2, red), (4, blue)]: calls 0, 1, 2 are red, call 3 blue (A1111's "step <= end")
    ("Heun", 3, 3),  # second order: scheduled over 6 calls, of which Heun makes 5; 0.5 of 6 is 3
])
def test_prompt_editing_switches_the_text_at_a1111s_call(model, library, sampler, steps, switch_after):
    pipe = model.pipe
    red, blue = encode_sd(pipe, "a red circle", "blurry"), encode_sd(pipe, "a blue square", "blurry")
    with UNetCalls(pipe) as calls:
        txt2img(request("[a red circle:a blue square:0.5]", sampler_name=sampler, steps=steps), model, library)
    assert len(calls.contexts) == (2 * steps - 1 if sampler == "Heun" else steps)
    for call, context in enumerate(calls.contexts):
        assert torch.equal(context, cfg_batch(red if call <= switch_after else blue)), call


def test_prompt_editing_images(model, library):
    def make(prompt, **changes):
        return txt2img(request(prompt, steps=6, **changes), model, library)

    red, blue = make("a red circle"), make("a blue square")
    assert same_images(make("[a red circle:a blue square:1.0]"), red)
    assert same_images(make("[a red circle:a blue square:0]"), blue)
    edited = make("[a red circle:a blue square:1]")  # the random model draws most in the first steps
    assert not same_images(edited, red) and not same_images(edited, blue)
    assert edited.infotexts[0].startswith("[a red circle:a blue square:1]\n")
    red_circle = encode_sd(model.pipe, "a red circle", "blurry")
    blue_circle = encode_sd(model.pipe, "a blue circle", "blurry")
    with UNetCalls(model.pipe) as calls:
        assert make("a [red|blue] circle").messages == []
    # A1111's alternation: schedule steps 1, 2, 3, ... alternate; call 0 and call 1 both use step 1's text
    expected = [red_circle, red_circle, blue_circle, red_circle, blue_circle, red_circle]
    assert all(torch.equal(c, cfg_batch(e)) for c, e in zip(calls.contexts, expected, strict=True))


def test_negative_prompt_editing_and_tags_inside_edits(model, library):
    blurry, ugly = encode_sd(model.pipe, "a red circle", "blurry"), encode_sd(model.pipe, "a red circle", "ugly")
    with UNetCalls(model.pipe) as calls:
        txt2img(request("a red circle", negative_prompt="[blurry:ugly:1]"), model, library)
    assert [torch.equal(c, cfg_batch(blurry)) for c in calls.contexts] == [True, True, False]
    assert torch.equal(calls.contexts[2], cfg_batch(ugly))
    with UNetCalls(model.pipe) as calls:  # CFG scale 1: diffusers runs the prompt alone, and so do the switches
        txt2img(request("[a red circle:a blue square:1]", cfg_scale=1.0), model, library)
    red, blue = encode_sd(model.pipe, "a red circle", "blurry"), encode_sd(model.pipe, "a blue square", "blurry")
    expected = [red.prompt_embeds, red.prompt_embeds, blue.prompt_embeds]
    assert all(torch.equal(c, e) for c, e in zip(calls.contexts, expected, strict=True))
    # tags are read from the whole prompt before scheduling, as in A1111: this one applies at every step
    tagged = txt2img(request("a red circle [<hypernet:style:0.7>:2]"), model, library)
    assert tagged.hypernetworks == [("style", 0.7)] and tagged.messages == []
    composed = txt2img(request("a red circle AND a blue square"), model, library)
    assert composed.images and "AND (composable prompts) is not supported" in composed.messages[0]


# -- SDXL ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdxl_model():
    """A tiny SDXL-shaped pipeline: self-attention width 32, text width 24 + 24 = 48, pooled 24."""
    return LoadedModel(tiny_sdxl_pipeline(), name="tiny-xl", architecture="sdxl", device=torch.device("cpu"),
                       dtype=torch.float32)


def test_sdxl_conditioning_is_a1111s(sdxl_model):
    from extension.prompt.conditioning import encode_sdxl

    pipe = sdxl_model.pipe
    cond = encode_sdxl(pipe, "a cat", "")
    assert cond.prompt_embeds.shape == (1, 77, 48) and cond.pooled_prompt_embeds.shape == (1, 24)
    assert not cond.negative_prompt_embeds.any() and not cond.negative_pooled_prompt_embeds.any()
    theirs = pipe.encode_prompt("a cat", device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(cond.prompt_embeds, theirs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond.pooled_prompt_embeds, theirs[2], atol=1e-5, rtol=1e-5)


def test_sdxl_txt2img_with_a_hypernetwork(sdxl_model, tmp_path):
    root = tmp_path / "hn"
    root.mkdir()
    make_hypernetwork("xl", (32, 48), seed=5).save(root / "xl.pt")
    make_hypernetwork("sd1ish", (48, 320, 768), seed=6).save(root / "sd1ish.pt")
    library = HypernetworkLibrary(root)
    base = txt2img(request("a cat"), sdxl_model, library)
    zero = txt2img(request("a cat <hypernet:xl:0>"), sdxl_model, library)
    tagged = txt2img(request("a cat <hypernet:xl:1>"), sdxl_model, library)
    assert base.messages == [] and same_images(base, zero) and not same_images(base, tagged)
    partial = txt2img(request("a cat <hypernet:sd1ish>"), sdxl_model, library)
    assert any("only its modules for [48]" in m for m in partial.messages)


# -- command line ---------------------------------------------------------------------------------------------
def test_generate_command_line(tmp_path, capsys):
    from extension.generate_cli import main

    root = tmp_path / "hn"
    root.mkdir()
    make_hypernetwork("style", ATTENTION_WIDTHS, seed=1).save(root / "style.pt")
    status = main(["--generate", "a red circle <hypernet:style:0.5> <hypernet:nosuch>", "--negative", "blurry",
                   "--steps", "2", "--seed", "3", "--batch-size", "2", "--sampler", "DPM++ 2M", "--scheduler", "Karras",
                   "--ckpt-dir", str(tmp_path / "empty"), "--hypernetwork-dir", str(root),
                   "--outdir", str(tmp_path / "out"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert status == 0
    paths = out.split()
    assert [os.path.basename(p) for p in paths] == ["00000-3.png", "00001-4.png"]
    from extension.demo.architecture import IMAGE_SIZE

    with Image.open(paths[1]) as image:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)  # the demo model's native size by default
        infotext = image.info["parameters"]
    assert infotext.startswith("a red circle <hypernet:style:0.5> <hypernet:nosuch>\nNegative prompt: blurry\n")
    assert (f"Steps: 2, Sampler: DPM++ 2M, Schedule type: Automatic, CFG scale: 7, Seed: 4, "
            f"Size: {IMAGE_SIZE}x{IMAGE_SIZE}") in infotext
    assert "nosuch" in err
    assert main(["--generate", "x", "--ckpt", "missing", "--ckpt-dir", str(tmp_path / "empty")]) == 2


def test_sdxl_prompt_editing_switches_the_pooled_embeds_too(sdxl_model):
    from extension.prompt.conditioning import encode_sdxl

    pipe = sdxl_model.pipe
    cat, dog = encode_sdxl(pipe, "a cat", "blurry"), encode_sdxl(pipe, "a dog", "blurry")
    with UNetCalls(pipe) as calls:
        txt2img(request("[a cat:a dog:0.5]", steps=4), sdxl_model, None)
    expected = [cat, cat, cat, dog]
    assert all(torch.equal(c, cfg_batch(e)) for c, e in zip(calls.contexts, expected, strict=True))
    assert all(torch.equal(p, cfg_batch(e, pooled=True)) for p, e in zip(calls.pooled, expected, strict=True))
