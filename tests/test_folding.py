"""Affine hypernetworks folded into to_k / to_v: the same numbers as AUTOMATIC1111's hooks, within fp32 rounding.

The bound tested everywhere here: the folded UNet output differs from AUTOMATIC1111's (``a1111_hooks``) by at
most ``BOUND = 1e-5`` times the largest magnitude of that output. Measured on these tiny SD 1.x / 2.x / SDXL
UNets, with one to three networks and multipliers from -1.2 to 2: up to ``1.6e-6`` (about 13 fp32 epsilons of
1.2e-7), from reassociating the sums ``W_k (x + m (M x + c0))`` into ``(W_k + m W_k M) x + m W_k c0``.
"""
from __future__ import annotations

import threading

import pytest
import torch

from builders import make_hypernetwork, tiny_pipeline
from extension.hypernetwork.attention import (ActiveHypernetworks, attention_widths, install_hypernetwork_processors,
                                              remove_hypernetwork_processors)
from extension.hypernetwork.folding import (COLLAPSED, FOLDED, RAW, AffineRun, affine_parts, choose, compose,
                                            fold_flops, fold_into, is_affine_now)
from extension.hypernetwork.reference import a1111_hooks

BOUND = 1e-5  # max |folded - A1111| / max |A1111 output|


class Model:
    """A tiny UNet with fixed inputs, its processors installed per call, and the reference path."""

    def __init__(self, family: str):
        self.unet = tiny_pipeline(family).unet
        self.widths = sorted(attention_widths(self.unet))
        self.text_width = self.unet.config.cross_attention_dim
        g = torch.Generator().manual_seed(7)
        self.sample = torch.randn(2, 4, 8, 8, generator=g)
        self.context = torch.randn(2, 77, self.text_width, generator=g)
        self.kwargs = {}
        if family == "sdxl":
            self.kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32, generator=g),
                                                "time_ids": torch.randn(2, 6, generator=g)}

    def self_widths(self):
        return [w for w in self.widths if w != self.text_width]

    def run(self, hypernetworks=None) -> torch.Tensor:
        extra = {"cross_attention_kwargs": {"hypernetworks": hypernetworks}} if hypernetworks is not None else {}
        with torch.no_grad():
            return self.unet(self.sample, 500, self.context, **self.kwargs, **extra).sample

    def folded(self, active: ActiveHypernetworks) -> torch.Tensor:
        install_hypernetwork_processors(self.unet)
        try:
            return self.run(active)
        finally:
            remove_hypernetwork_processors(self.unet)

    def reference(self, networks) -> torch.Tensor:
        with a1111_hooks(self.unet, networks):
            return self.run()


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def model(request):
    return Model(request.param)


@pytest.fixture(scope="module")
def sd1():
    return Model("sd1")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


def linear_net(name, sizes, seed, **structure):
    return make_hypernetwork(name, sizes, seed, activation_func=None, **structure)


def all_modes(active: ActiveHypernetworks) -> set[str]:
    return {mode for modes in active.folds.modes() for mode in modes}


# -- the algebra ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", [dict(), dict(layer_structure=[1, 0.5, 2, 1]),
                                       dict(use_dropout=True, dropout_structure=[0, 0.3, 0]),
                                       dict(activation_func="linear", activate_output=True)],
                         ids=["[1,2,1]", "[1,0.5,2,1]", "dropout", "'linear'"])
def test_affine_module_is_one_matrix_and_bias(structure):
    options = dict(activation_func=None)
    options.update(structure)
    module = make_hypernetwork("n", (12,), seed=1, **options).layers[12][0]
    assert is_affine_now(module)
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    matrix, offset = affine_parts(module, "cpu", torch.float64)
    module.double()
    try:
        with torch.no_grad():
            for m in (1.0, -0.7, 2.5):
                torch.testing.assert_close(module(x, m), x + m * (x @ matrix.T + offset), rtol=1e-12, atol=1e-12)
    finally:
        module.float()
    assert affine_parts(module, "cpu", torch.float64)[0] is not matrix, "the weights changed dtype: recomputed"


