"""Building hypernetworks: every option behaves as AUTOMATIC1111's does."""
from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from extension.errors import HypernetworkError
from extension.hypernetwork import Hypernetwork, HypernetworkModule, activation_classes, parse_dropout_structure


def kinds(module: HypernetworkModule) -> list[str]:
    return [type(layer).__name__ for layer in module.linear]


def test_layout_matches_a1111_state_dict_indices():
    assert list(HypernetworkModule(8, layer_structure=[1, 2, 1]).state_dict()) == [
        "linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"]
    relu = HypernetworkModule(8, layer_structure=[1, 2, 1], activation_func="relu")
    assert [k for k in relu.state_dict() if k.endswith("weight")] == ["linear.0.weight", "linear.2.weight"]
    relu_ln = HypernetworkModule(8, layer_structure=[1, 2, 1], activation_func="relu", add_layer_norm=True)
    assert kinds(relu_ln) == ["Linear", "ReLU", "LayerNorm", "Linear", "LayerNorm"]
    dropout = HypernetworkModule(8, layer_structure=[1, 2, 1], activation_func="relu", dropout_structure=[0, 0.3, 0])
    assert [k for k in dropout.state_dict() if k.endswith("weight")] == ["linear.0.weight", "linear.3.weight"]


def test_activate_output_and_fractional_widths():
    module = HypernetworkModule(10, layer_structure=[1, 1.55, 1], activation_func="tanh", activate_output=True)
    assert kinds(module) == ["Linear", "Tanh", "Linear", "Tanh"]
    assert module.linear[0].out_features == 15  # int(10 * 1.55), truncated


def test_swish_is_hardswish_and_torch_activations_are_accepted():
    classes = activation_classes()
    assert classes["swish"] is torch.nn.Hardswish
    for name in ("linear", "relu", "leakyrelu", "elu", "tanh", "sigmoid", "silu", "mish", "gelu", "softsign",
                 "prelu", "hardswish", "selu", "celu", "softplus", "relu6", "tanhshrink"):
        assert name in classes, name
    for name in ("threshold", "multiheadattention", "glu"):  # need arguments or change the width
        assert name not in classes
    prelu = HypernetworkModule(8, layer_structure=[1, 2, 1], activation_func="prelu")
    assert "linear.1.weight" in prelu.state_dict()  # PReLU's own parameter keeps its index


@pytest.mark.parametrize("use_dropout,last,structure,expected", [
    (False, True, [1, 2, 1], [0, 0, 0]),
    (True, False, [1, 2, 1], [0, 0, 0]),
    (True, True, [1, 2, 1], [0, 0.3, 0]),
    (True, False, [1, 2, 2, 1], [0, 0.3, 0, 0]),
    (True, True, [1, 2, 2, 1], [0, 0.3, 0.3, 0]),
])
def test_parse_dropout_structure(use_dropout, last, structure, expected):
    assert parse_dropout_structure(structure, use_dropout, last) == expected


def test_hypernetwork_derives_dropout_structure_from_flags():
    hn = Hypernetwork(enable_sizes=[8], layer_structure=[1, 2, 2, 1], use_dropout=True)  # last_layer_dropout: True
    assert hn.dropout_structure == [0, 0.3, 0.3, 0]
    assert kinds(hn.layers[8][0]).count("Dropout") == 2
    explicit = Hypernetwork(enable_sizes=[8], layer_structure=[1, 2, 1], use_dropout=True,
                            dropout_structure=[0, 0.1, 0])
    assert explicit.layers[8][0].linear[1].p == 0.1


