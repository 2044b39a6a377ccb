"""The attention patch: same numbers as applying the modules by hand on to_k / to_v inputs, per call."""
from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from extension.hypernetwork.attention import (ActiveHypernetworks, HypernetworkAttnProcessor,
                                 attention_widths, compatibility_messages, hypernetworks_applied,
                                 install_hypernetwork_processors, is_installed, remove_hypernetwork_processors)
from extension.demo.architecture import (ATTENTION_WIDTHS, CROSS_ATTENTION_DIM, SELF_ATTENTION_WIDTHS,
                                         build_random_pipeline)
from extension.hypernetwork.reference import a1111_hooks
from builders import make_hypernetwork
from extension.hypernetwork import load_hypernetwork

FIXTURES = Path(__file__).parent / "fixtures" / "a1111"


@pytest.fixture(scope="module")
def pipe():
    return build_random_pipeline(seed=0)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, 16, 16, generator=g)
    context = torch.randn(2, 77, CROSS_ATTENTION_DIM, generator=g)
    return sample, torch.tensor(421), context


@pytest.fixture
def unet(pipe):
    """The shared UNet, left with its original processors after each test."""
    original = dict(pipe.unet.attn_processors)
    yield pipe.unet
    pipe.unet.set_attn_processor(original)


def run(unet, inputs, **kwargs) -> torch.Tensor:
    sample, timestep, context = inputs
    with torch.no_grad():
        return unet(sample, timestep, context, **kwargs).sample


def reference(unet, inputs, networks) -> torch.Tensor:
    """The UNet with its stock processors and the modules applied AUTOMATIC1111's way (pre-hooks)."""
    assert not is_installed(unet)
    with a1111_hooks(unet, networks):
        return run(unet, inputs)


def patched(unet, inputs, networks) -> torch.Tensor:
    install_hypernetwork_processors(unet)
    try:
        return run(unet, inputs, cross_attention_kwargs={"hypernetworks": ActiveHypernetworks(networks)})
    finally:
        remove_hypernetwork_processors(unet)


FULL = make_hypernetwork("full", ATTENTION_WIDTHS, seed=1)
SECOND = make_hypernetwork("second", ATTENTION_WIDTHS, seed=2)
CROSS_ONLY = make_hypernetwork("cross", (CROSS_ATTENTION_DIM,), seed=3)
SELF_ONLY = make_hypernetwork("self", SELF_ATTENTION_WIDTHS, seed=4)


def test_demo_widths_are_what_the_architecture_says(unet):
    assert attention_widths(unet) == set(ATTENTION_WIDTHS)


@pytest.mark.parametrize("multiplier", [1.0, 0.5, 1.7, -0.6])
def test_matches_hand_applied_modules(unet, inputs, multiplier):
    baseline = run(unet, inputs)
    expected = reference(unet, inputs, [(FULL, multiplier)])
    got = patched(unet, inputs, [(FULL, multiplier)])
    assert (expected - baseline).abs().max() > 1e-3, "the network should visibly change the output"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("network", [CROSS_ONLY, SELF_ONLY], ids=["cross-attention", "self-attention"])
def test_self_and_cross_attention_separately(unet, inputs, network):
    baseline = run(unet, inputs)
    expected = reference(unet, inputs, [(network, 0.9)])
    got = patched(unet, inputs, [(network, 0.9)])
    assert (expected - baseline).abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_stacking_chains_in_prompt_order(unet, inputs):
    networks = [(FULL, 0.8), (SECOND, -0.5), (CROSS_ONLY, 1.2)]
    expected = reference(unet, inputs, networks)
    got = patched(unet, inputs, networks)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    reversed_order = patched(unet, inputs, networks[::-1])
    assert (reversed_order - got).abs().max() > 1e-4, "order matters: K feeds K, V feeds V"


