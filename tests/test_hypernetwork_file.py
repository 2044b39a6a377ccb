"""Reading and writing hypernetwork files: round trips, AUTOMATIC1111's dict, and every kind of bad file."""
from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from conftest import A1111_FIXTURES
from extension.errors import HypernetworkError, NotAHypernetworkError, UnsafeFileError
from extension.hypernetwork import Hypernetwork
from extension.fileio import sha256_file
from extension.hypernetwork import load_hypernetwork, read_info
from extension.hypernetwork.files import read_safetensors_header
from builders import make_hypernetwork


def make_network(name="roundtrip", **overrides) -> Hypernetwork:
    """Every option away from its default, and all the metadata a file can hold."""
    options = dict(layer_structure=[1, 1.5, 1], activation_func="elu", add_layer_norm=True, use_dropout=True,
                   dropout_structure=[0, 0.1, 0], activate_output=True)
    options.update(overrides)
    hn = make_hypernetwork(name, [16, 24], seed=0, **options)
    hn.step, hn.sd_checkpoint, hn.sd_checkpoint_name, hn.optional_info = 123, "0123456789", "base-model", "notes"
    return hn


def inputs(size: int) -> torch.Tensor:
    return torch.randn(2, 5, size, generator=torch.Generator().manual_seed(size))


def outputs(hn: Hypernetwork, multiplier=0.7):
    """``{width: (K context, V context)}`` for a fixed context per width."""
    return {size: hn.apply(inputs(size), inputs(size), multiplier) for size in hn.layers}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_gives_identical_outputs(tmp_path, suffix):
    hn = make_network()
    path = tmp_path / f"net{suffix}"
    hn.save(path)
    loaded = load_hypernetwork(path)
    assert loaded.metadata() == hn.metadata() and loaded.metadata()["step"] == 123
    for size, (k, v) in outputs(hn).items():
        k2, v2 = outputs(loaded)[size]
        assert torch.equal(k, k2) and torch.equal(v, v2)
        assert not torch.allclose(k, inputs(size)) and not torch.allclose(k, v)  # the network does something
    assert loaded.shorthash() == sha256_file(path)[:10] == hn.shorthash()


def test_pt_is_a1111_dict_loadable_with_weights_only(tmp_path):
    hn = make_network()
    path = tmp_path / "net.pt"
    hn.save(path)
    state = torch.load(path, weights_only=True)
    assert [k for k in state if isinstance(k, int)] == [16, 24]
    assert isinstance(state[16], tuple) and len(state[16]) == 2
    assert all(t.dtype == torch.float32 for sd in state[16] for t in sd.values())
    assert list(state[16][0]) == list(hn.layers[16][0].state_dict())
    assert [k for k in state if isinstance(k, str)] == [
        "step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
        "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
        "last_layer_dropout", "optional_info"]
    assert state["last_layer_dropout"] is True and state["dropout_structure"] == [0, 0.1, 0]


def test_safetensors_listing_reads_only_the_header(tmp_path):
    hn = make_network()
    path = tmp_path / "net.safetensors"
    hn.save(path)
    header, metadata = read_safetensors_header(path)
    assert metadata["format"].startswith("sd-webui-hypernetworks")
    info = read_info(path)
    assert info.sizes == (16, 24) and info.layer_structure == (1, 1.5, 1) and info.activation_func == "elu"
    assert info.step == 123 and info.sd_checkpoint_name == "base-model" and info.add_layer_norm
    # The header alone suffices: metadata survives even when the weights are not read.
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - 4)
        handle.write(b"\0\0\0\0")
    assert read_info(path).sizes == (16, 24)


def test_kohya_list_pairs_and_unknown_keys_load(tmp_path):
    hn = make_network(layer_structure=[1, 2, 1], activation_func=None, add_layer_norm=False, use_dropout=False,
                      dropout_structure=None)
    state = {size: [pair[0].state_dict(), pair[1].state_dict()] for size, pair in hn.layers.items()}
    state["some_future_key"] = {"anything": 1}
    torch.save(state, tmp_path / "kohya.pt")
    loaded = load_hypernetwork(tmp_path / "kohya.pt")
    assert loaded.name == "kohya" and loaded.activate_output is True  # A1111's default for missing keys
    for size, (k, v) in outputs(hn).items():
        assert torch.equal(outputs(loaded)[size][0], k)


def test_optimizer_sidecar_resumes_only_with_matching_hash(tmp_path):
    hn = make_network()
    params = hn.weights()
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    path = tmp_path / "net.pt"
    hn.save(path, optimizer_state_dict=optimizer.state_dict())
    sidecar = torch.load(str(path) + ".optim", weights_only=True)
    assert sidecar["hash"] == sha256_file(path)[:10] and sidecar["optimizer_name"] == "AdamW"
    resumed = load_hypernetwork(path)
    assert resumed.optimizer_state_dict is not None
    copy = tmp_path / "changed.pt"
    make_network(name="other").save(copy)
    shutil.copy(str(path) + ".optim", str(copy) + ".optim")
    assert load_hypernetwork(copy).optimizer_state_dict is None  # hash of another file: not used


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch, suffix):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MARKER", str(marker))
    path = tmp_path / f"evil{suffix}"
    torch.save({768: RunsCode(), "name": "evil"}, path)
    with pytest.raises(UnsafeFileError, match="evil") as excinfo:
        load_hypernetwork(path)
    assert "refused" in str(excinfo.value)
    plain = tmp_path / "evil_plain.pt"
    plain.write_bytes(pickle.dumps({768: RunsCode()}))
    with pytest.raises(UnsafeFileError):
        read_info(plain)
    assert not marker.exists()


