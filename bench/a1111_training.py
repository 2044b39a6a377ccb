"""AUTOMATIC1111's own hypernetwork training against ours inside it: the same checkpoint, pictures, captions,
network, learning rate and steps, in one run.

    venv/bin/python bench/a1111_training.py [--steps 100] [--learn-rate 0.00001] [--smoke]

Run with the project's venv (it has psutil; the evaluation runs in it too). It uses the test set-up's
AUTOMATIC1111 v1.8.0 (``tests/hosts/host_env.py``: the tree and its own venv, cached) and random-weights SD 1.5
checkpoint at the real shapes (``tests/hosts/a1111_model.py``), started headless on CPU with its CI's flags
(``tests/hosts/host_server.py``).

1. **Data**: 8 training pictures (64x64) of one synthetic style (diagonal stripes in a magenta / teal / orange
   palette behind a dark shape), each with a ``.txt`` caption naming the shape and where it is; 2 held-out
   pictures of the same style; 4 control pictures of another style (soft grey gradients, the same shapes).
   One prompt template, written into both trees (A1111's ``style_filewords.txt`` and ours differ in their
   lines): ``[filewords], art by [name]``; the same network name in both runs, so both runs see the same text.
2. **Run A**: the bare host (no extension). Its own ``POST /sdapi/v1/create/hypernetwork`` makes the network
   (``1, 2, 1``, linear, Normal init, its default sizes 768/320/640/1280); the file is kept as the initial
   weights of both runs. Its own ``POST /sdapi/v1/train/hypernetwork`` trains it.
3. **Run B**: the host with the extension; the same initial ``.pt`` is put in its hypernetworks folder, and the
   same request body goes to ``POST /sdapi/v1/train/hypernetwork`` (the extension's route, whose run is a
   process of its own with the project's venv).
4. Both runs: ``training_write_csv_every`` 1 (a loss row every step), ``save_optimizer_state`` off (A1111's
   default), batch 1, no previews, a copy saved every ``steps / 5``. Measured from here: the request's wall
   time, seconds per step (``/sdapi/v1/progress`` polled every 0.5 s: a least-squares fit of time against step
   over the middle 80% of the steps), and the peak resident memory of the host's process tree (host and
   children, psutil every 0.25 s; RSS summed, and PSS, which counts pages shared between processes once).
5. **Style learned**: evaluated here, for both runs' copies and final files, in a separate process with the
   project's own loaders (``extension.checkpoints``, ``extension.hypernetwork``): the mean denoising MSE of the
   UNet on fixed (noise, timestep) pairs (8 per picture, timesteps stratified over 0..999; the VAE posterior
   mean as latents; each picture's training prompt), without a network, with the initial one, and with each
   trained one; reported as the fraction of the no-network loss it removes, on the training pictures, the
   held-out pictures of the style, and the control pictures of another style.

The section ``a1111-training`` of ``bench/RESULTS.md`` is written (:mod:`sections`); the hand-written Reading
below it is kept.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = BENCH / "RESULTS.md"
SECTION = "a1111-training"
NAME = "stripestyle"
TEMPLATE = "bench_style.txt"
TEMPLATE_LINE = "[filewords], art by [name]"
PALETTE = [(214, 40, 160), (20, 170, 160), (245, 140, 30)]  # magenta, teal, orange
SHAPES = ["circle", "square", "triangle", "diamond"]
PLACES = [("left", 0.32, 0.5), ("right", 0.68, 0.5), ("top", 0.5, 0.32), ("bottom", 0.5, 0.68),
          ("center", 0.5, 0.5)]
EVAL_PAIRS = 8  # (noise, timestep) pairs per picture
# The bare host's training needs one shim under the torch its pins pull (2.14): torch's Sampler has no __init__ of
# its own any more, so AUTOMATIC1111 v1.8's GroupedBatchSampler, which calls super().__init__(data_source), fails
# with "object.__init__() takes exactly one argument" before the first step. The shim gives Sampler back the
# do-nothing __init__(data_source=None) of the torch it was written for; nothing of its training changes.
COMPAT = {"scripts/torch_compat.py": (
    "import torch.utils.data\n"
    "if '__init__' not in torch.utils.data.Sampler.__dict__:\n"
    "    def _sampler_init(self, data_source=None):\n"
    "        pass\n"
    "    torch.utils.data.Sampler.__init__ = _sampler_init\n")}


# -- data -------------------------------------------------------------------------------------------------------------
def draw_picture(shape: str, cx: float, cy: float, style: str, size: int = 64, phase: int = 0):
    import numpy as np
    from PIL import Image, ImageDraw

    big = size * 4
    yy, xx = np.mgrid[0:big, 0:big]
    if style == "stripes":  # the style: diagonal bands of three colours
        band = ((xx + yy + phase * 16) // 32) % 3
        pixels = np.array(PALETTE, dtype=np.uint8)[band]
    else:  # control: a soft grey gradient
        value = (90 + 110 * (xx / big) * (0.5 + 0.5 * yy / big) + phase * 10).clip(0, 255).astype(np.uint8)
        pixels = np.stack([value] * 3, axis=-1)
    image = Image.fromarray(pixels, "RGB")
    paint = ImageDraw.Draw(image)
    x, y, r = cx * big, cy * big, 0.2 * big
    ink = (25, 20, 35) if style == "stripes" else (40, 40, 40)
    if shape == "circle":
        paint.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    elif shape == "square":
        paint.rectangle([x - r, y - r, x + r, y + r], fill=ink)
    elif shape == "triangle":
        paint.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=ink)
    else:
        paint.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=ink)
    return image.resize((size, size), Image.BOX)


def write_dataset(root: Path) -> dict[str, list[tuple[str, str]]]:
    """``root/train`` (8), ``root/heldout`` (2), ``root/control`` (4): pictures with ``.txt`` captions (no trailing
    newline: A1111 would keep it in the prompt). Returns {set: [(file, caption)]}."""
    sets = {"train": [(SHAPES[i % 4], PLACES[i % 5], "stripes", i) for i in range(8)],
            "heldout": [("circle", PLACES[2], "stripes", 9), ("diamond", PLACES[0], "stripes", 10)],
            "control": [(SHAPES[i], PLACES[(i + 1) % 5], "gradient", i) for i in range(4)]}
    out = {}
    for name, items in sets.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for index, (shape, (place, cx, cy), style, phase) in enumerate(items):
            caption = f"a {shape} on the {place}" if place != "center" else f"a {shape} in the center"
            stem = f"{index:02d}-{shape}-{place}"
            draw_picture(shape, cx, cy, style, phase=phase).save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
            out[name].append((f"{stem}.png", caption))
    return out


# -- measuring a host -------------------------------------------------------------------------------------------------
class TreeSampler(threading.Thread):
    """The peak RSS (summed) and PSS of a process and its descendants, and of the host process alone."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_rss = self.peak_pss = self.peak_host_rss = self.peak_children_rss = 0
        self.samples = 0

    def sample(self) -> tuple[int, int, int]:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except self.psutil.Error:
            pass
        rss = pss = host = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except self.psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            if proc.pid == self.root.pid:
                host = info.rss
        return rss, pss, host

    def run(self) -> None:
        while not self.stop_event.is_set():
            rss, pss, host = self.sample()
            self.samples += 1
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_host_rss = max(self.peak_host_rss, host)
            self.peak_children_rss = max(self.peak_children_rss, rss - host)
            self.stop_event.wait(self.interval)

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(10)
        mb = 1 << 20
        return {"peak_rss_mb": self.peak_rss / mb, "peak_pss_mb": self.peak_pss / mb,
                "peak_host_rss_mb": self.peak_host_rss / mb, "peak_children_rss_mb": self.peak_children_rss / mb,
                "samples": self.samples}


