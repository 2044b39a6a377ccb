"""Hostile files in the models folders (``tests/hostile_files.py`` writes them): for each, no code runs, nothing
outside the folder is read, the card and the API say what is wrong, every other file still works, and reading
it stays within the stated memory limits.

The limits (see ``extension/safe_pickle.py``, ``extension/safetensors_file.py``):

- a hypernetwork file (``.pt``/``.ckpt``/``.optim``, ``.safetensors``) makes the reader allocate at most its
  tensors' bytes, never more than the file holds nor 4 GiB, plus a pickle within 4 MiB / 262,144 opcodes /
  65,536 objects or a header within 2 MiB; a listing reads zip directories, pickles and headers only;
- a checkpoint likewise, its tensors never more than the file holds, its pickle within 64 MiB / 2,097,152
  opcodes / 524,288 objects, its header within 8 MiB;
- measured here: no hostile file raises a reading process's peak memory by more than :data:`PER_FILE_MB`, and a
  pickle or header built right at the limits stays under it too.
"""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import hostile_files
from hostile_files import CHECKPOINTS, HYPERNETWORKS, markers_found

ROOT = Path(__file__).resolve().parent.parent
PER_FILE_MB = 64  # the most one hostile file may raise a reading process's peak memory (stated limit)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    return hostile_files.write_all(tmp_path_factory.mktemp("hostile"))


def of(manifest: dict, folder: str, outcome: str | None = None) -> list[hostile_files.Hostile]:
    return [hostile_files.Hostile(**{k: v for k, v in item.items() if k != "name"}) for item in manifest["files"]
            if item["folder"] == folder and (outcome is None or item["outcome"] == outcome)]


class OpenedPaths:
    """Every path this process opens or lists while active (Python's audit events ``open``, ``os.listdir``,
    ``os.scandir``): what was read, whether by Python, PIL, or torch through a Python file object."""

    _active: list[list[str]] = []
    _installed = False

    def __enter__(self) -> list[str]:
        if not OpenedPaths._installed:
            sys.addaudithook(OpenedPaths._hook)
            OpenedPaths._installed = True
        self.paths: list[str] = []
        OpenedPaths._active.append(self.paths)
        return self.paths

    def __exit__(self, *exc):
        OpenedPaths._active.remove(self.paths)

    @staticmethod
    def _hook(event, args):
        if OpenedPaths._active and event in ("open", "os.listdir", "os.scandir") and args \
                and isinstance(args[0], (str, bytes, os.PathLike)):
            for paths in OpenedPaths._active:
                paths.append(os.fsdecode(args[0]))


def outside_reads(paths: list[str], manifest: dict) -> list[str]:
    outside = Path(manifest["outside"]).resolve()
    return sorted({p for p in paths if Path(p).resolve().is_relative_to(outside)})


# -- the generator ---------------------------------------------------------------------------------------------
def test_the_generator_writes_every_kind_the_issue_names(manifest):
    kinds = {item["kind"].split(":", 1)[1] for item in manifest["files"]}
    for wanted in ("reduce-os-system", "reduce-builtins-exec", "reduce-builtins-eval", "reduce-importlib",
                   "in-storage-type", "in-tensor-rebuild", "protocol0", "legacy-reduce", "legacy-huge-storage",
                   "truncated-half", "truncated-tail", "bitflip-pickle", "bitflip-directory", "st-offsets-beyond",
                   "st-shape-lie", "st-length-lie", "st-gigantic-header", "zip-bomb", "zip-bomb-lying",
                   "zip-overlap", "stored-overclaim", "pickle-bomb", "symlink-out", "symlink-dir-out",
                   "name-dots", "name-unicode", "name-shell", "optim-sidecar"):
        assert wanted in kinds, wanted
    assert len({item["kind"] for item in manifest["files"]}) == len(manifest["files"])
    for item in manifest["files"]:
        folder = Path(manifest[HYPERNETWORKS if item["folder"] == HYPERNETWORKS else "checkpoints"])
        assert os.path.lexists(folder / item["path"]), item
    bomb = Path(manifest["hypernetworks"]) / "zip-bomb.pt"
    assert bomb.stat().st_size < 10_000_000  # 8 GiB of zeros, deflated, in under 10 MB on disk
    import zipfile
    with zipfile.ZipFile(bomb) as archive:
        assert max(info.file_size for info in archive.infolist()) == 8 << 30
    assert markers_found(manifest) == []