def test_non_affine_modules_and_training_are_not_affine():
    assert not is_affine_now(make_hypernetwork("r", (8,), seed=1).layers[8][0])
    assert not is_affine_now(linear_net("ln", (8,), seed=1, add_layer_norm=True).layers[8][0])
    training = linear_net("t", (8,), seed=1)
    training.train()
    assert not is_affine_now(training.layers[8][0])


def test_chained_maps_compose_and_fold():
    torch.manual_seed(0)
    modules = [linear_net(f"n{i}", (10,), seed=i).layers[10][1] for i in range(3)]
    multipliers = [0.8, -1.3, 0.4]
    x = torch.randn(4, 10, dtype=torch.float64)
    expected = x
    with torch.no_grad():
        for module, m in zip(modules, multipliers):
            expected = expected + m * (expected @ affine_parts(module, "cpu", torch.float64)[0].T
                                       + affine_parts(module, "cpu", torch.float64)[1])
    delta, offset = compose([(*affine_parts(module, "cpu", torch.float64), m)
                             for module, m in zip(modules, multipliers)])
    torch.testing.assert_close(x + x @ delta.T + offset, expected, rtol=1e-12, atol=1e-12)
    weight, bias = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    folded_weight, folded_bias = fold_into(weight, bias, delta, offset)
    torch.testing.assert_close(x @ folded_weight.T + folded_bias, expected @ weight.T + bias, rtol=1e-12, atol=1e-12)


def test_the_cost_model_picks_the_fewest_flops():
    module = linear_net("n", (64,), seed=1).layers[64][0]  # [1,2,1]: 8 d^2 FLOPs per token raw, 2 d^2 collapsed
    run = AffineRun([(module, 1.0)], 64)
    assert run.raw_flops == 8 * 64 * 64 and run.collapsed_flops == 2 * 64 * 64 and run.compose_flops == 0
    # folding costs 2 d^2 d_out once; the collapsed map 2 d^2 per token per call
    assert fold_flops(64, 64) < 2 * 64 * 64 * 64 * 1.1
    assert choose(run, tokens=80, calls=1, d_out=64) == FOLDED  # 2 d^3 (+ bias) once < 2 d^2 x 80 tokens
    assert choose(run, tokens=16, calls=2, d_out=64) == COLLAPSED  # 32 token-calls < 64 = d_out
    assert choose(run, tokens=16, calls=2, d_out=None) == COLLAPSED  # not last in its chain: cannot fold
    assert choose(run, tokens=1, calls=1, d_out=64) == COLLAPSED
    assert choose(run, tokens=1, calls=None, d_out=64) == FOLDED  # unknown number of calls: fold
    bottleneck = linear_net("b", (64,), seed=1, layer_structure=[1, 0.25, 1]).layers[64][0]  # d^2 raw < 2 d^2
    assert choose(AffineRun([(bottleneck, 1.0)], 64), tokens=4, calls=2, d_out=64) == RAW
    two = AffineRun([(module, 1.0), (module, 0.5)], 64)  # composing costs 2 d^3
    assert choose(two, tokens=4, calls=2, d_out=64) == RAW  # 2 x 8 d^2 x 8 <= 2 d^3 + 2 d^2 x 8
    assert choose(two, tokens=16, calls=2, d_out=64) == COLLAPSED  # 2 d^3 + 2 d^2 x 32 < 2 x 8 d^2 x 32


# -- on the UNets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("multipliers, calls", [((1.0,), None), ((-0.8,), 30), ((0.7, -1.2, 0.5), None),
                                                ((0.7, -1.2, 0.5), 1)],
                         ids=["one, calls unknown", "negative, 30 calls", "three chained", "three chained, 1 call"])