class ProgressPoller(threading.Thread):
    """``(seconds since start, step)`` whenever the host's progress shows a new step."""

    def __init__(self, server, step_of, interval: float = 0.5):
        super().__init__(daemon=True)
        self.server, self.step_of, self.interval = server, step_of, interval
        self.stop_event = threading.Event()
        self.start_time = time.monotonic()
        self.points: list[tuple[float, int]] = []

    def run(self) -> None:
        last = -1
        while not self.stop_event.is_set():
            try:
                status, answer = self.server.request("GET", "/sdapi/v1/progress?skip_current_image=true", timeout=30)
            except OSError:
                status, answer = 0, None
            if status == 200 and isinstance(answer, dict):
                step = self.step_of(answer.get("state") or {})
                if step is not None and step > last:
                    self.points.append((time.monotonic() - self.start_time, step))
                    last = step
            self.stop_event.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self.stop_event.set()
        self.join(40)
        return self.points


def seconds_per_step(points: list[tuple[float, int]], steps: int) -> tuple[float | None, float | None]:
    """The least-squares slope of time against step over steps 10%..90%, and when step 1 was first seen."""
    middle = [(t, s) for t, s in points if 0.1 * steps <= s <= 0.9 * steps]
    first = next((t for t, s in points if s >= 1), None)
    if len(middle) < 3:
        return None, first
    mean_t = statistics.fmean(t for t, _ in middle)
    mean_s = statistics.fmean(s for _, s in middle)
    slope = sum((s - mean_s) * (t - mean_t) for t, s in middle) / sum((s - mean_s) ** 2 for _, s in middle)
    return slope, first