# -- the library, in this process -------------------------------------------------------------------------------
def test_hypernetworks_folder_lists_refuses_and_keeps_the_rest_working(manifest):
    from extension.errors import HypernetworkError
    from extension.hypernetwork import files
    from extension.library import HypernetworkLibrary
    from extension.ui import cards

    with OpenedPaths() as opened:
        library = HypernetworkLibrary(manifest["hypernetworks"])
        names = set(library.names())
        built = {entry.name: cards.make_card(library, entry, {48, 64, 80}) for entry in library.entries()}
        for item in of(manifest, HYPERNETWORKS):
            if item.outcome == "hidden":
                assert item.name not in names, item
                continue
            assert item.name in names, item
            card = built[item.name]
            if item.outcome == "refused":
                assert card.error and re.search(item.error, card.error, re.I), (item, card.error)
                page = cards.card_html(card, 1.0)
                assert "failed to load" in page and html.escape(card.error, quote=True) in page
                with pytest.raises(HypernetworkError, match=f"(?i){item.error}") as excinfo:
                    library.load(item.name)
                assert item.path in str(excinfo.value)  # the error names the file
            else:
                assert card.error is None, (item, card.error)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    network = library.load(item.name)
                assert set(network.layers) == {48, 64, 80}
                if item.outcome == "sidecar":  # the network loads; its sidecar is refused with a warning
                    assert any("ignoring optimizer state" in str(w.message) for w in caught)
        sidecar = of(manifest, HYPERNETWORKS, "sidecar")[0]
        with pytest.warns(UserWarning, match="refused to load"):
            assert files.read_optimizer_state(Path(manifest["hypernetworks"]) / sidecar.path, "x") is None
        assert built["preview_bomb"].preview is None and built["good"].preview is None
        assert built["huge_description"].description.startswith("A long story.")
        assert len(built["huge_description"].description) <= 64 << 10
        assert built["huge_json_description"].description == ""
        extras = library.get("linked_extras")
        assert extras.preview is None and extras.description_path is None and built["linked_extras"].description == ""
        assert not any(name.startswith("escape-dir") or "secret" in name for name in names)
        skipped = dict(library.skipped())  # what was left out is said, unread
        for item in of(manifest, HYPERNETWORKS, "hidden"):
            if item.path.endswith(".pt"):
                shown = item.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                assert shown in skipped, (item, skipped)
        assert "links out" not in cards.skipped_html([]) and "escape.pt" in cards.skipped_html(list(skipped.items()))
    assert outside_reads(opened, manifest) == []
    assert markers_found(manifest) == []


def test_prompt_names_never_leave_the_folder(manifest):
    from extension.library import HypernetworkLibrary
    from extension.prompt.tags import HypernetworkRequest

    library = HypernetworkLibrary(manifest["hypernetworks"])
    secret = Path(manifest["outside"]) / "hn" / "secret.pt"
    for name in ("../outside/hn/secret", "../outside/hn/secret.pt", str(secret), "escape-dir/secret",
                 "escape-dir/secret.pt", "escape", "..", "../", "."):
        assert library.get(name) is None, name
        networks, messages = library.resolve([HypernetworkRequest(name, 1.0)])
        assert networks == [] and "unknown hypernetwork" in messages[0], name


def test_checkpoints_folder_lists_and_refuses_without_running_anything(manifest):
    from extension.checkpoints.manager import ModelManager
    from extension.errors import ModelError

    with OpenedPaths() as opened:
        manager = ModelManager(manifest["checkpoints"], device="cpu")
        listed = {info.name for info in manager.list_checkpoints()}
        for item in of(manifest, CHECKPOINTS):
            if item.outcome == "hidden":
                assert item.path not in listed, item
                continue
            assert item.path in listed, item
            with pytest.raises(ModelError, match=f"(?i){item.error}") as excinfo, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                manager.load(item.path)
            assert item.path in str(excinfo.value)
            assert manager.loaded is None
    assert outside_reads(opened, manifest) == []
    assert markers_found(manifest) == []


# -- memory ----------------------------------------------------------------------------------------------------
def run_child(code: str, timeout: float = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


LINUX_MEMORY = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                  reason="peak memory is read from Linux's /proc/self (VmHWM, clear_refs)")