def test_no_network_and_zero_multiplier_are_bit_identical(unet, inputs):
    baseline = run(unet, inputs)
    install_hypernetwork_processors(unet)
    assert torch.equal(run(unet, inputs), baseline)
    for networks in ([], [(FULL, 0.0)], [(FULL, 0.0), (SECOND, 0.0)]):
        out = run(unet, inputs, cross_attention_kwargs={"hypernetworks": ActiveHypernetworks(networks)})
        assert torch.equal(out, baseline), networks
    # a plain list (uncached path) works too
    out = run(unet, inputs, cross_attention_kwargs={"hypernetworks": [(FULL, 0.0)]})
    assert torch.equal(out, baseline)


def test_plain_list_equals_active_object(unet, inputs):
    install_hypernetwork_processors(unet)
    a = run(unet, inputs, cross_attention_kwargs={"hypernetworks": [(FULL, 0.7)]})
    b = run(unet, inputs, cross_attention_kwargs={"hypernetworks": ActiveHypernetworks([(FULL, 0.7)])})
    assert torch.equal(a, b)


def test_install_and_remove_restore_processors_exactly(unet, inputs):
    before = dict(unet.attn_processors)
    baseline = run(unet, inputs)
    install_hypernetwork_processors(unet)
    install_hypernetwork_processors(unet)  # idempotent: no double wrapping
    assert is_installed(unet)
    assert all(type(p) is HypernetworkAttnProcessor and p.original is before[name]
               for name, p in unet.attn_processors.items())
    remove_hypernetwork_processors(unet)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)
    assert torch.equal(run(unet, inputs), baseline)


def test_context_manager_applies_and_restores(unet, inputs):
    before = dict(unet.attn_processors)
    baseline = run(unet, inputs)
    expected = reference(unet, inputs, [(FULL, 0.8), (SECOND, 0.3)])
    with hypernetworks_applied(unet, [(FULL, 0.8), (SECOND, 0.3)]):
        torch.testing.assert_close(run(unet, inputs), expected, atol=1e-5, rtol=1e-5)
    assert all(unet.attn_processors[name] is before[name] for name in before)
    assert torch.equal(run(unet, inputs), baseline)


def test_context_manager_restores_on_error_and_nests(unet, inputs):
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError):
        with hypernetworks_applied(unet, [(FULL, 1.0)]):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is before[name] for name in before)
    install_hypernetwork_processors(unet)
    installed = dict(unet.attn_processors)
    with hypernetworks_applied(unet, [(FULL, 1.0)]):
        with hypernetworks_applied(unet, [(SECOND, 1.0)]):
            torch.testing.assert_close(run(unet, inputs), patched_inner(unet, inputs), atol=1e-5, rtol=1e-5)
    assert all(unet.attn_processors[name] is installed[name] for name in installed)


def patched_inner(unet, inputs):
    # the innermost block wins (its networks replace the outer ones), computed per call for comparison
    return run(unet, inputs, cross_attention_kwargs={"hypernetworks": [(SECOND, 1.0)]})


def test_cross_attention_context_is_transformed_once_per_generation(pipe):
    """A cross-only network: its K module runs once per pipeline call, not per layer per step."""
    calls = []
    k_module = CROSS_ONLY.layers[CROSS_ATTENTION_DIM][0]
    handle = k_module.register_forward_hook(lambda *_: calls.append(1))
    install_hypernetwork_processors(pipe)
    try:
        generator = torch.Generator().manual_seed(0)
        pipe("a red circle", num_inference_steps=3, height=32, width=32, generator=generator,
             cross_attention_kwargs={"hypernetworks": ActiveHypernetworks([(CROSS_ONLY, 1.0)])}, output_type="pt")
        assert len(calls) == 1
        calls.clear()
        # the uncached list path runs it in every cross-attention layer at every step
        pipe("a red circle", num_inference_steps=3, height=32, width=32, generator=torch.Generator().manual_seed(0),
             cross_attention_kwargs={"hypernetworks": [(CROSS_ONLY, 1.0)]}, output_type="pt")
        assert len(calls) > 3
    finally:
        handle.remove()
        remove_hypernetwork_processors(pipe)


