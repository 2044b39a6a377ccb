"""Files written by AUTOMATIC1111's own code load here and compute the numbers it computed."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import A1111_FIXTURES
from extension.hypernetwork import Hypernetwork, apply_hypernetworks
from extension.hypernetwork import load_hypernetwork, read_info
from extension.prompt.tags import parse_prompt

EXPECTED = json.loads((A1111_FIXTURES / "expected.json").read_text())
MODULES = {entry["file"]: entry for entry in EXPECTED["modules"]}
METADATA_FIELDS = {  # expected.json key -> Hypernetwork attribute
    "name": "name", "step": "step", "layer_structure": "layer_structure", "activation_func": "activation_func",
    "add_layer_norm": "add_layer_norm", "use_dropout": "use_dropout", "activate_output": "activate_output",
    "dropout_structure": "dropout_structure", "weight_init": "weight_init",
}
# What AUTOMATIC1111's Hypernetwork.load sets for a key the file lacks (NovelAI's files have none of these).
A1111_LOAD_DEFAULTS = {"activation_func": None, "add_layer_norm": False, "use_dropout": False,
                       "activate_output": True, "dropout_structure": [0, 0, 0], "weight_init": "Normal"}


@pytest.mark.parametrize("filename", sorted(MODULES))
def test_metadata_matches_reference(filename):
    network = load_hypernetwork(A1111_FIXTURES / filename)
    expected = MODULES[filename]["metadata"]
    for key, attribute in METADATA_FIELDS.items():
        assert getattr(network, attribute) == expected.get(key, A1111_LOAD_DEFAULTS.get(key)), key
    assert network.sizes() == expected["sizes"]
    info = read_info(A1111_FIXTURES / filename)
    assert list(info.sizes) == expected["sizes"]
    assert info.name == expected["name"] and info.step == expected["step"]


@pytest.mark.parametrize("filename", sorted(MODULES))
def test_outputs_match_reference_at_every_multiplier(filename):
    network = load_hypernetwork(A1111_FIXTURES / filename)
    cases = MODULES[filename]["cases"]
    assert {case["multiplier"] for case in cases} >= {0.0, 0.6, 1.0, 1.7}
    for case in cases:
        x = torch.tensor(case["input"])
        assert x.shape[-1] == case["dim"]
        k, v = network.apply(x, x, case["multiplier"])
        torch.testing.assert_close(k, torch.tensor(case["k"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(v, torch.tensor(case["v"]), atol=1e-5, rtol=0)
        # AUTOMATIC1111's own calling convention: set_multiplier, then module(x).
        network.set_multiplier(case["multiplier"])
        k_module, v_module = network.layers[case["dim"]]
        torch.testing.assert_close(k_module(x), torch.tensor(case["k"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(v_module(x), torch.tensor(case["v"]), atol=1e-5, rtol=0)


def test_multiplier_zero_returns_input_exactly():
    network = load_hypernetwork(A1111_FIXTURES / "plain_linear.pt")
    x = torch.randn(2, 7, 32)
    k, v = network.apply(x, x, 0.0)
    assert torch.equal(k, x) and torch.equal(v, x)


def test_stacked_pair_matches_reference():
    stack = EXPECTED["stack"]
    networks = [load_hypernetwork(A1111_FIXTURES / name) for name in stack["files"]]
    x = torch.tensor(stack["input"])
    k, v = apply_hypernetworks(zip(networks, stack["multipliers"]), x)
    torch.testing.assert_close(k, torch.tensor(stack["k"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(v, torch.tensor(stack["v"]), atol=1e-5, rtol=0)
    # Order matters: the reversed stack is a different function.
    k_rev, _ = apply_hypernetworks(zip(networks[::-1], stack["multipliers"][::-1]), x)
    assert not torch.allclose(k_rev, k, atol=1e-5)


def test_dropout_is_off_at_inference_and_shifts_indices():
    network = load_hypernetwork(A1111_FIXTURES / "leaky_dropout.pt")
    module = network.layers[40][0]
    kinds = [type(layer).__name__ for layer in module.linear]
    assert kinds == ["Linear", "LeakyReLU", "Dropout", "Linear"]
    assert module.linear[0].out_features == 60  # int(40 * 1.5)
    x = torch.randn(2, 5, 40)
    assert torch.equal(module(x), module(x))  # eval mode: deterministic


def test_train_mode_forces_multiplier_one():
    network = load_hypernetwork(A1111_FIXTURES / "plain_linear.pt")
    module = network.layers[32][0]
    x = torch.randn(1, 3, 32)
    expected = module(x, 1.0)
    network.train()
    assert all(p.requires_grad for p in network.weights())
    torch.testing.assert_close(module(x, 0.25), expected)
    network.eval()
    assert not any(p.requires_grad for p in network.weights())


def test_prompts_match_reference_grammar():
    for case in json.loads((A1111_FIXTURES / "prompts.json").read_text()):
        cleaned, tags = parse_prompt(case["prompt"])
        assert cleaned == case["cleaned"]
        assert [{"network": t.network, "items": list(t.items)} for t in tags] == case["networks"]


def test_a1111_usage_examples():
    """The way AUTOMATIC1111's code and its extensions use the classes."""
    hn = Hypernetwork(name="mine", enable_sizes=[768, 320], layer_structure=[1, 2, 1], activation_func="relu",
                      weight_init="Normal", add_layer_norm=False, use_dropout=False)
    assert set(hn.layers) == {768, 320}
    hn.set_multiplier(0.5)
    context = torch.randn(1, 77, 768)
    k, v = apply_hypernetworks([(hn, 0.5)], context)
    k_module, v_module = hn.layers[768]
    assert k_module.multiplier == 0.5
    # AUTOMATIC1111's forward: x + self.linear(x) * multiplier, on the bare Sequential
    with torch.no_grad():
        torch.testing.assert_close(k, context + k_module.linear(context) * 0.5)
        torch.testing.assert_close(v, context + v_module.linear(context) * 0.5)
    torch.testing.assert_close(k_module(context), k)  # set_multiplier, then module(x): the same numbers
    assert not torch.allclose(k, context) and not torch.allclose(k, v)
    assert len(hn.weights()) == 2 * 2 * 4  # 2 sizes x (K, V) x (2 Linear: weight + bias)
