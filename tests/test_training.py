"""Training on the demo model with a small generated dataset: loss, files, resume, interrupt, NaN guard,
captions and templates, create, the A1111 safety rule, and a 2-process run under accelerate launch."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from a1111_safety import check as a1111_check
from conftest import ROOT
from extension.demo.dataset import draw, sample_pictures
from extension.demo.pretrained import load_model
from extension.hypernetwork import load_hypernetwork, read_info
from extension.jobs import Job
from extension.library import HypernetworkLibrary
from extension.training import TrainingConfig, TrainingError, TrainingMonitor, create_hypernetwork, train_hypernetwork
from extension.training.dataset import load_pictures
from extension.training.log import CSV_HEADER
from extension.training.templates import PromptMaker, caption_of, filename_caption, find_template, read_template

SIZE = 32  # training pictures: 32x32 (latents 4x4) keeps a step cheap on the CPU


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Eight outlined shapes with captions in the demo model's words (two captions from the file name)."""
    folder = tmp_path_factory.mktemp("outlines")
    for i, picture in enumerate(sample_pictures(8, seed=5, outline=True)):
        stem = f"{i:02d}-{picture.caption()}" if i < 2 else f"{i:02d}"
        draw(picture, SIZE).save(folder / f"{stem}.png")
        if i >= 2:
            (folder / f"{stem}.txt").write_text(picture.caption() + "\n", encoding="utf-8")
    (folder / "notes.md").write_text("not a picture")
    return folder


def fresh(tmp_path, model, name="style", fmt="safetensors", **structure) -> HypernetworkLibrary:
    library = HypernetworkLibrary(tmp_path / "hypernetworks")
    library.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    create_hypernetwork(name, library, sizes=sorted(model.attention_widths()), activation_func="relu",
                        weight_init="XavierNormal", file_format=fmt, **structure)
    return library


def config(dataset, tmp_path, **changes) -> TrainingConfig:
    values = dict(hypernetwork_name="style", learn_rate="2e-3", batch_size=2, data_root=str(dataset),
                  log_directory=str(tmp_path / "logs"), training_width=SIZE, training_height=SIZE, steps=12,
                  create_image_every=0, save_hypernetwork_every=0, template_filename="filewords.txt", seed=7,
                  training_write_csv_every=4)
    values.update(changes)
    return TrainingConfig(**values)


def weights(network) -> list[torch.Tensor]:
    return [p.detach().clone() for p in network.weights()]


# -- the run -------------------------------------------------------------------------------------------------------
def test_loss_falls_and_the_files_appear_at_their_steps(model, dataset, tmp_path):
    library = fresh(tmp_path, model)
    monitor = TrainingMonitor()
    unet = model.pipe.unet
    trainable = {name for name, p in unet.named_parameters() if p.requires_grad}
    assert trainable, "the loader leaves the UNet trainable: the run must freeze it itself"
    result = train_hypernetwork(config(dataset, tmp_path, steps=40, learn_rate="5e-3", save_hypernetwork_every=10,
                                       create_image_every=20), model, library, monitor=monitor)
    assert result.status == "finished" and result.step == 40 and "finished at step 40" in result.message
    assert all(p.grad is None for p in unet.parameters()), "the frozen UNet got gradients"
    assert {name for name, p in unet.named_parameters() if p.requires_grad} == trainable  # restored after
    losses = [p.loss for p in monitor.losses()]
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
    folder = Path(result.log_dir)
    for step in (10, 20, 30, 40):
        copy = folder / "hypernetworks" / f"style-{step}.safetensors"
        assert read_info(copy).step == step and read_info(copy).name == "style"  # holds exactly STEP steps
        assert load_hypernetwork(copy).optimizer_state_dict is not None  # its sidecar is its own
    assert read_info(library.root / "style.safetensors").step == 40
    previews = sorted(p.name for p in (folder / "images").iterdir())
    assert previews == ["style-20.png", "style-40.png"]
    with Image.open(folder / "images" / "style-40.png") as image:
        assert "<hypernet:style:1>" in image.info["parameters"] and "Steps: 20" in image.info["parameters"]
    rows = list(csv.reader((folder / "hypernetwork_loss.csv").open()))
    assert tuple(rows[0]) == CSV_HEADER and [int(r[0]) for r in rows[1:]] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert all(len(r[3].split(".")[1]) == 7 for r in rows[1:])  # loss with 7 decimals
    settings = json.loads(next(folder.glob("settings-*.json")).read_text())
    assert settings["seed"] == 7 and settings["learn_rate"] == "5e-3" and settings["preview_sampler_name"] == "Euler a"


