"""The host wing's host-independent parts, without a host: progress across processes, the installer's host rule,
host detection, inference-mode tensors, the loss plot."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import torch

from tests.builders import make_hypernetwork

ROOT = Path(__file__).resolve().parent.parent


def test_progress_lines_rebuild_the_monitor_on_the_other_side():
    from extension.training.monitor import TrainingMonitor
    from extension.training.progress_stream import MARK, MonitorMirror, ProgressWriter
    from extension.training.result import TrainingResult

    source, stream = TrainingMonitor(), io.StringIO()
    writer = ProgressWriter(source, stream)
    source.set_state("preparing", "encoding")
    writer.flush()
    source.begin(4, 10)
    source.add_loss(5, 0.25, 1e-4)
    source.add_loss(6, float("nan"), 1e-4)
    source.add_preview(6, Path("/tmp/p.png"))
    source.add_file(Path("/tmp/n-6.pt"))
    writer.flush()
    writer.flush()  # nothing changed: no line
    writer.result(TrainingResult("interrupted", "Training interrupted at 6 steps.", "/m/n.safetensors", 6, "/log"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith(MARK) for line in lines)
    mirror = MonitorMirror(TrainingMonitor())
    assert not mirror.feed("some other output of the process")
    for line in lines:
        assert mirror.feed(line)
    copy = mirror.monitor
    assert (copy.state, copy.first_step, copy.last_step, copy.step) == ("training", 4, 10, 6)
    assert [p.loss for p in copy.losses()][0] == 0.25 and copy.losses()[1].loss != copy.losses()[1].loss  # NaN
    assert copy.previews() == [(6, Path("/tmp/p.png"))] and copy.files() == [Path("/tmp/n-6.pt")]
    assert mirror.result.status == "interrupted" and mirror.result.step == 6
    assert "train embedding complete" in mirror.info


def test_install_py_installs_nothing_when_a_host_runs_it(tmp_path):
    host = tmp_path / "forge"
    (host / "modules").mkdir(parents=True)
    (host / "modules" / "launch_utils.py").write_text("")
    code = ("import sys, install\n"
            "install.pip = install.install_torch = lambda *a: sys.exit('would install')\n"
            "print(install.host_root()); install.main()")
    env = {"PYTHONPATH": f"{host}:{ROOT}", "PATH": "/usr/bin:/bin", "VENV_DIR": str(tmp_path / "no-venv")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(host), done
    env["PYTHONPATH"] = str(ROOT)  # the standalone launch: it would install
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "would install" in done.stderr and done.stdout.strip() == "None"


def test_no_host_is_detected_here():
    from extension.hosts.detect import running_host

    assert running_host() is None


def test_networks_run_on_inference_tensors_as_a_host_generates():
    """Forge generates under torch.inference_mode: contexts (and copies made there) are inference tensors."""
    from extension.hosts.unet_patch import HypernetworkAttentionPatch

    network = make_hypernetwork("n", [8], seed=0, layer_structure=[1, 1], activation_func=None)
    patch = HypernetworkAttentionPatch([(network, 0.7)], memo=True)
    with torch.inference_mode():
        context = torch.randn(2, 5, 8)
        first = patch(context, context, context, {})
        again = patch(context, context, context, {})
        placed = network.for_inference("cpu", torch.float32)
    assert torch.equal(first[1], again[1]) and again[1] is first[1]  # the memo: computed once per context
    assert torch.allclose(first[1], network.layers[8][0](context.clone(), 0.7))
    assert placed is network


def test_loss_plot_is_an_svg_of_the_mean_loss_per_step():
    from extension.hosts.webui.loss_plot import loss_svg, progress_html
    from extension.training.monitor import TrainingMonitor

    assert loss_svg([(1, 0.5)]) == ""
    svg = loss_svg([(1, 0.5), (2, 0.25), (3, float("nan")), (4, 0.1)])
    assert svg.startswith("<svg") and svg.count(",") >= 3 and "steps 1 to 4" in svg
    monitor = TrainingMonitor()
    monitor.begin(0, 3)
    monitor.add_loss(1, 0.4, 1e-3)
    monitor.add_loss(1, 0.2, 1e-3)
    monitor.add_loss(2, 0.1, 1e-3)
    text = progress_html(monitor)
    assert "step 2/3" in text and "loss 0.1 to 0.3" in text


# -- affine networks folded into a host UNet's projections (extension/hosts/unet_fold.py) -----------------------
def _tiny_unet():
    from tests.builders import tiny_pipeline

    unet = tiny_pipeline("sd1").unet
    widths = sorted({m.to_k.in_features for m in unet.modules() if hasattr(m, "to_k")})
    return unet, widths


def _run(unet, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 7, unet.config.cross_attention_dim, generator=generator)
    return unet(sample, torch.tensor([400, 400]), context).sample


def test_affine_networks_fold_into_the_projections_and_the_model_is_its_own_after():
    from extension.hosts.unet_fold import (FoldedProjection, all_affine, has_folded_projections,
                                           with_folded_hypernetworks)
    from extension.hypernetwork.reference import a1111_hooks
    from tests.hosts.patcher import OptionsPatcher

    unet, widths = _tiny_unet()
    networks = [(make_hypernetwork("a", widths, seed=1, activation_func=None), 0.7),
                (make_hypernetwork("b", widths, seed=2, activation_func=None, layer_structure=[1, 2, 1]), -0.4)]
    assert all_affine(networks)
    assert not all_affine([*networks, (make_hypernetwork("r", widths, seed=3), 1.0)])
    base = OptionsPatcher(diffusion_model=unet)
    keys, modules = list(unet.state_dict()), list(unet.modules())
    patcher = with_folded_hypernetworks(base, networks)
    assert patcher is not base and not base.object_patches and has_folded_projections(patcher)
    attentions = [m for m in unet.modules() if hasattr(m, "to_k") and hasattr(m, "to_v")]
    assert len(patcher.object_patches) == 2 * len(attentions)
    with torch.inference_mode():
        bare = _run(unet)
        with a1111_hooks(unet, networks):
            reference = _run(unet)
        with patcher.patched():
            assert list(unet.state_dict()) == keys  # the host's keys (LoRA, offloading) are unchanged
            assert all(isinstance(m.to_k, FoldedProjection) for m in attentions)
            assert attentions[0].to_k.weight is attentions[0].to_k.hn_original.weight  # shared parameters
            folded = _run(unet)
            plans = [layer.hn_placement for layer in patcher.object_patches.values()]
        after = _run(unet)
    assert list(unet.modules()) == modules and torch.equal(after, bare)  # the originals are back
    scale = reference.abs().max()
    assert (reference - bare).abs().max() > 1e-3 * scale  # the networks act
    assert (folded - reference).abs().max() <= 1e-5 * scale
    modes = {mode for placement in {id(p): p for p in plans}.values()
             for active in placement._placed.values() for layer_modes in active.folds.modes() for mode in layer_modes}
    assert modes == {"folded"}, modes


def test_a_layer_the_host_casts_per_call_runs_the_exact_chain_instead():
    from extension.hosts.unet_fold import with_folded_hypernetworks
    from extension.hypernetwork.reference import a1111_hooks
    from tests.hosts.patcher import OptionsPatcher

    unet, widths = _tiny_unet()
    networks = [(make_hypernetwork("a", widths, seed=1, activation_func=None), 0.7)]
    for module in unet.modules():
        if hasattr(module, "to_k"):
            module.to_k.parameters_manual_cast = True  # as Forge marks layers whose weights it casts per call
    patcher = with_folded_hypernetworks(OptionsPatcher(diffusion_model=unet), networks)
    with torch.inference_mode():
        with a1111_hooks(unet, networks):
            reference = _run(unet)
        with patcher.patched():
            folded = _run(unet)
    assert (folded - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_no_fold_where_another_extension_patches_the_same_layer():
    from extension.hosts.unet_fold import with_folded_hypernetworks
    from tests.hosts.patcher import OptionsPatcher

    unet, widths = _tiny_unet()
    networks = [(make_hypernetwork("a", widths, seed=1, activation_func=None), 0.7)]
    base = OptionsPatcher(diffusion_model=unet)
    name = next(n for n, m in unet.named_modules() if hasattr(m, "to_k"))
    base.add_object_patch(f"diffusion_model.{name}.to_k", torch.nn.Identity())
    assert with_folded_hypernetworks(base, networks) is None  # the caller keeps the attention patch
    assert with_folded_hypernetworks(OptionsPatcher(), networks) is None  # no model to patch


def test_a_fold_made_while_the_last_generations_fold_is_loaded_wraps_the_hosts_own_layers():
    """A host keeps the last clone's object patches on the model until the next clone loads, and the next
    generation's clone is made before that: its layers must wrap the host's layers, not the previous wrappers."""
    from extension.hosts.unet_fold import FoldedProjection, with_folded_hypernetworks
    from extension.hypernetwork.reference import a1111_hooks
    from tests.hosts.patcher import OptionsPatcher

    unet, widths = _tiny_unet()
    first = [(make_hypernetwork("a", widths, seed=1, activation_func=None), 0.7)]
    second = [(make_hypernetwork("b", widths, seed=2, activation_func=None), -0.5)]
    base = OptionsPatcher(diffusion_model=unet)
    with torch.inference_mode():
        with a1111_hooks(unet, second):
            reference = _run(unet)
        with with_folded_hypernetworks(base, first).patched():
            later = with_folded_hypernetworks(base, second)  # made while the first is on the model
        assert not any(isinstance(layer.hn_original, FoldedProjection) for layer in later.object_patches.values())
        with later.patched():
            folded = _run(unet)
    assert (folded - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_automatic1111_entries_compute_the_modules_with_the_bound_multiplier():
    """An entry of AUTOMATIC1111's ``shared.loaded_hypernetworks`` (extension/hosts/a1111_attention.py): its
    ``layers[width]`` are callables ``x -> x + mlp(x) * m`` (K, V), modules AUTOMATIC1111 can assign to a layer
    where a module of that name is registered; zero multipliers leave no entry."""
    from extension.hosts.a1111_attention import loaded_entries

    first = make_hypernetwork("a", [8, 16], seed=0, layer_structure=[1, 2, 1])
    second = make_hypernetwork("b", [8], seed=1, layer_structure=[1, 1])
    entries = loaded_entries([(first, 0.5), (second, 0.0), (second, -1.0)])
    assert [(e.name, e.multiplier) for e in entries] == [("a", 0.5), ("b", -1.0)]
    x = torch.randn(2, 3, 8)
    for which in (0, 1):
        assert torch.equal(entries[0].layers[8][which](x), first.layers[8][which](x, 0.5))
        assert torch.equal(entries[1].layers[8][which](x), second.layers[8][which](x, -1.0))
    assert set(entries[0].layers) == {8, 16} and set(entries[1].layers) == {8}
    attention = torch.nn.Module()
    attention.hyper_k = torch.nn.Linear(2, 2)  # what AUTOMATIC1111's own training leaves on a layer
    attention.hyper_k = entries[0].layers[8][0]
    assert list(entries[0].layers[8][0].parameters()) == []