def test_folded_equals_a1111_within_fp32_rounding(model, multipliers, calls):
    """Folded (and collapsed) linear networks on every attention width, against AUTOMATIC1111's hooks and against
    this project's own unfolded path (autograd on: modules as they are). Bound: ``BOUND`` of the output's scale."""
    networks = [(linear_net(f"lin{i}", model.widths, seed=10 + i), m) for i, m in enumerate(multipliers)]
    expected = model.reference(networks)
    assert (expected - model.run()).abs().max() > 1e-2, "the networks should visibly change the output"
    active = ActiveHypernetworks(networks, expected_calls=calls)
    got = model.folded(active)
    if calls is None:
        assert all_modes(active) == {FOLDED}, "without a number of calls every layer folds"
    elif calls == 30:
        assert FOLDED in all_modes(active)
    assert relative_error(got, expected) <= BOUND
    install_hypernetwork_processors(model.unet)
    try:
        with torch.enable_grad():
            unfolded = model.unet(model.sample, 500, model.context, **model.kwargs,
                                  cross_attention_kwargs={"hypernetworks": ActiveHypernetworks(networks)}).sample
    finally:
        remove_hypernetwork_processors(model.unet)
    assert relative_error(got, unfolded.detach()) <= BOUND
    torch.testing.assert_close(unfolded.detach(), expected, rtol=0, atol=1e-6 * expected.abs().max().item())


def test_the_same_object_serves_many_calls(sd1):
    networks = [(linear_net("a", sd1.widths, seed=1), 0.9)]
    active = ActiveHypernetworks(networks, expected_calls=3)
    first = sd1.folded(active)
    planned = active.folds.modes()
    assert torch.equal(sd1.folded(active), first) and active.folds.modes() == planned


@pytest.mark.parametrize("chain", ["linear, relu, linear", "relu, linear", "linear, relu", "layer norm, linear"])
def test_mixed_chains_fold_only_their_affine_runs(sd1, chain):
    builders = {"linear": lambda i: linear_net(f"l{i}", sd1.widths, seed=20 + i),
                "relu": lambda i: make_hypernetwork(f"r{i}", sd1.widths, seed=30 + i),
                "layer norm": lambda i: linear_net(f"n{i}", sd1.widths, seed=40 + i, add_layer_norm=True)}
    names = chain.split(", ")
    networks = [(builders[name](i), 0.9 - 0.3 * i) for i, name in enumerate(names)]
    expected = sd1.reference(networks)
    active = ActiveHypernetworks(networks)
    assert relative_error(sd1.folded(active), expected) <= BOUND
    modes = set(active.folds.modes())
    assert len(modes) == 1
    (plan,) = modes
    # one mode per segment: consecutive affine networks are one run, non-affine ones run as they are
    expected_plan = tuple(RAW if name != "linear" else (FOLDED if i == len(names) - 1 else COLLAPSED)
                          for i, name in enumerate(names))
    assert plan == expected_plan


def test_zero_multipliers_are_left_out(sd1):
    relu = make_hypernetwork("relu", sd1.widths, seed=3)
    linear = linear_net("lin", sd1.widths, seed=4)
    assert torch.equal(sd1.folded(ActiveHypernetworks([(linear, 0.0)])), sd1.run())
    networks = [(relu, 0.0), (linear, 0.6), (relu, 0.0)]
    active = ActiveHypernetworks(networks)
    got = sd1.folded(active)
    assert set(active.folds.modes()) == {(FOLDED,)}, "a zero multiplier is the identity: the chain stays affine"
    assert relative_error(got, sd1.reference(networks)) <= BOUND


def test_the_shared_unet_is_not_changed(model):
    before = {name: tensor.clone() for name, tensor in model.unet.state_dict().items()}
    network = linear_net("lin", model.widths, seed=5)
    network_before = network.to_state()
    baseline = model.run()
    model.folded(ActiveHypernetworks([(network, 1.3)]))
    after = model.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
    assert all(torch.equal(a, b) for size in network.layers for pair in zip(network_before[size], network.to_state()[size])
               for a, b in zip(pair[0].values(), pair[1].values()))
    assert torch.equal(model.run(), baseline)


