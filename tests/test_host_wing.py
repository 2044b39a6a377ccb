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