def test_resume_from_a_save_equals_the_uninterrupted_run(model, dataset, tmp_path):
    whole_lib = fresh(tmp_path / "whole", model)
    whole = train_hypernetwork(config(dataset, tmp_path / "whole", steps=12, learn_rate="3e-3:6, 1e-3"),
                               model, whole_lib)
    split_lib = fresh(tmp_path / "split", model)
    first = train_hypernetwork(config(dataset, tmp_path / "split", steps=5, learn_rate="3e-3:6, 1e-3"),
                               model, split_lib)
    assert first.step == 5 and read_info(split_lib.root / "style.safetensors").step == 5
    second = train_hypernetwork(config(dataset, tmp_path / "split", steps=12, learn_rate="3e-3:6, 1e-3"),
                                model, split_lib)
    assert second.step == 12
    for a, b in zip(whole.network.weights(), second.network.weights()):
        assert torch.equal(a, b)
    again = train_hypernetwork(config(dataset, tmp_path / "split", steps=12), model, split_lib)
    assert again.status == "complete" and "already holds 12 steps" in again.message


def test_a_run_removes_what_a_save_cut_short_left_and_nothing_else(model, dataset, tmp_path):
    library = fresh(tmp_path, model)
    root = library.root
    leftovers = [root / ".style.safetensors.a1b2c3.tmp", root / ".style.safetensors.optim.x9.tmp"]
    kept = [root / ".other.safetensors.q1.tmp", root / "style.safetensors.notes.tmp", root / ".style.safetensors.k"]
    for path in leftovers + kept:
        path.write_bytes(b"half a file")
    result = train_hypernetwork(config(dataset, tmp_path, steps=1), model, library)
    assert result.status == "finished"
    assert [p for p in leftovers if p.exists()] == [] and all(p.exists() for p in kept)


def test_interrupt_saves_and_says_so(model, dataset, tmp_path):
    library = fresh(tmp_path, model)
    job, monitor = Job("train-hypernetwork"), TrainingMonitor()

    class Interrupting(TrainingMonitor):
        def add_loss(self, step, loss, learn_rate):
            super().add_loss(step, loss, learn_rate)
            if step == 3:
                job.interrupted.set()

    monitor = Interrupting()
    result = train_hypernetwork(config(dataset, tmp_path, steps=50), model, library, job=job, monitor=monitor)
    assert result.status == "interrupted" and result.message.startswith("interrupted at step 3")
    assert read_info(library.root / "style.safetensors").step == 3
    assert job.job_no == 3 and job.job_count == 50 and "loss" in job.textinfo


def test_a_poisoned_learning_rate_trips_the_nan_guard_and_keeps_the_last_good_save(model, dataset, tmp_path):
    library = fresh(tmp_path, model)
    good = train_hypernetwork(config(dataset, tmp_path, steps=4), model, library)
    saved = (library.root / "style.safetensors").read_bytes()
    result = train_hypernetwork(config(dataset, tmp_path, steps=40, learn_rate="1e-3:6, 1e30",
                                       save_hypernetwork_every=0), model, library)
    assert good.status == "finished" and result.status == "stopped"
    assert "became nan" in result.message or "became inf" in result.message or "NaN or inf" in result.message
    assert (library.root / "style.safetensors").read_bytes() == saved  # nothing newer was written
    assert read_info(library.root / "style.safetensors").step == 4


def test_a_pt_file_stays_a_pt_that_automatic1111_opens(model, dataset, tmp_path):
    library = fresh(tmp_path, model, fmt="pt")
    result = train_hypernetwork(config(dataset, tmp_path, steps=4, save_hypernetwork_every=2), model, library)
    outputs = [library.root / "style.pt", library.root / "style.pt.optim",
               Path(result.log_dir) / "hypernetworks" / "style-2.pt", Path(result.log_dir) / "hypernetworks" / "style-2.pt.optim"]
    for path in outputs:
        for version in ("1.8", "1.10"):
            a1111_check(path, version)
        assert isinstance(torch.load(path, weights_only=True), dict)
    assert not (library.root / "style.safetensors").exists()


