"""The models folder: scanning, names, previews, descriptions, cached metadata, broken files."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from conftest import A1111_FIXTURES
from extension.fileio import sha256_file
from extension.hypernetwork import Hypernetwork
from extension.library import HypernetworkLibrary
from extension.prompt.tags import HypernetworkRequest


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "hypernetworks"
    (root / "styles" / "old").mkdir(parents=True)
    shutil.copy(A1111_FIXTURES / "plain_linear.pt", root / "plain_linear.pt")
    shutil.copy(A1111_FIXTURES / "relu_layernorm.pt", root / "styles" / "relu_layernorm.pt")
    shutil.copy(A1111_FIXTURES / "leaky_dropout.pt", root / "styles" / "old" / "leaky.ckpt")
    Hypernetwork(name="fresh", enable_sizes=[32]).save(root / "styles" / "fresh.safetensors")
    (root / "broken.pt").write_bytes(b"\x80\x04garbage")
    (root / "plain_linear.preview.png").write_bytes(b"png")
    (root / "styles" / "relu_layernorm.jpg").write_bytes(b"jpg")
    (root / "plain_linear.txt").write_text("Turns everything into plain lines.\n")
    (root / "styles" / "fresh.json").write_text(json.dumps({"description": "A fresh one", "notes": "v2"}))
    (root / "notes.txt").write_text("not a network")
    return root


def test_scan_lists_every_kind_with_previews_and_descriptions(folder):
    library = HypernetworkLibrary(folder)
    entries = {e.name: e for e in library.entries()}
    assert set(entries) == {"plain_linear", "relu_layernorm", "leaky", "fresh", "broken"}
    assert entries["leaky"].rel_path == "styles/old/leaky.ckpt"
    assert entries["plain_linear"].preview.name == "plain_linear.preview.png"
    assert entries["relu_layernorm"].preview.name == "relu_layernorm.jpg"
    assert entries["fresh"].preview is None
    assert entries["plain_linear"].description() == "Turns everything into plain lines."
    assert entries["fresh"].description() == "A fresh one\nv2"
    assert entries["plain_linear"].local_preview == folder / "plain_linear.preview.png"


def test_broken_file_is_listed_with_its_error_and_the_rest_work(folder):
    library = HypernetworkLibrary(folder)
    broken = library.details(library.get("broken"))
    assert broken.info is None and broken.error
    good = library.details(library.get("relu_layernorm"))
    assert good.error is None and good.info.sizes == (32, 48) and good.info.activation_func == "relu"
    networks, messages = library.resolve([HypernetworkRequest("broken", 1.0), HypernetworkRequest("fresh", 0.5)])
    assert [(n.name, m) for n, m in networks] == [("fresh", 0.5)]
    assert len(messages) == 1 and "broken" in messages[0] and "could not be loaded" in messages[0]


def test_unknown_names_get_a_suggestion_and_never_leave_the_folder(folder, tmp_path):
    library = HypernetworkLibrary(folder)
    networks, messages = library.resolve([HypernetworkRequest("plain_linaer", 1.0)])
    assert networks == [] and "unknown hypernetwork" in messages[0] and "plain_linear" in messages[0]
    outside = tmp_path / "outside.pt"
    shutil.copy(A1111_FIXTURES / "plain_linear.pt", outside)
    for name in ("../outside", str(outside), "../outside.pt", "/etc/passwd"):
        assert library.get(name) is None
        with pytest.raises(KeyError):
            library.load(name)
    os.symlink(outside, folder / "link.pt")
    library.refresh()
    assert library.get("link") is None  # a link out of the folder is not listed
    with pytest.raises(ValueError):
        library.path_inside("../outside.pt")


def test_same_stem_in_two_folders_keeps_names_unique(folder):
    shutil.copy(A1111_FIXTURES / "novelai_old_format.pt", folder / "styles" / "plain_linear.pt")
    library = HypernetworkLibrary(folder)
    names = {e.name: e.rel_path for e in library.entries()}
    assert len(names) == len(library.entries())
    # AUTOMATIC1111 keeps the last in lower-cased path order under the plain stem; the other is named by its
    # path (with its suffix here, since without it the path would be the bare stem again).
    assert names["plain_linear"] == "styles/plain_linear.pt"
    assert names["plain_linear.pt"] == "plain_linear.pt"
    assert library.load("plain_linear.pt").sizes() == [32, 64]
    assert library.load("styles/plain_linear").sizes() == [32, 64]


def test_refresh_notices_added_changed_and_removed(folder):
    library = HypernetworkLibrary(folder)
    first = library.details(library.get("fresh")).info
    assert first.step == 0
    (folder / "plain_linear.pt").unlink()
    shutil.copy(A1111_FIXTURES / "novelai_old_format.pt", folder / "added.pt")
    newer = Hypernetwork(name="fresh", enable_sizes=[32, 64])
    newer.step = 7  # same file size as before: the header says 7 where it said 0
    newer.save(folder / "styles" / "fresh.safetensors")
    report = library.refresh()
    assert report.added == ("added",) and report.removed == ("plain_linear",) and report.changed == ("fresh",)
    assert library.details(library.get("fresh")).info.step == 7
    assert library.load("fresh").sizes() == [32, 64]


def test_loaded_networks_are_cached_by_file_identity(folder):
    library = HypernetworkLibrary(folder)
    first = library.load("plain_linear")
    assert library.load("plain_linear") is first
    assert library.sha256(library.get("plain_linear")) == first.sha256 == sha256_file(folder / "plain_linear.pt")
    shutil.copy(A1111_FIXTURES / "relu_layernorm.pt", folder / "plain_linear.pt")
    os.utime(folder / "plain_linear.pt", (time.time() + 5, time.time() + 5))
    library.refresh()
    assert library.load("plain_linear") is not first


def test_a_slow_load_blocks_neither_the_listing_nor_other_files_and_reads_a_file_once(folder, monkeypatch):
    import extension.library as library_module

    real_load, reads = library_module.load_hypernetwork, []
    gate, started = threading.Event(), threading.Event()

    def slow_load(path):  # the real reader, held back for plain_linear.pt (a big file on a slow disk)
        reads.append(path.name)
        if path.name == "plain_linear.pt":
            started.set()
            assert gate.wait(30)
        return real_load(path)

    monkeypatch.setattr(library_module, "load_hypernetwork", slow_load)
    library = HypernetworkLibrary(folder)
    results = []
    loaders = [threading.Thread(target=lambda: results.append(library.load("plain_linear"))) for _ in range(2)]
    loaders[0].start()
    assert started.wait(30)
    loaders[1].start()  # the same file, asked while it is being read
    try:  # meanwhile everything else answers at once
        assert "plain_linear" in library.names() and library.details(library.get("fresh")).info is not None
        assert library.load("fresh").name == "fresh"
        with pytest.raises(Exception, match="could not be loaded|not a|truncated|corrupt"):
            library.load("broken")
    finally:
        gate.set()
    for thread in loaders:
        thread.join(30)
    assert len(results) == 2 and results[0] is results[1]
    assert reads.count("plain_linear.pt") == 1  # read once, the second request took the first one's result
    assert library.load("plain_linear") is results[0]


def test_a_thousand_files_list_without_reading_them(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    source = A1111_FIXTURES / "plain_linear.pt"
    for i in range(1000):
        os.link(source, root / f"net_{i:04d}.pt")
    library = HypernetworkLibrary(root)
    entries = library.entries()
    assert len(entries) == 1000 and entries[0].name == "net_0000"
    assert all(library.known_sha256(e) is None for e in entries[:10])  # listing reads no file contents