def wait_for_model(server, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Model loaded in" in server.log():
            return
        time.sleep(0.5)
    raise RuntimeError("the host did not load its model:\n" + server.log()[-3000:])


def train_body(data_root: Path, log_directory: Path, steps: int, learn_rate: str, save_every: int) -> dict:
    """Every parameter AUTOMATIC1111's ``train_hypernetwork`` takes (its route needs all of them)."""
    return {"id_task": "bench", "hypernetwork_name": NAME, "learn_rate": learn_rate, "batch_size": 1,
            "gradient_step": 1, "data_root": str(data_root), "log_directory": str(log_directory),
            "training_width": 64, "training_height": 64, "varsize": False, "steps": steps,
            "clip_grad_mode": "disabled", "clip_grad_value": "0.1", "shuffle_tags": False, "tag_drop_out": 0,
            "latent_sampling_method": "once", "use_weight": False, "create_image_every": 0,
            "save_hypernetwork_every": save_every, "template_filename": TEMPLATE, "preview_from_txt2img": False,
            "preview_prompt": "", "preview_negative_prompt": "", "preview_steps": 20,
            "preview_sampler_name": "Euler a", "preview_cfg_scale": 7.0, "preview_seed": -1, "preview_width": 64,
            "preview_height": 64}


def read_loss_csv(log_directory: Path) -> list[tuple[int, float]]:
    found = sorted(log_directory.rglob("hypernetwork_loss.csv"))
    if not found:
        return []
    with open(found[0], newline="", encoding="utf-8") as handle:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]