def test_options_that_change_the_data_still_train(model, dataset, tmp_path):
    """Flip, tag shuffle and dropout, random latents, alpha weights, SGD, clipping, accumulation."""
    library = fresh(tmp_path, model)
    before = weights(library.load("style"))
    result = train_hypernetwork(config(dataset, tmp_path, steps=3, flip=True, shuffle_tags=True, tag_drop_out=0.3,
                                       latent_sampling_method="random", use_weight=True, optimizer="SGD",
                                       clip_grad_mode="norm", clip_grad_value="1.0", gradient_step=2,
                                       template_filename="hypernetwork.txt", gradient_checkpointing=True,
                                       snr_gamma=5),
                               model, library)
    assert result.status == "finished"
    assert any(not torch.equal(a, b) for a, b in zip(before, result.network.weights()))
    assert not model.pipe.unet.is_gradient_checkpointing  # the shared model is as it was


# -- refused before anything starts ------------------------------------------------------------------------------------
def test_bad_input_is_refused_before_anything_is_written(model, dataset, tmp_path):
    library = fresh(tmp_path, model)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (dict(data_root=str(broken)), "bad.png: the picture cannot be read"),
        (dict(data_root=str(empty)), "holds no pictures"),
        (dict(template_filename="missing.txt"), "template 'missing.txt' is not in"),
        (dict(learn_rate="1e-3:10 1e-4:20"), "separate pairs with commas"),
        (dict(hypernetwork_name="nope"), "unknown hypernetwork 'nope'"),
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(training_width=30), "multiple of 8"),
        (dict(optimizer="Nope"), "not a torch.optim optimizer"),
    ]
    for changes, message in cases:
        with pytest.raises(TrainingError, match=message):
            train_hypernetwork(config(dataset, tmp_path, **changes), model, library)
    assert not (tmp_path / "logs").exists()


def test_numbers_from_json_are_accepted():
    assert TrainingConfig.from_request({"learn_rate": 0.001, "id_task": "x", "steps": 3.0,
                                        "hypernetwork_name": "a", "data_root": "d"}).validated().steps == 3


# -- captions and templates -----------------------------------------------------------------------------------------
def test_captions_as_automatic1111_reads_them(dataset, tmp_path):
    assert filename_caption("1-a red circle") == "a red circle"
    assert filename_caption("2023-01-05_photo") == "_photo"  # A1111 strips leading digits and hyphens only
    assert filename_caption("003 blue, star", r"\w+", "_") == "blue_star"
    pictures = load_pictures(dataset, SIZE, SIZE)
    assert len(pictures) == 8 and pictures[0].caption.startswith("a ") and not pictures[3].caption.endswith("\n")
    assert pictures[3].caption == (dataset / "03.txt").read_text().strip()  # the trailing newline is not kept
    (tmp_path / "x.png").write_bytes((dataset / "03.png").read_bytes())
    (tmp_path / "x.txt").write_text("tagged, caption\n\n")
    assert caption_of(tmp_path / "x.png") == "tagged, caption"