def test_weight_inits_follow_a1111_formulas():
    torch.manual_seed(0)
    normal = HypernetworkModule(256, layer_structure=[1, 2, 1], add_layer_norm=True)
    w = normal.linear[0].weight
    assert abs(w.std().item() - 0.01) < 0.001 and torch.all(normal.linear[0].bias == 0)
    layer_norm = normal.linear[1]
    assert abs(layer_norm.weight.std().item() - 0.01) < 0.003  # A1111's quirk: LN gain ~ N(0, 0.01)
    xavier = HypernetworkModule(256, layer_structure=[1, 2, 1], weight_init="XavierUniform")
    bound = (6 / (256 + 512)) ** 0.5
    assert xavier.linear[0].weight.abs().max() <= bound and xavier.linear[0].weight.abs().max() > 0.9 * bound
    kaiming = HypernetworkModule(256, layer_structure=[1, 2, 1], weight_init="KaimingNormal",
                                 activation_func="relu")
    assert abs(kaiming.linear[0].weight.std().item() - (2 / 256) ** 0.5) < 0.01
    leaky = HypernetworkModule(256, layer_structure=[1, 2, 1], weight_init="KaimingUniform",
                               activation_func="leakyrelu")
    bound = 2 ** 0.5 * (3 / 256) ** 0.5  # kaiming_uniform_, nonlinearity='leaky_relu' with a=0: gain sqrt(2)
    assert 0.95 * bound < leaky.linear[0].weight.abs().max() <= bound * (1 + 1e-6)
    assert all(torch.all(m.linear[0].bias == 0) for m in (xavier, kaiming, leaky))


@pytest.mark.parametrize("kwargs,message", [
    (dict(layer_structure=[2, 2, 1]), "start with size 1"),
    (dict(layer_structure=[1, 2, 3]), "end with size 1"),
    (dict(layer_structure=[1, 2, 1], dropout_structure=[0, 0.5]), "as many entries"),
    (dict(layer_structure=[1, 2, 1], dropout_structure=[0, 1.0, 0]), "[0, 1)"),
    (dict(layer_structure=[1, 2, 1], activation_func="frobnicate"), "unsupported activation"),
    (dict(layer_structure=[1, 2, 1], weight_init="Uniformish"), "not defined as initialization"),
])
def test_bad_structures_raise_clear_errors(kwargs, message):
    with pytest.raises(HypernetworkError, match=message.replace("[", r"\[").replace(")", r"\)")):
        HypernetworkModule(8, **kwargs)


def test_forward_is_residual_and_scaled():
    hn = Hypernetwork(enable_sizes=[16], layer_structure=[1, 2, 1], weight_init="XavierNormal")
    k_module = hn.layers[16][0]
    x = torch.randn(2, 4, 16)
    delta = k_module(x, 1.0) - x
    torch.testing.assert_close(k_module(x, 0.5), x + 0.5 * delta, atol=1e-6, rtol=0)
    torch.testing.assert_close(k_module(x, -1.0), x - delta, atol=1e-6, rtol=0)
    other = torch.randn(1, 2, 24)  # no module for width 24: both contexts pass unchanged
    k, v = hn.apply(other, other + 1, 1.0)
    assert torch.equal(k, other) and torch.equal(v, other + 1)
    k16, v16 = hn.apply(x, x, 1.0)  # width 16: K and V each through their own module
    torch.testing.assert_close(k16, k_module(x, 1.0))
    torch.testing.assert_close(v16, hn.layers[16][1](x, 1.0))
    assert not torch.allclose(k16, x) and not torch.allclose(k16, v16)


def test_for_inference_leaves_the_shared_network_alone():
    hn = Hypernetwork(enable_sizes=[16], layer_structure=[1, 2, 1], add_layer_norm=True)
    assert hn.for_inference("cpu", torch.float32) is hn  # already where it must run
    half = hn.for_inference("cpu", torch.float16)  # fp16 on the CPU: A1111 keeps fp32 weights there too
    assert half is hn
    bf16_meta = hn.for_inference("meta", torch.float32)
    assert bf16_meta is not hn and bf16_meta.layers[16][0].linear[0].weight.device.type == "meta"
    assert hn.layers[16][0].linear[0].weight.device.type == "cpu"
    assert hn.for_inference("meta") is bf16_meta  # kept
    with torch.no_grad():
        hn.layers[16][0].linear[0].weight.add_(1.0)  # weights changed (training): a fresh copy
    assert hn.for_inference("meta") is not bf16_meta


def test_listing_the_activations_draws_nothing_from_the_global_generator():
    """A seeded init gives the same network whether or not the activation table was built before."""
    import subprocess
    import sys

    code = ("import sys, torch; sys.path.insert(0, '.'); torch.manual_seed(3); "
            "from extension.hypernetwork.config import activation_classes; activation_classes(); "
            "print(torch.rand(1).item())")
    drawn = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    torch.manual_seed(3)
    assert float(drawn.stdout.strip().splitlines()[-1]) == torch.rand(1).item(), drawn.stderr