def per_step_from_window(rows: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Our CSV's loss is the mean of the last ``window`` steps (one epoch): the per-step losses back from it."""
    by_step = dict(rows)
    losses: dict[int, float] = {}
    for step in sorted(by_step):
        n = min(step, window)
        previous = by_step.get(step - 1, 0.0) * min(step - 1, window)
        losses[step] = n * by_step[step] - previous + (losses.get(step - window, 0.0) if step > window else 0.0)
    return sorted(losses.items())


def run_host(label: str, work: Path, data: Path, args, *, with_extension: bool, initial: Path | None) -> dict:
    from tests.hosts.host_env import A1111
    from tests.hosts.host_server import HostServer

    hn_dir = work / "hypernetworks"
    hn_dir.mkdir(parents=True, exist_ok=True)
    settings = {"training_write_csv_every": 1, "save_optimizer_state": False}
    # The bare host cannot read the .pt files it writes itself under the torch its pins pull (2.14): its
    # safe-unpickle check allows only data.pkl, data/N and version in the zip, and torch writes .format_version
    # too ("bad file inside ...: NAME/.format_version"). Its own switch turns the check off (our files only).
    extra = ("--train-data-dir", str(data)) if with_extension else ("--disable-safe-unpickle",)
    server = HostServer(work, hn_dir, host=A1111, with_extension=with_extension, settings=settings,
                        extra_args=extra, other_extensions=None if with_extension else {"torch-compat": COMPAT})
    server.prepare()
    templates = (server.tree / "extensions" / "sd-webui-hypernetworks" if with_extension else server.tree) \
        / "textual_inversion_templates"
    (templates / TEMPLATE).write_text(TEMPLATE_LINE + "\n", encoding="utf-8")
    if initial is not None:
        shutil.copy2(initial, hn_dir / f"{NAME}.pt")
    log_directory = data / f"logs-{label}"
    result = {"label": label}
    started = time.monotonic()
    with server:
        wait_for_model(server)
        result["startup_s"] = time.monotonic() - started
        time.sleep(3)
        idle = TreeSampler(server.process.pid)
        rss, pss, host = idle.sample()
        result["idle_rss_mb"], result["idle_pss_mb"] = rss / (1 << 20), pss / (1 << 20)
        if initial is None:  # run A: A1111's own Create
            answer = server.api("POST", "create/hypernetwork", {
                "name": NAME, "enable_sizes": ["768", "320", "640", "1280"], "overwrite_old": False,
                "layer_structure": "1, 2, 1", "activation_func": "linear", "weight_init": "Normal",
                "add_layer_norm": False, "use_dropout": False, "dropout_structure": "0, 0, 0"})
            result["create_answer"] = answer
            shutil.copy2(hn_dir / f"{NAME}.pt", work.parent / "initial.pt")
        body = train_body(data / "train", log_directory, args.steps, args.learn_rate, args.save_every)
        if with_extension:
            step_of = lambda state: state.get("sampling_step") if state.get("job") == "train hypernetwork" else None  # noqa: E731
        else:
            step_of = lambda state: state.get("job_no") if state.get("job") == "train-hypernetwork" else None  # noqa: E731
        load = os.getloadavg()
        sampler, poller = TreeSampler(server.process.pid), ProgressPoller(server, step_of)
        sampler.start()
        poller.start()
        t0 = time.monotonic()
        status, answer = server.request("POST", "/sdapi/v1/train/hypernetwork", body, timeout=3600)
        result["train_wall_s"] = time.monotonic() - t0
        points = poller.stop()
        result["memory"] = sampler.stop()
        result["load_before"], result["load_after"] = load, os.getloadavg()
        result["train_status"], result["train_answer"] = status, answer
        if status != 200:
            raise RuntimeError(f"{label}: training answered {status}: {answer}\n{server.log()[-4000:]}")
        result["progress_points"] = points
        result["s_per_step"], result["first_step_seen_s"] = seconds_per_step(points, args.steps)
        result["log_tail"] = server.log()[-6000:]
    result["loss_rows"] = read_loss_csv(log_directory)
    result["copies"] = [str(p) for p in sorted(log_directory.rglob("*.pt"))
                        + sorted(log_directory.rglob("*.safetensors"))]
    result["final"] = str(hn_dir / f"{NAME}.pt")
    settings_files = sorted(log_directory.rglob("settings-*.json"))
    if settings_files:
        try:
            result["seed"] = json.loads(settings_files[-1].read_text()).get("seed")
        except (ValueError, OSError):
            pass
    (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


# -- evaluation (in the project's venv, a process of its own) --------------------------------------------------------
def evaluate(spec_path: Path, out_path: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from extension.checkpoints import load_single_file
    from extension.hypernetwork import load_hypernetwork
    from extension.hypernetwork.attention import KWARG, ActiveHypernetworks, install_hypernetwork_processors
    from extension.prompt.conditioning import encode_texts

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(int(spec.get("threads", 2)))
    pipe, architecture = load_single_file(spec["checkpoint"], "cpu", torch.float32)
    install_hypernetwork_processors(pipe)
    from extension.training.loss import noise_scheduler

    scheduler = noise_scheduler(pipe)  # what our training draws its noisy latents with
    pairs = int(spec.get("pairs", EVAL_PAIRS))
    inputs = {}
    with torch.no_grad():
        for name, items in spec["sets"].items():
            pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(Path(spec["data"]) / name / f).convert("RGB"),
                                                              dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                                  for f, _ in items])
            latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
            prompts = [TEMPLATE_LINE.replace("[filewords]", c).replace("[name]", NAME) for _, c in items]
            context, _ = encode_texts(pipe, prompts, architecture=architecture)
            noisy, targets, contexts, steps = [], [], [], []
            for i in range(len(items)):
                for k in range(pairs):
                    generator = torch.Generator().manual_seed(1000 * i + k + (77 if name != "train" else 0))
                    t = int((k + 0.5) * scheduler.config.num_train_timesteps / pairs)
                    noise = torch.randn(latents[i:i + 1].shape, generator=generator)
                    timestep = torch.tensor([t])
                    noisy.append(scheduler.add_noise(latents[i:i + 1], noise, timestep))
                    targets.append(noise)
                    contexts.append(context[i:i + 1])
                    steps.append(t)
            inputs[name] = (torch.cat(noisy), torch.cat(targets), torch.cat(contexts), torch.tensor(steps))
    results = {}
    batch = int(spec.get("batch", 16))
    for label, path in [("none", None)] + [tuple(x) for x in spec["networks"]]:
        networks = [] if path is None else [(load_hypernetwork(path).eval(), 1.0)]
        step = None if path is None else networks[0][0].step
        per_set = {}
        started = time.monotonic()
        with torch.no_grad():
            for name, (noisy, targets, contexts, steps) in inputs.items():
                losses = []
                for start in range(0, len(noisy), batch):
                    sl = slice(start, start + batch)
                    kwargs = {KWARG: ActiveHypernetworks(networks)} if networks else None
                    prediction = pipe.unet(noisy[sl], steps[sl], encoder_hidden_states=contexts[sl],
                                           cross_attention_kwargs=kwargs).sample
                    losses += ((prediction - targets[sl]) ** 2).mean(dim=(1, 2, 3)).tolist()
                per_set[name] = losses
        results[label] = {"path": path, "step": step, "losses": per_set, "seconds": time.monotonic() - started}
        print(f"evaluated {label} (step {step}) in {results[label]['seconds']:.1f} s: "
              + ", ".join(f"{n} {statistics.fmean(v):.5f}" for n, v in per_set.items()), flush=True)
    out_path.write_text(json.dumps(results))


# -- report -----------------------------------------------------------------------------------------------------------
def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def removed(results: dict, label: str, name: str) -> float:
    return 1 - mean(results[label]["losses"][name]) / mean(results["none"]["losses"][name])


def paired(results: dict, a: str, b: str, name: str) -> tuple[float, float]:
    """Mean and standard error of (loss with a - loss with b) over the same samples, over the no-network loss."""
    base = mean(results["none"]["losses"][name])
    diffs = [(x - y) / base for x, y in zip(results[a]["losses"][name], results[b]["losses"][name])]
    m = mean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return m, se


def curve_table(a_steps: list[tuple[int, float]], b_steps: list[tuple[int, float]], steps: int) -> list[str]:
    """Mean per-step loss over each tenth of the run."""
    lines = ["| steps | A1111's trainer | ours |", "|---|---:|---:|"]
    for tenth in range(10):
        low, high = tenth * steps // 10 + 1, (tenth + 1) * steps // 10
        a = [l for s, l in a_steps if low <= s <= high]
        b = [l for s, l in b_steps if low <= s <= high]
        fa = f"{mean(a):.4f}" if a else "-"
        fb = f"{mean(b):.4f}" if b else "-"
        lines.append(f"| {low}-{high} | {fa} | {fb} |")
    return lines


def svg_curves(a_steps, b_steps, path: Path, window: int = 8) -> None:
    """Both runs' loss, as the mean of the last ``window`` steps, on one plot."""
    def rolling(points):
        out, values = [], []
        for s, l in points:
            values = (values + [l])[-window:]
            out.append((s, sum(values) / len(values)))
        return out

    series = {"A1111's trainer": (rolling(a_steps), "#d62728"), "ours": (rolling(b_steps), "#1f77b4")}
    every = [l for pts, _ in series.values() for _, l in pts]
    if not every:
        return
    last = max(s for pts, _ in series.values() for s, _ in pts)
    low, high = min(every), max(every)
    high = high if high > low else low + 1
    w, h, m = 640, 300, 50

    def xy(s, l):
        return m + (w - 2 * m) * (s - 1) / max(1, last - 1), h - m - (h - 2 * m) * (l - low) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">step</text>',
             f'<text x="{m - 5}" y="{h - m}" text-anchor="end">{low:.3f}</text>',
             f'<text x="{m - 5}" y="{m + 4}" text-anchor="end">{high:.3f}</text>',
             f'<text x="{w - m}" y="{h - m + 15}" text-anchor="end">{last}</text>',
             f'<text x="{w / 2}" y="20" text-anchor="middle">training loss, mean of the last {window} steps</text>']
    for index, (label, (pts, colour)) in enumerate(series.items()):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, l) for s, l in pts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<text x="{w - m - 120}" y="{m + 15 * index}" fill="{colour}">{label}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def host_torch_version() -> str:
    try:
        from tests.hosts.host_env import A1111

        python = A1111.ensure_venv(A1111.source_tree())
        return subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                              text=True, timeout=120).stdout.strip()
    except Exception:  # noqa: BLE001 - only for the report
        return "?"