def test_cache_notices_in_place_changes():
    active = ActiveHypernetworks([(CROSS_ONLY, 1.0)])
    context = torch.randn(1, 5, CROSS_ATTENTION_DIM)
    with torch.no_grad():
        k1, _ = active.transform_cached(context)
        assert active.transform_cached(context)[0] is k1
        context.mul_(2)
        k2, _ = active.transform_cached(context)
    torch.testing.assert_close(k2, active.transform(context)[0])
    assert not torch.equal(k1, k2)


def test_concurrent_generations_do_not_leak(pipe):
    """Threads sharing one UNet, each with its own networks, equal the same generations run one at a time."""
    from diffusers import StableDiffusionPipeline

    install_hypernetwork_processors(pipe)
    jobs = [[(FULL, 1.0)], [], [(SECOND, -0.8), (CROSS_ONLY, 1.0)], [(SELF_ONLY, 1.5)]]

    def generate(networks, seed):
        # A view per thread: shares the UNet (and its processors) but not the pipeline's per-call state. The
        # tokenizer is copied too: diffusers tokenizes with two padding settings in turn, and a fast tokenizer
        # keeps its padding setting on the (shared) Rust object, so threads sharing one can swap each other's.
        view = StableDiffusionPipeline.from_pipe(pipe, tokenizer=copy.deepcopy(pipe.tokenizer),
                                                 scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config))
        view.set_progress_bar_config(disable=True)
        kwargs = {"cross_attention_kwargs": {"hypernetworks": ActiveHypernetworks(networks)}} if networks else {}
        return view("a blue square", num_inference_steps=2, height=32, width=32, output_type="pt",
                    generator=torch.Generator().manual_seed(seed), **kwargs).images

    try:
        sequential = [generate(networks, i) for i, networks in enumerate(jobs)]
        results = [None] * len(jobs)
        barrier = threading.Barrier(len(jobs))

        def worker(i):
            barrier.wait()
            results[i] = generate(jobs[i], i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for got, expected in zip(results, sequential):
            assert torch.equal(got, expected)
        assert len({tuple(r.flatten()[:8].tolist()) for r in results}) == len(jobs)
    finally:
        remove_hypernetwork_processors(pipe)


def test_chain_matches_a1111_reference_outputs():
    """ActiveHypernetworks.transform on AUTOMATIC1111's stacked reference files and outputs."""
    expected = json.loads((FIXTURES / "expected.json").read_text())["stack"]
    networks = [(load_hypernetwork(FIXTURES / name), m) for name, m in zip(expected["files"], expected["multipliers"])]
    context = torch.tensor(expected["input"], dtype=torch.float32)
    k, v = ActiveHypernetworks(networks).transform(context)
    torch.testing.assert_close(k, torch.tensor(expected["k"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(v, torch.tensor(expected["v"]), atol=1e-5, rtol=0)


def test_compatibility_messages():
    sd1 = make_hypernetwork("sd1net", (768, 320, 640, 1280), seed=5)
    sd1.sd_checkpoint, sd1.sd_checkpoint_name = "abcdef0123", "v1-5"
    assert compatibility_messages(sd1, {320, 640, 1280, 768}, checkpoint_name="v1-5",
                                  checkpoint_hash="abcdef0123") == []
    sdxl = compatibility_messages(sd1, {640, 1280, 2048}, checkpoint_name="sdxl", checkpoint_hash="9999999999")
    assert len(sdxl) == 2 and "only its modules for [640, 1280]" in sdxl[0] and "trained on v1-5" in sdxl[1]
    demo = compatibility_messages(sd1, set(ATTENTION_WIDTHS))
    assert len(demo) == 1 and "no effect" in demo[0]
    renamed = compatibility_messages(sd1, {320, 640, 1280, 768}, checkpoint_name="renamed",
                                     checkpoint_hash="abcdef0123")
    assert renamed == [], "same hash under another name is the same model"
