"""A1111 sampler names and schedule types -> diffusers schedulers."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from extension.samplers import (SAMPLERS, build_scheduler, resolve_sampler, sampler_api_items, sampler_names,
                                schedule_type_api_items, schedule_type_labels, split_legacy_name)

SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False, prediction_type="epsilon")


@pytest.fixture(scope="module")
def sd15_config():
    from diffusers import PNDMScheduler

    return PNDMScheduler(**SD15_SCHEDULER).config


@pytest.mark.parametrize("name,expected", [
    ("Euler a", "EulerAncestralDiscreteScheduler"), ("k_euler_a", "EulerAncestralDiscreteScheduler"),
    ("Euler", "EulerDiscreteScheduler"), ("LMS", "LMSDiscreteScheduler"), ("Heun", "HeunDiscreteScheduler"),
    ("DPM2", "KDPM2DiscreteScheduler"), ("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
    ("DPM++ 2M", "DPMSolverMultistepScheduler"), ("DPM++ 2M SDE", "DPMSolverMultistepScheduler"),
    ("DPM++ SDE", "DPMSolverSDEScheduler"), ("DDIM", "DDIMScheduler"), ("PLMS", "PNDMScheduler"),
    ("UniPC", "UniPCMultistepScheduler"), ("LCM", "LCMScheduler"), ("k_dpmpp_2m", "DPMSolverMultistepScheduler"),
])
def test_names_and_aliases(sd15_config, name, expected):
    choice = resolve_sampler(name)
    assert choice.messages == ()
    scheduler = build_scheduler(choice, sd15_config)
    assert type(scheduler).__name__ == expected
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012


def test_automatic_means_the_samplers_default(sd15_config):
    dpm = build_scheduler(resolve_sampler("DPM++ 2M", "Automatic"), sd15_config)
    assert dpm.config.use_karras_sigmas and dpm.config.algorithm_type == "dpmsolver++"
    sde = build_scheduler(resolve_sampler("DPM++ 2M SDE"), sd15_config)
    assert sde.config.use_exponential_sigmas and sde.config.algorithm_type == "sde-dpmsolver++"
    euler = build_scheduler(resolve_sampler("Euler", "Automatic"), sd15_config)
    assert not euler.config.use_karras_sigmas and euler.config.timestep_spacing == "linspace"


def test_schedule_types(sd15_config):
    karras = build_scheduler(resolve_sampler("Euler", "Karras"), sd15_config)
    assert karras.config.use_karras_sigmas
    assert build_scheduler(resolve_sampler("LMS", "exponential"), sd15_config).config.use_exponential_sigmas
    assert build_scheduler(resolve_sampler("Euler", "SGM Uniform"), sd15_config).config.timestep_spacing == "trailing"
    uniform = build_scheduler(resolve_sampler("DPM++ 2M", "Uniform"), sd15_config)
    assert not uniform.config.use_karras_sigmas
    assert resolve_sampler("Euler", "Uniform").schedule.label == "Uniform"  # A1111 keeps it for Euler


def test_a1111_timestep_samplers_use_leading_spacing_with_offset(sd15_config):
    ddim = build_scheduler(resolve_sampler("DDIM"), sd15_config)
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == [751, 501, 251, 1]  # A1111: range(0, 1000, 1000 // steps) + 1
    assert ddim.config.set_alpha_to_one is False


def test_legacy_combined_names():
    assert split_legacy_name("DPM++ 2M Karras")[0] == "DPM++ 2M"
    choice = resolve_sampler("DPM++ 2M Karras")
    assert (choice.sampler.name, choice.schedule.label, choice.effective_schedule.label) == \
        ("DPM++ 2M", "Automatic", "Karras")
    choice = resolve_sampler("Euler Karras")
    assert (choice.sampler.name, choice.schedule.label) == ("Euler", "Karras")
    choice = resolve_sampler("DPM++ 2M SDE Exponential")
    assert (choice.sampler.name, choice.schedule.label) == ("DPM++ 2M SDE", "Automatic")
    choice = resolve_sampler("DPM++ 2M SDE Heun")  # a real name that merely ends like one
    assert choice.sampler.name == "DPM++ 2M SDE Heun"


def test_unknown_and_unavailable_fall_back_with_messages():
    choice = resolve_sampler("Nonsense")
    assert choice.sampler.name == "Euler a" and "Unknown sampler" in choice.messages[0]
    choice = resolve_sampler("DPM adaptive")
    assert choice.sampler.name == "Euler a" and "no diffusers equivalent" in choice.messages[0]
    choice = resolve_sampler("Euler", "Align Your Steps")
    assert choice.schedule.label == "Automatic" and "not available" in choice.messages[0]
    choice = resolve_sampler("Euler a", "Karras")
    assert choice.schedule.label == "Automatic" and choice.messages
    choice = resolve_sampler("Euler", "bogus")
    assert choice.schedule.label == "Automatic" and "Unknown schedule type" in choice.messages[0]
    assert "DDIM ignores" in resolve_sampler("DDIM", "Karras").messages[0]


def test_api_items():
    names = sampler_names()
    assert names[0] == "DPM++ 2M" and "Euler a" in names and "DPM fast" not in names
    items = {item["name"]: item for item in sampler_api_items()}
    assert items["DPM++ 2M"] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert items["Euler a"]["options"] == {}
    assert "Karras" in schedule_type_labels() and "KL Optimal" not in schedule_type_labels()
    assert {"name", "label", "aliases", "default_rho", "need_inner_model"} <= set(schedule_type_api_items()[0])


@pytest.fixture(scope="module")
def pipe():
    from extension.demo.architecture import build_random_pipeline

    return build_random_pipeline(seed=0)


def generate(pipe, choice, seed):
    from extension.processing import initial_noise, pipeline_view

    view = pipeline_view(pipe, build_scheduler(choice, pipe.scheduler.config, seeds=[seed]))
    latents, generators = initial_noise(pipe, [seed], 32, 32)
    # 3 steps: diffusers' KDPM2AncestralDiscreteScheduler gives NaN at exactly 2 (its sigma interpolation)
    return view("a red circle", num_inference_steps=3, height=32, width=32, latents=latents,
                generator=generators, output_type="pt").images


@pytest.mark.parametrize("name", sampler_names())
def test_every_sampler_runs_and_is_reproducible(pipe, name):
    choice = resolve_sampler(name)
    first = generate(pipe, choice, seed=7)
    assert torch.isfinite(first).all()
    assert torch.equal(first, generate(pipe, choice, seed=7)), "same seed, same image"


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE"])
def test_stochastic_samplers_follow_the_seed(pipe, name):
    choice = resolve_sampler(name)
    assert not torch.equal(generate(pipe, choice, seed=7), generate(pipe, choice, seed=8))


def test_every_listed_sampler_has_a_unique_name():
    names = [spec.name for spec in SAMPLERS]
    assert len(names) == len(set(names))