def write_weights(path, state):
    torch.save(state, path)
    return path


def bad_files(tmp_path):
    good = make_network(layer_structure=[1, 2, 1], activation_func="relu", add_layer_norm=False,
                        use_dropout=False, dropout_structure=None)
    good_state = {16: tuple(m.state_dict() for m in good.layers[16]), "layer_structure": [1, 2, 1],
                  "activation_func": "relu"}
    nan_state = {16: tuple({k: v.clone() for k, v in m.state_dict().items()} for m in good.layers[16]),
                 "layer_structure": [1, 2, 1], "activation_func": "relu"}
    nan_state[16][0]["linear.0.weight"][0, 0] = float("nan")
    truncated = tmp_path / "truncated.pt"
    write_weights(truncated, good_state)
    truncated.write_bytes(truncated.read_bytes()[:300])
    truncated_st = tmp_path / "truncated.safetensors"
    good.save(truncated_st)
    truncated_st.write_bytes(truncated_st.read_bytes()[:-100])
    checkpoint = tmp_path / "checkpoint.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(checkpoint))
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attn1_to_k.lora_up.weight": torch.zeros(2, 2)}, str(lora))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_bytes(b"this is not a pickle at all")
    return {
        "shapes.pt": (write_weights(tmp_path / "shapes.pt", {**good_state, "layer_structure": [1, 3, 1]}),
                      "shape"),
        "layout.pt": (write_weights(tmp_path / "layout.pt", {**good_state, "activation_func": "linear"}),
                      "do not fit the layout"),
        "start.pt": (write_weights(tmp_path / "start.pt", {**good_state, "layer_structure": [2, 2, 1]}),
                     "start with size 1"),
        "dropout.pt": (write_weights(tmp_path / "dropout.pt", {**good_state, "dropout_structure": [0, 0.2]}),
                       "dropout structure"),
        "dropout_range.pt": (write_weights(tmp_path / "dropout_range.pt",
                                           {**good_state, "dropout_structure": [0, 1.5, 0]}), r"\[0, 1\)"),
        "activation.pt": (write_weights(tmp_path / "activation.pt", {**good_state, "activation_func": "nope"}),
                          "unsupported activation"),
        "nan.pt": (write_weights(tmp_path / "nan.pt", nan_state), "NaN"),
        "pair.pt": (write_weights(tmp_path / "pair.pt", {16: 5}), r"not a \(K, V\) pair"),
        "embedding.pt": (write_weights(tmp_path / "embedding.pt",
                                       {"string_to_param": {"*": torch.zeros(1, 768)}, "name": "emb"}), "embedding"),
        "checkpoint.ckpt": (write_weights(tmp_path / "checkpoint.ckpt",
                                          {"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}), "checkpoint"),
        "checkpoint.safetensors": (checkpoint, "checkpoint"),
        "lora.safetensors": (lora, "LoRA"),
        "truncated.pt": (truncated, "truncated"),
        "truncated.safetensors": (truncated_st, "truncated"),
        "empty.pt": (tmp_path / "empty.pt", "empty"),
        "text.pt": (tmp_path / "text.pt", "not a readable PyTorch file|truncated or corrupt"),
        "list.pt": (write_weights(tmp_path / "list.pt", [1, 2, 3]), "not a hypernetwork"),
    }


def test_each_bad_file_gets_its_own_clear_error(tmp_path):
    for name, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(HypernetworkError, match=message) as excinfo:
            load_hypernetwork(path)
        assert str(path) in str(excinfo.value), name
        if name == "nan.pt":  # a listing reads no weights (headers and pickles only): values are checked on load
            assert read_info(path).sizes == (16,)
            continue
        with pytest.raises(HypernetworkError, match=message):
            read_info(path)
    with pytest.raises(NotAHypernetworkError):
        load_hypernetwork(tmp_path / "lora.safetensors")


def test_reference_files_keep_loading_after_a_save_and_reload(tmp_path):
    for name in ("plain_linear.pt", "relu_layernorm.pt", "leaky_dropout.pt", "novelai_old_format.pt"):
        original = load_hypernetwork(A1111_FIXTURES / name)
        for suffix in (".pt", ".safetensors"):
            original.save(tmp_path / f"copy{suffix}")
            copy = load_hypernetwork(tmp_path / f"copy{suffix}")
            for size, (k, v) in outputs(original).items():
                k2, v2 = outputs(copy)[size]
                assert torch.equal(k, k2) and torch.equal(v, v2), (name, suffix)
