"""Every pickle this project writes opens in AUTOMATIC1111 (1.8 and 1.10), and still loads here with
``torch.load(weights_only=True)`` into AUTOMATIC1111's dict shape (plain containers and tensors only)."""
from __future__ import annotations

import io
import zipfile

import pytest
import torch

from a1111_safety import Refused, check
from builders import make_hypernetwork
from extension import safe_pickle
from extension.hypernetwork import Hypernetwork, load_hypernetwork

VERSIONS = ("1.8", "1.10")


def written_files(folder):
    """Every kind of pickle the project writes, by the code that writes it: ``{kind: path}``."""
    files = {}
    net = make_hypernetwork("net", [16, 24], seed=1, activation_func="relu", add_layer_norm=True,
                            use_dropout=True, dropout_structure=[0, 0.1, 0])
    net.save(folder / "net.pt")
    files["hypernetwork .pt"] = folder / "net.pt"
    linear = Hypernetwork("linear", enable_sizes=[768, 320])  # A1111's defaults: [1, 2, 1], linear
    optimizer = torch.optim.AdamW(linear.weights(), lr=1e-3)
    linear.train()
    sum(p.sum() for p in linear.weights()).backward()
    optimizer.step()
    linear.eval()
    linear.save(folder / "linear.pt", optimizer_state_dict=optimizer.state_dict())
    files["hypernetwork .pt (A1111 defaults)"] = folder / "linear.pt"
    files[".pt.optim sidecar"] = folder / "linear.pt.optim"
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return written_files(tmp_path_factory.mktemp("written"))


@pytest.mark.parametrize("version", VERSIONS)
def test_automatic1111_accepts_every_pickle_we_write(files, version):
    for kind, path in files.items():
        check(path, version)  # raises Refused
        with zipfile.ZipFile(path) as archive:  # and the members are what 1.8 accepts: nothing else
            assert {n.split("/", 1)[1] if not n.split("/", 1)[1].startswith("data/") else "data/N"
                    for n in archive.namelist()} == {"data.pkl", "data/N", "version"}, kind


def test_a_plain_torch_save_is_refused_by_the_rule(tmp_path):
    """The rule restated in a1111_safety is the one that refuses today's torch.save (the bug this fixes)."""
    path = tmp_path / "plain.pt"
    torch.save({768: ({}, {}), "name": "x"}, path)
    for version in VERSIONS:
        with pytest.raises(Refused, match="bad file inside"):
            check(path, version)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    legacy = tmp_path / "legacy.pt"
    torch.save(Evil(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(Refused, match="print. is forbidden"):
        check(legacy, "1.10")


def test_what_we_write_loads_back_with_weights_only(files):
    for kind, path in files.items():
        state = torch.load(path, weights_only=True, map_location="cpu")
        assert isinstance(state, dict), kind
    net = torch.load(files["hypernetwork .pt"], weights_only=True)
    assert [k for k in net if type(k) is int] == [16, 24]
    assert isinstance(net[16], tuple) and all(isinstance(sd, dict) for sd in net[16])
    assert net["layer_structure"] == [1, 2, 1] and net["dropout_structure"] == [0, 0.1, 0]
    reloaded = load_hypernetwork(files["hypernetwork .pt (A1111 defaults)"])
    assert reloaded.optimizer_state_dict is not None  # the sidecar is the file's own
    sidecar = torch.load(files[".pt.optim sidecar"], weights_only=True)
    assert sidecar["hash"] == reloaded.shorthash() and sidecar["optimizer_name"] == "AdamW"
    assert set(sidecar["optimizer_state_dict"]) == {"state", "param_groups"}


def test_records_are_aligned_and_mmap_loads(files):
    """torch aligns every record at 64 bytes; so do we (torch.load(mmap=True) relies on it)."""
    data = files["hypernetwork .pt"].read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
                int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
            assert (info.header_offset + 30 + name_length + extra_length) % safe_pickle.ALIGNMENT == 0
    mapped = torch.load(files["hypernetwork .pt"], weights_only=True, mmap=True)
    plain = torch.load(files["hypernetwork .pt"], weights_only=True)
    assert all(torch.equal(mapped[16][0][k], plain[16][0][k]) for k in plain[16][0])