def test_concurrent_calls_give_what_they_give_alone(sd1):
    """Threads share the UNet and one network (its collapsed-map cache starts empty and they race to fill it)."""
    shared = linear_net("shared", sd1.widths, seed=6)
    jobs = [[(shared, 1.0)], [(shared, -0.5), (linear_net("b", sd1.widths, seed=7), 0.4)],
            [(make_hypernetwork("relu", sd1.widths, seed=8), 0.8), (shared, 0.3)], []]
    install_hypernetwork_processors(sd1.unet)
    try:
        def generate(networks):
            active = ActiveHypernetworks(networks, expected_calls=2)
            return [sd1.run(active) for _ in range(2)]

        results = [None] * len(jobs)
        barrier = threading.Barrier(len(jobs))

        def worker(i):
            barrier.wait()
            results[i] = generate(jobs[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alone = [generate(networks) for networks in jobs]
    finally:
        remove_hypernetwork_processors(sd1.unet)
    for got, expected in zip(results, alone):
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert len({tuple(r[0].flatten()[:8].tolist()) for r in results}) == len(jobs)


def test_training_never_folds(sd1):
    """Autograd on: the modules run as they are (every call), gradients reach them, nothing is planned. Train mode
    with autograd off: the modules run as they are too (multiplier 1, AUTOMATIC1111's training semantics)."""
    network = linear_net("train", sd1.widths, seed=9)
    calls = []
    handles = [module.register_forward_hook(lambda *_: calls.append(1)) for pair in network.layers.values()
               for module in pair]
    install_hypernetwork_processors(sd1.unet)
    try:
        network.train()
        active = ActiveHypernetworks([(network, 0.5)])
        out = sd1.unet(sd1.sample, 500, sd1.context, **sd1.kwargs,
                       cross_attention_kwargs={"hypernetworks": active}).sample
        out.square().mean().backward()
        assert calls and active.folds.modes() == []
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.weights())
        with torch.no_grad():
            no_grad_train = sd1.run(active)
        assert all(set(modes) == {RAW} for modes in active.folds.modes())
        torch.testing.assert_close(no_grad_train, out.detach(), rtol=0, atol=1e-6)
    finally:
        for handle in handles:
            handle.remove()
        remove_hypernetwork_processors(sd1.unet)
        network.eval()
    with a1111_hooks(sd1.unet, [(network, 0.5)]):
        network.train()
        try:
            expected = sd1.run()
        finally:
            network.eval()
    torch.testing.assert_close(no_grad_train, expected, rtol=0, atol=1e-6)


def test_changed_weights_are_folded_afresh(sd1):
    network = linear_net("edit", sd1.widths, seed=11)
    active = ActiveHypernetworks([(network, 1.0)])
    before = sd1.folded(active)
    with torch.no_grad():
        for pair in network.layers.values():
            pair[0].linear[0].weight.mul_(2)
    after = sd1.folded(active)
    assert (after - before).abs().max() > 1e-3
    assert relative_error(after, sd1.reference([(network, 1.0)])) <= BOUND


def test_txt2img_tells_the_networks_how_many_unet_calls_to_expect(monkeypatch, tmp_path):
    from extension import processing
    from extension.demo.architecture import ATTENTION_WIDTHS, build_random_pipeline
    from extension.checkpoints.manager import LoadedModel
    from extension.library import HypernetworkLibrary

    linear_net("flat", ATTENTION_WIDTHS, seed=12).save(tmp_path / "flat.pt")
    seen = []

    class Recording(ActiveHypernetworks):
        def __init__(self, networks, expected_calls=None):
            super().__init__(networks, expected_calls)
            seen.append(expected_calls)

    monkeypatch.setattr(processing, "ActiveHypernetworks", Recording)
    model = LoadedModel(build_random_pipeline(seed=0), name="demo", architecture="demo", device=torch.device("cpu"),
                        dtype=torch.float32, hasher=lambda: "ab" * 32)
    request = processing.Txt2ImgRequest(prompt="a red circle <hypernet:flat:0.8>", steps=3, width=32, height=32,
                                        seed=1, n_iter=2, sampler_name="Heun")
    result = processing.txt2img(request, model, HypernetworkLibrary(tmp_path))
    assert result.hypernetworks == [("flat", 0.8)] and len(result.images) == 2
    assert seen == [2 * 3 * 2], "Heun: two UNet calls per step, for each of the 2 batches"