@LINUX_MEMORY
def test_no_hostile_file_makes_a_reader_allocate_beyond_the_limit(manifest, tmp_path):
    """Each file read alone in a fresh process (listing, then loading), its peak RSS above the process's RSS
    before it: the bombs included, none over :data:`PER_FILE_MB`."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    out = run_child(f"import json, hostile_files; print(json.dumps(hostile_files.measure("
                    f"json.load(open({str(path)!r})))))")
    records = json.loads(out)
    (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
    (ROOT / "tests" / "artifacts" / "hostile_files_memory.json").write_text(json.dumps(records, indent=1))
    expected = {item["kind"]: item for item in manifest["files"]}
    assert {r["kind"] for r in records} == {k for k, item in expected.items() if item["outcome"] != "hidden"}
    for record in records:
        item = expected[record["kind"]]
        assert record["peak_mb"] <= PER_FILE_MB, record
        if item["outcome"] == "refused":
            assert record["outcome"] != "ok" and re.search(item["error"], record["outcome"], re.I), record
        else:
            assert record["outcome"] == "ok", record
    assert markers_found(manifest) == []


AT_THE_LIMITS = r'''
import io, json, struct, hostile_files
from extension import safe_pickle
from extension.hypernetwork import files
from extension.checkpoints import weights

def measured(function, *args, **kwargs):
    import gc
    gc.collect()
    before = hostile_files._memory_mb("VmRSS")
    hostile_files._reset_peak()
    try:
        function(*args, **kwargs)
        outcome = "ok"
    except Exception as exc:
        outcome = str(exc)[:200]
    return {"peak_mb": round(hostile_files._memory_mb("VmHWM") - before, 1), "outcome": outcome}

out = {}
for label, limits in (("hypernetwork", safe_pickle.HYPERNETWORK), ("checkpoint", safe_pickle.CHECKPOINT)):
    sets = limits.max_pickle_objects - 1
    nones = limits.max_pickle_ops - sets - 3
    pkl = b"\x80\x02" + b"\x8f" * sets + b"N" * nones + b"."  # every object an empty set, the rest None
    data = hostile_files.torch_zip(pkl, {})
    out[label + " pickle"] = measured(safe_pickle.load, data, limits=limits) | {"bytes": len(pkl)}
    more = hostile_files.torch_zip(b"\x80\x02" + b"\x8f" * (sets + 2) + b".", {})
    out[label + " pickle over"] = measured(safe_pickle.load, more, limits=limits)
for label, cap, module in (("hypernetwork", files.MAX_SAFETENSORS_HEADER, files),
                           ("checkpoint", weights.MAX_SAFETENSORS_HEADER, weights)):
    body = b'{"__metadata__":{"a":[' + b"{}," * ((cap - 40) // 3) + b'{}]}}'  # JSON at the cap, all small objects
    body = body + b" " * (cap - len(body))
    data = struct.pack("<Q", len(body)) + body
    from extension import safetensors_file
    out[label + " header"] = measured(safetensors_file.read_header, io.BytesIO(data), cap) | {"bytes": len(body)}
print(json.dumps(out))
'''


@LINUX_MEMORY
def test_pickles_and_headers_right_at_the_limits_stay_within_the_limit():
    """The worst a file can do within the limits: a pickle of empty sets (the costliest object per opcode) at
    the object and opcode limits, a safetensors header of small JSON objects at the header limit."""
    results = json.loads(run_child(AT_THE_LIMITS))
    (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
    (ROOT / "tests" / "artifacts" / "hostile_files_limits.json").write_text(json.dumps(results, indent=1))
    for label in ("hypernetwork", "checkpoint"):
        pickle_at = results[f"{label} pickle"]
        assert "pickle bomb" not in pickle_at["outcome"], pickle_at  # within the limits: unpickled
        assert "pickle bomb" in results[f"{label} pickle over"]["outcome"]
        assert results[f"{label} header"]["outcome"].startswith("corrupt safetensors header")  # parsed, then refused
    for label in ("hypernetwork pickle", "hypernetwork header"):
        assert results[label]["peak_mb"] <= PER_FILE_MB, (label, results[label])
    # checkpoints: a load allocates gigabytes anyway; their pickle and header limits are stated and measured
    for label in ("checkpoint pickle", "checkpoint header"):
        assert results[label]["peak_mb"] <= 4 * PER_FILE_MB, (label, results[label])


# -- a real server ---------------------------------------------------------------------------------------------
SERVER_PEAK_MB = 1024  # the whole server (UI, API, demo model) after listing, refusing and generating


@pytest.fixture(scope="module")
def server(manifest, tmp_path_factory):
    """The UI and the API over the hostile folders: it must start at all (a folder holding a bomb once kept it
    from answering)."""
    from api_server import ApiServer

    tmp = tmp_path_factory.mktemp("hostile-server")
    with ApiServer(tmp, Path(manifest["hypernetworks"]), ckpt_dir=Path(manifest["checkpoints"])) as running:
        yield running


def cards_panel(server) -> str:
    """The cards panel's HTML as the page first shows it (the ``hn_cards`` component in Gradio's config)."""
    import requests

    config = requests.get(f"{server.url}/config", timeout=120).json()
    return next(c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "hn_cards")


def card_of(panel: str, name: str) -> str:
    """The HTML of the card called ``name`` (from its opening tag to the next card's)."""
    starts = [m.start() for m in re.finditer(r'<div class="hn-card[ "]', panel)]
    at = panel.index(f'data-name="{html.escape(name, quote=True)}"')
    start = max(s for s in starts if s < at)
    end = min((s for s in starts if s > at), default=len(panel))
    return panel[start:end]


def test_server_lists_every_file_it_may_and_shows_each_error_on_its_card(server, manifest):
    listed = server.get("hypernetworks").json()
    names = {item["name"] for item in listed}
    expected = of(manifest, HYPERNETWORKS)
    assert names == {item.name for item in expected if item.outcome != "hidden"}
    errors = {item["name"]: item["error"] for item in listed}
    for item in expected:
        if item.outcome == "refused":
            assert errors[item.name] and re.search(item.error, errors[item.name], re.I), (item, errors[item.name])
        elif item.outcome != "hidden":
            assert errors[item.name] is None, (item, errors[item.name])
    assert all(Path(item["path"]).resolve().is_relative_to(Path(manifest["hypernetworks"]).resolve())
               for item in listed)
    panel = cards_panel(server)
    assert "SECRET TEXT" not in panel and "secret" not in panel
    assert "<img src=x" not in panel  # a name is text, never markup
    assert "hn-no-preview" in card_of(panel, "preview_bomb")  # 432 MB of pixels are not decoded for a card
    left_out = re.search(r'<div class="hn-skipped">(.*?)</div>', panel).group(1)  # links out are named, unread
    assert "escape.pt (a link to something outside the folder)" in html.unescape(left_out)
    assert "dangling.pt (a link to nothing" in html.unescape(left_out)
    for item in expected:
        if item.outcome == "hidden":
            assert f'data-name="{html.escape(item.name, quote=True)}"' not in panel, item
            continue
        card = card_of(panel, item.name)
        if item.outcome == "refused":
            assert "hn-card-error" in card and "failed to load" in card, item
            error = re.search(r'<div class="hn-error">(.*?)</div>', card).group(1)
            assert re.search(item.error, html.unescape(error), re.I), (item, error)
        else:
            assert "hn-card-error" not in card and "sizes 48, 64, 80" in card, item
    assert markers_found(manifest) == []
    assert_server_memory_bounded(server)


def test_server_generates_with_good_files_and_names_the_refused_ones(server, manifest):
    request = {"width": 32, "height": 32, "steps": 2, "seed": 5, "sampler_name": "Euler a"}
    good = [item.name for item in of(manifest, HYPERNETWORKS)
            if item.outcome in ("works", "sidecar") and not set(item.name) & set("<>:\n")]
    refused = [item for item in of(manifest, HYPERNETWORKS, "refused")]
    tags = " ".join(f"<hypernet:{name}:0.5>" for name in good)
    bad_tags = " ".join(f"<hypernet:{item.name}:1>" for item in refused)
    response = server.post("txt2img", {**request, "prompt": f"a red circle {tags} {bad_tags}"})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert [h["name"] for h in info["hypernetworks"]] == good
    for item in refused:
        line = next(m for m in info["messages"] if m.startswith(f"<hypernet:{item.name}>"))
        assert "could not be loaded" in line and re.search(item.error, line, re.I), line
    assert markers_found(manifest) == []
    assert_server_memory_bounded(server)


def test_server_refuses_each_hostile_checkpoint_and_keeps_its_model(server, manifest):
    titles = {item["title"] for item in server.get("sd-models").json()}
    for item in of(manifest, CHECKPOINTS):
        if item.outcome == "hidden":
            assert item.path not in titles, item
            continue
        assert item.path in titles, item
        response = server.post("options", {"sd_model_checkpoint": item.path})
        assert 400 <= response.status_code < 500, (item, response.text)
        assert re.search(item.error, response.json()["detail"], re.I), (item, response.text)
    assert server.get("options").json()["sd_model_checkpoint"] == "demo"
    response = server.post("txt2img", {"prompt": "a red circle <hypernet:good:1>", "width": 32, "height": 32,
                                       "steps": 2, "seed": 5})
    assert response.status_code == 200, response.text
    assert markers_found(manifest) == []
    assert_server_memory_bounded(server)


def assert_server_memory_bounded(server) -> float:
    """The server's peak RSS so far is within :data:`SERVER_PEAK_MB` and it still serves (every server test
    ends with this, so whatever order they run in, the last one covers all of them)."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    peak_mb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
    (ROOT / "tests" / "artifacts" / "hostile_files_server.json").write_text(json.dumps({"server_peak_mb": peak_mb}))
    assert peak_mb <= SERVER_PEAK_MB, peak_mb
    assert server.process.poll() is None
    return peak_mb


def test_server_memory_stays_bounded(server, manifest):
    """At start the server has listed both folders and drawn every card (previews and descriptions included)."""
    assert_server_memory_bounded(server)
    assert markers_found(manifest) == []