def test_templates_fill_name_and_filewords_and_shuffle_rejoins_with_a_space(tmp_path):
    lines = read_template(find_template("style_filewords.txt"))
    assert all("[name]" in line and "[filewords]" in line for line in lines)
    (tmp_path / "t.txt").write_text("art by [name], [filewords]\n\n")
    assert read_template(tmp_path / "t.txt") == ["art by [name], [filewords]", ""]  # blank lines are kept
    fixed = PromptMaker(("art by [name], [filewords]",), "mine")
    assert fixed.prompt("a, b, c", 1, "x") == "art by mine, a, b, c" and not fixed.varies
    shuffled = PromptMaker(("[filewords]",), "mine", shuffle_tags=True)
    seen = {shuffled.prompt("a, b, c", 1, "step", i) for i in range(30)}
    assert len(seen) > 1 and all(sorted(p.split(", ")) == ["a", "b", "c"] for p in seen)
    dropped = PromptMaker(("[filewords]",), "mine", tag_drop_out=0.5)
    assert any(len(dropped.prompt("a, b, c, d", 2, i).split(", ")) < 4 for i in range(10))
    for name in ("hypernetwork.txt", "none.txt", "style.txt", "style_filewords.txt", "subject.txt",
                 "subject_filewords.txt"):
        assert read_template(find_template(name))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "dup.txt").write_text("a")
    (tmp_path / "two" / "dup.txt").write_text("b")
    with pytest.raises(TrainingError, match="ambiguous"):
        find_template("dup.txt", tmp_path)
    with pytest.raises(TrainingError, match="not a path"):
        find_template("/etc/passwd", tmp_path, allow_paths=False)
    for pattern in ("*.txt", "d?p.txt", "[d]up.txt"):  # a name, never a glob pattern
        with pytest.raises(TrainingError, match="is not in"):
            find_template(pattern, tmp_path)
    (tmp_path / "one" / "[d]up.txt").write_text("c")
    assert find_template("[d]up.txt", tmp_path) == tmp_path / "one" / "[d]up.txt"


