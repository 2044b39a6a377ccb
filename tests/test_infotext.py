"""A1111 infotext: written in its format, read back into the same settings, legacy lines converted."""
from __future__ import annotations

from extension.infotext import (format_infotext, generation_parameters, hypernet_hashes, parse_infotext, quote)
from extension.processing import Txt2ImgRequest

A1111_SAMPLE = """a cat <hypernet:foo:0.8>, (masterpiece:1.2)
Negative prompt: blurry, lowres
Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1"""


def make(**changes):
    values = dict(steps=20, sampler="Euler a", schedule_type="Automatic", cfg_scale=7.0, seed=1, width=512,
                  height=512, model_hash="6ce0161689", model_name="v1-5")
    values.update(changes)
    return generation_parameters(**values)


def test_format_matches_a1111():
    text = format_infotext("a cat <hypernet:foo:0.8>", "blurry", make(
        hypernet_hashes=hypernet_hashes([("foo", "0123456789")])))
    assert text == ("a cat <hypernet:foo:0.8>\nNegative prompt: blurry\n"
                    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, "
                    "Model hash: 6ce0161689, Model: v1-5, Hypernet hashes: \"foo: 0123456789\"")


def test_clip_skip_only_above_one_and_no_negative_line_when_empty():
    assert "Clip skip" not in format_infotext("p", "", make(clip_skip=1))
    text = format_infotext("p", "", make(clip_skip=2, cfg_scale=7.5))
    assert "Clip skip: 2" in text and "CFG scale: 7.5" in text and "Negative prompt" not in text


def test_quoting():
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"' and quote('say "x": y') == '"say \\"x\\": y"'
    params = make(hypernet_hashes=hypernet_hashes([("a", "1111111111"), ("b", "2222222222")]))
    text = format_infotext("p", "", params)
    assert 'Hypernet hashes: "a: 1111111111, b: 2222222222"' in text
    assert parse_infotext(text)["Hypernet hashes"] == "a: 1111111111, b: 2222222222"


def test_parse_a1111_sample():
    fields = parse_infotext(A1111_SAMPLE)
    assert fields["Prompt"] == "a cat <hypernet:foo:0.8>, (masterpiece:1.2)"
    assert fields["Negative prompt"] == "blurry, lowres"
    assert (fields["Steps"], fields["Sampler"], fields["Schedule type"], fields["CFG scale"], fields["Seed"]) == \
        (20, "DPM++ 2M", "Karras", 7.0, 1234)
    assert (fields["Size-1"], fields["Size-2"], fields["Model hash"], fields["Model"], fields["Clip skip"]) == \
        (512, 768, "6ce0161689", "v1-5-pruned-emaonly", 2)
    assert fields["Version"] == "v1.10.1"


def test_multiline_prompts_and_defaults():
    fields = parse_infotext("line one\nline two\nNegative prompt: neg one\nneg two\n"
                            "Steps: 5, Sampler: Euler, CFG scale: 3.5, Seed: 9, Size: 64x32")
    assert fields["Prompt"] == "line one\nline two" and fields["Negative prompt"] == "neg one\nneg two"
    assert fields["Clip skip"] == 1 and fields["Schedule type"] == "Automatic"
    only_prompt = parse_infotext("just a prompt")
    assert only_prompt["Prompt"] == "just a prompt" and "Steps" not in only_prompt


def test_legacy_hypernet_lines_become_a_tag():
    text = "a castle\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Hypernet: anime, " \
           "Hypernet strength: 0.5"
    fields = parse_infotext(text)
    assert fields["Prompt"] == "a castle<hypernet:anime:0.5>"  # A1111 appends it with no separator
    default_strength = parse_infotext("a castle\nSteps: 20, Sampler: Euler a, Seed: 5, Hypernet: anime")
    assert default_strength["Prompt"] == "a castle<hypernet:anime:1.0>"
    assert Txt2ImgRequest.from_infotext(text).prompt == "a castle<hypernet:anime:0.5>"


def test_legacy_combined_sampler_names():
    fields = parse_infotext("p\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x512")
    assert (fields["Sampler"], fields["Schedule type"]) == ("DPM++ 2M", "Automatic")
    fields = parse_infotext("p\nSteps: 20, Sampler: Euler Karras, CFG scale: 7, Seed: 5, Size: 512x512")
    assert (fields["Sampler"], fields["Schedule type"]) == ("Euler", "Karras")


def test_round_trip_to_the_same_request():
    request = Txt2ImgRequest(prompt='a "quoted", (weird: prompt) <hypernet:x:-0.3>', negative_prompt="bad, worse",
                             sampler_name="DPM++ SDE", scheduler="Exponential", steps=13, cfg_scale=4.5,
                             width=640, height=384, seed=4242, clip_skip=3)
    params = generation_parameters(steps=request.steps, sampler=request.sampler_name, schedule_type=request.scheduler,
                                   cfg_scale=request.cfg_scale, seed=request.seed, width=request.width,
                                   height=request.height, model_hash="abc", model_name="m, with comma",
                                   clip_skip=request.clip_skip, rng="CPU")
    text = format_infotext(request.prompt, request.negative_prompt, params)
    assert 'Model: "m, with comma"' in text
    assert Txt2ImgRequest.from_infotext(text) == request
    assert parse_infotext(text)["Model"] == "m, with comma"