def report(args, a: dict, b: dict, evaluation: dict, elapsed: float, load_start, load_end) -> str:
    import torch

    a_steps = a["loss_rows"]  # A1111 logs each step's own loss
    b_steps = per_step_from_window(b["loss_rows"], 8)  # ours logs the mean of the last epoch (8 steps)
    labels = {"A": [k for k in evaluation if k.startswith("A@")], "B": [k for k in evaluation if k.startswith("B@")]}
    final_a = max(labels["A"], key=lambda k: evaluation[k]["step"])
    final_b = max(labels["B"], key=lambda k: evaluation[k]["step"])
    nproc = os.cpu_count()
    lines = [
        "## Training inside AUTOMATIC1111: its own trainer vs ours (`bench/a1111_training.py`)",
        "",
        f"Written by `bench/a1111_training.py` on {datetime.date.today().isoformat()}; not part of the test suite. "
        f"Machine: {platform.machine()}, {nproc} CPU cores shared with two other workers; AUTOMATIC1111 v1.8.0 in "
        f"its own venv (torch {host_torch_version()}), our training process in the project's venv (torch "
        f"{torch.__version__}); both on the CPU, `OMP_NUM_THREADS=2`. Load average (1 min) {load_start[0]:.2f} at "
        f"the start, {a['load_before'][0]:.2f} / {a['load_after'][0]:.2f} before / after run A, "
        f"{b['load_before'][0]:.2f} / {b['load_after'][0]:.2f} before / after run B, {load_end[0]:.2f} at the end; "
        f"{elapsed:.0f} s in all.",
        "",
        f"Setup: the random-weights SD 1.5 checkpoint at the real shapes (`tests/hosts/a1111_model.py`); 8 pictures "
        f"64x64 of one synthetic style (diagonal magenta/teal/orange stripes behind a dark shape) with `.txt` "
        f"captions (\"a square on the left\"); template `{TEMPLATE}` = `{TEMPLATE_LINE}` in both trees; network "
        f"`{NAME}` made by AUTOMATIC1111's own `create/hypernetwork` (1, 2, 1, linear, Normal init, 768/320/640/1280, "
        f"no dropout, no layer norm), the same file the start of both runs; learning rate {args.learn_rate} (constant), "
        f"{args.steps} steps, batch 1, gradient accumulation 1, latent sampling `once`, no previews, a copy every "
        f"{args.save_every} steps, the same request body to both routes. Run A: the bare host's own "
        f"`train/hypernetwork`, with two allowances for the torch 2.14 its pins pull, without which its training "
        f"does not run at all: `--disable-safe-unpickle` (its pickle check refuses the `.pt` its own Create just "
        f"wrote: `bad file inside ...: NAME/.format_version`) and a one-line shim giving torch's `Sampler` back "
        f"the `__init__(data_source)` its `GroupedBatchSampler` calls (else `object.__init__() takes exactly one "
        f"argument` before the first step). Run B: the host with the extension, whose `train/hypernetwork` runs our trainer in a "
        f"process of its own" + (f" (seed {b['seed']}, drawn)" if b.get("seed") is not None else "") + ".",
        "",
        "| | A1111's trainer (run A) | ours inside A1111 (run B) |",
        "|---|---:|---:|",
    ]

    def fmt(value, spec=".3f"):
        return "-" if value is None or value != value else format(value, spec)

    rows = [
        ("seconds per step (steps 10%-90%, from /progress)", fmt(a["s_per_step"]), fmt(b["s_per_step"])),
        ("train request, wall seconds (setup included)", fmt(a["train_wall_s"], ".0f"), fmt(b["train_wall_s"], ".0f")),
        ("first step seen after (s)", fmt(a["first_step_seen_s"], ".0f"), fmt(b["first_step_seen_s"], ".0f")),
        ("host idle RSS before training (MB)", fmt(a["idle_rss_mb"], ".0f"), fmt(b["idle_rss_mb"], ".0f")),
        ("peak RSS of the host's process tree while training (MB)", fmt(a["memory"]["peak_rss_mb"], ".0f"),
         fmt(b["memory"]["peak_rss_mb"], ".0f")),
        ("of which the host process (MB)", fmt(a["memory"]["peak_host_rss_mb"], ".0f"),
         fmt(b["memory"]["peak_host_rss_mb"], ".0f")),
        ("of which its children, the training process (MB)", fmt(a["memory"]["peak_children_rss_mb"], ".0f"),
         fmt(b["memory"]["peak_children_rss_mb"], ".0f")),
        ("peak PSS of the tree (MB; shared pages once)", fmt(a["memory"]["peak_pss_mb"], ".0f"),
         fmt(b["memory"]["peak_pss_mb"], ".0f")),
        ("peak RSS above the idle host (MB)", fmt(a["memory"]["peak_rss_mb"] - a["idle_rss_mb"], ".0f"),
         fmt(b["memory"]["peak_rss_mb"] - b["idle_rss_mb"], ".0f")),
        ("training loss, mean of the first 10% of steps", fmt(mean(l for s, l in a_steps if s <= args.steps // 10), ".4f"),
         fmt(mean(l for s, l in b_steps if s <= args.steps // 10), ".4f")),
        ("training loss, mean of the last 10% of steps", fmt(mean(l for s, l in a_steps if s > args.steps * 9 // 10), ".4f"),
         fmt(mean(l for s, l in b_steps if s > args.steps * 9 // 10), ".4f")),
        ("training loss, mean over the run", fmt(mean(l for _, l in a_steps), ".4f"), fmt(mean(l for _, l in b_steps), ".4f")),
    ]
    for name, title in (("train", "training pictures"), ("heldout", "held-out pictures, same style"),
                        ("control", "control pictures, another style")):
        rows.append((f"style measure: no-network loss removed, {title}",
                     f"{100 * removed(evaluation, final_a, name):.2f}%", f"{100 * removed(evaluation, final_b, name):.2f}%"))
    lines += [f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows]
    lines += ["", "Style measure: the mean denoising MSE of the UNet on fixed (noise, timestep) pairs ("
              f"{evaluation['none'].get('pairs', EVAL_PAIRS)} per picture, timesteps stratified over 0..999, the VAE "
              "posterior mean as latents, each picture's training prompt), evaluated for every file in one process of "
              "the project's venv with its own loaders; the share of the no-network loss a network removes. "
              "No-network loss: " + ", ".join(f"{n} {mean(v):.5f}" for n, v in evaluation["none"]["losses"].items())
              + ".", "",
              "| network | step | training pictures | held-out, same style | control, another style |",
              "|---|---:|---:|---:|---:|"]
    order = ["init"] + sorted(labels["A"], key=lambda k: evaluation[k]["step"]) + \
        sorted(labels["B"], key=lambda k: evaluation[k]["step"])
    for label in order:
        if label not in evaluation:
            continue
        who = {"init": "initial (A1111's Create)", "A": "A1111's trainer", "B": "ours"}[label.split("@")[0]]
        lines.append(f"| {who} | {evaluation[label]['step']} | "
                     + " | ".join(f"{100 * removed(evaluation, label, n):.2f}%" for n in ("train", "heldout", "control"))
                     + " |")
    lines += ["", "Ours minus A1111's at the end, paired over the same samples (share of the no-network loss; "
              "negative: ours lower): " + "; ".join(
                  f"{n} {100 * d:+.2f}% ± {100 * se:.2f}% (s.e.)"
                  for n, (d, se) in ((n, paired(evaluation, final_b, final_a, n)) for n in ("train", "heldout", "control")))
              + "."]
    lines += ["", f"Loss curves: the mean per-step training loss over each tenth of the run (A1111's CSV has each "
              f"step's loss; ours has the mean of the last 8 steps, from which the per-step losses are recovered). "
              f"Each step draws its own timestep, so single steps scatter widely; plot: "
              f"[`a1111_training_loss.svg`](a1111_training_loss.svg).", ""]
    lines += curve_table(a_steps, b_steps, args.steps)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learn-rate", default="0.00001")
    parser.add_argument("--save-every", type=int, default=None, help="default: steps / 5")
    parser.add_argument("--work", default=None, help="keep everything in this folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="6 steps, 2 pairs, nothing written to RESULTS.md")
    parser.add_argument("--only", choices=("A", "B"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:
        evaluate(Path(args.evaluate[0]), Path(args.evaluate[1]))
        return 0
    if args.smoke:
        args.steps = 6
    args.save_every = args.save_every or max(1, args.steps // 5)
    started, load_start = time.monotonic(), os.getloadavg()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="a1111-training-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working in {work}", flush=True)
    from tests.hosts.host_server import checkpoint

    data = work / "data"
    sets = write_dataset(data)
    a = run_host("A", work / "A", data, args, with_extension=False, initial=None)
    print(f"run A: {a['train_answer']}; {a['s_per_step']} s/step; peak {a['memory']['peak_rss_mb']:.0f} MB", flush=True)
    if args.only == "A":
        return 0
    b = run_host("B", work / "B", data, args, with_extension=True, initial=work / "initial.pt")
    print(f"run B: {b['train_answer']}; {b['s_per_step']} s/step; peak {b['memory']['peak_rss_mb']:.0f} MB", flush=True)
    networks = [("init", str(work / "initial.pt"))]
    for run in (a, b):
        for path in run["copies"] + [run["final"]]:
            networks.append((f"{run['label']}@{Path(path).stem}", path))
    spec = {"checkpoint": str(checkpoint()), "data": str(data), "sets": sets, "networks": networks,
            "pairs": 2 if args.smoke else EVAL_PAIRS, "threads": 2}
    (work / "eval-spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    subprocess.run([str(ROOT / "venv" / "bin" / "python"), __file__, "--evaluate", str(work / "eval-spec.json"),
                    str(work / "eval.json")], check=True, env=env)
    evaluation = json.loads((work / "eval.json").read_text())
    evaluation["none"]["pairs"] = spec["pairs"]
    # the same step twice (our last copy is the final file): keep one
    seen = set()
    for label in list(evaluation):
        if label[:2] in ("A@", "B@"):
            key = (label[0], evaluation[label]["step"])
            if key in seen:
                del evaluation[label]
            seen.add(key)
    text = report(args, a, b, evaluation, time.monotonic() - started, load_start, os.getloadavg())
    (work / "section.md").write_text(text)
    print(text)
    if not args.smoke:
        svg_curves(a["loss_rows"], per_step_from_window(b["loss_rows"], 8), BENCH / "a1111_training_loss.svg")
        sections.write_section(RESULTS, SECTION, text)
    return 0


import sections  # noqa: E402  (bench/sections.py; bench/ is on sys.path above)

if __name__ == "__main__":
    sys.exit(main())