def test_png_alpha_becomes_a_weight_in_width_height_order(tmp_path):
    alpha = np.zeros((16, 32), np.uint8)  # height 16, width 32: the right half opaque
    alpha[:, 16:] = 255
    rgba = np.dstack([np.full((16, 32, 3), 128, np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    (picture,) = load_pictures(tmp_path, 32, 16, use_weight=True)
    assert picture.weight.shape == (2, 4)  # (height / 8, width / 8)
    assert torch.allclose(picture.weight.mean(), torch.tensor(1.0))
    assert picture.weight[:, :2].max() < 0.2 and picture.weight[:, 2:].min() > 1.5


# -- create -------------------------------------------------------------------------------------------------------
def test_create_refuses_what_it_cannot_make(model, tmp_path):
    library = fresh(tmp_path, model)
    sizes = sorted(model.attention_widths())
    for name, message in [("", "empty"), ("../up", "would leave"), ("a/b", "would leave"), ("()", "empty")]:
        with pytest.raises(TrainingError, match=message):
            create_hypernetwork(name, library, sizes=sizes)
    with pytest.raises(TrainingError, match="already exists"):
        create_hypernetwork("style", library, sizes=sizes)
    with pytest.raises(TrainingError, match="start with size 1"):
        create_hypernetwork("bad", library, sizes=sizes, layer_structure="2, 1")
    with pytest.raises(TrainingError, match="as many entries"):
        create_hypernetwork("bad", library, sizes=sizes, use_dropout=True, dropout_structure="0, 0.1")
    path = create_hypernetwork("my (style)", library, sizes=sizes, use_dropout=True, dropout_structure=[0, 0.1, 0],
                               activate_output=True, overwrite=True)
    info = read_info(path)
    assert path.name == "my style.safetensors" and info.config.dropout_structure == (0, 0.1, 0)
    assert info.config.activate_output and "my style" in library.names()


# -- several processes ------------------------------------------------------------------------------------------------
def test_two_cpu_processes_under_accelerate_launch_end_with_identical_weights(dataset, tmp_path, model):
    fresh(tmp_path, model)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKIP_INSTALL": "1"}
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29517", str(ROOT / "launch.py"), "--skip-install", "--train-hypernetwork",
               "style", "--dataset", str(dataset), "--hypernetwork-dir", str(tmp_path / "hypernetworks"),
               "--learn-rate", "3e-3", "--steps", "6", "--batch-size", "2", "--save-every", "3", "--preview-every",
               "0", "--template", "filewords.txt", "--log-dir", str(tmp_path / "logs"), "--seed", "3",
               "--train-data-dir", str(dataset), "--train-data-dir", str(tmp_path),
               "--width", str(SIZE), "--height", str(SIZE)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    digests = sorted(line.split("sha256 ")[1][:64] for line in done.stdout.replace("process", "\nprocess").splitlines()
                     if line.startswith("process ") and "sha256" in line)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(digests) == 2 and digests[0] == digests[1], done.stdout
    # the last step was a save step: every process agrees nothing is left to save (no process waits for ever)
    assert sorted(p.name for p in (tmp_path / "logs").rglob("style-*.safetensors")) == \
        ["style-3.safetensors", "style-6.safetensors"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "already" in again.stdout + again.stderr, again.stderr[-3000:]
    alone = train_hypernetwork(config(dataset, tmp_path / "alone", steps=6, learn_rate="3e-3", seed=3),
                               model, fresh(tmp_path / "alone", model))
    trained = load_hypernetwork(tmp_path / "hypernetworks" / "style.safetensors")
    assert trained.step == 6
    assert any(not torch.equal(a, b) for a, b in zip(trained.weights(), alone.network.weights()))  # 2 x the data


def test_jobs_and_threads(model, dataset, tmp_path):
    """Training runs as a job: a generation asked for meanwhile waits for it."""
    from extension.jobs import JobRunner

    runner, library = JobRunner(), fresh(tmp_path, model)
    order, started = [], threading.Event()

    class Signal(TrainingMonitor):
        def add_loss(self, step, loss, learn_rate):
            super().add_loss(step, loss, learn_rate)
            started.set()

    def train():
        with runner.job("train-hypernetwork") as job:
            train_hypernetwork(config(dataset, tmp_path, steps=4), model, library, job=job, monitor=Signal())
            order.append("train")

    thread = threading.Thread(target=train)
    thread.start()
    started.wait(60)
    with runner.job("txt2img"):
        order.append("txt2img")
    thread.join(60)
    assert order == ["train", "txt2img"]


def test_the_pinned_text_context_gives_the_gradients_of_the_per_layer_transform():
    """Training transforms the text context once per step (outside checkpointed blocks): same gradients as
    transforming it in every layer, with and without gradient checkpointing."""
    from builders import make_hypernetwork
    from extension.demo.architecture import ATTENTION_WIDTHS, CROSS_ATTENTION_DIM, build_components
    from extension.hypernetwork.attention import ActiveHypernetworks, install_hypernetwork_processors

    unet, _, _ = build_components(0)
    unet.requires_grad_(False)
    install_hypernetwork_processors(unet)
    network = make_hypernetwork("g", ATTENTION_WIDTHS, seed=4).train()
    generator = torch.Generator().manual_seed(0)
    sample, context = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 77, CROSS_ATTENTION_DIM,
                                                                                  generator=generator)

    def grads(pin: bool, checkpointing: bool):
        unet.enable_gradient_checkpointing() if checkpointing else unet.disable_gradient_checkpointing()
        for p in network.weights():
            p.grad = None
        active = ActiveHypernetworks([(network, 1.0)])
        if pin:
            active.pin(context)
        unet(sample, torch.tensor([300, 700]), context, cross_attention_kwargs={"hypernetworks": active}
             ).sample.square().mean().backward()
        return [p.grad.clone() for p in network.weights()]

    reference = grads(pin=False, checkpointing=False)
    assert any(g.abs().sum() > 0 for g in reference)
    for pin, checkpointing in ((True, False), (True, True), (False, True)):
        for a, b in zip(reference, grads(pin, checkpointing)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    unet.disable_gradient_checkpointing()


def test_min_snr_weights_count_nearly_noiseless_steps_less(model):
    from extension.training.loss import noise_scheduler, snr_weights

    scheduler = noise_scheduler(model.pipe)
    timesteps = torch.tensor([0, 10, 500, 999])
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    weights = snr_weights(scheduler, timesteps, 5.0)
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / snr)
    assert weights[0] < 0.01 and weights[-1] == 1.0  # t=0 (SNR in the thousands) barely counts; t=999 fully


def test_a_server_can_run_trainings_with_different_precision_one_after_the_other():
    """accelerate keeps one process-wide state; a run after one with another precision must not fail."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from extension.training.train import make_accelerator

    AcceleratorState._reset_state(reset_partial_state=True)  # whatever earlier tests in this process left
    Accelerator(cpu=True, mixed_precision="bf16")  # what an earlier run in this server may have left
    accelerator = make_accelerator(torch.device("cpu"), "auto")
    assert accelerator.mixed_precision == "no" and accelerator.device.type == "cpu"
    assert make_accelerator(torch.device("cpu"), "bf16").mixed_precision == "no"  # CPU runs never autocast
