"""Training speed and memory on an SD 1.5-shaped UNet: the project's training step against the floor.

    venv/bin/python bench/training.py [--size 128] [--steps 6] [--rounds 3] [--threads 1]

The UNet is the real SD 1.5 configuration (``extension/configs/sd1/unet``, 860 M parameters) with random
weights; a small stand-in VAE (8x downsampling, as SD's) and a one-layer 768-wide text encoder make the
pipeline the trainer needs (they run once per picture, before the loop). Batch 1 (AUTOMATIC1111's default).

- **floor**: a bare forward and backward of the frozen UNet to its inputs (the latents and the text context
  require grad; no weight gets a gradient): the least any hypernetwork training step can cost.
- **ours**: optimizer steps of :func:`extension.training.train_hypernetwork` itself (cached latents and text,
  keyed noise, AdamW), timed between consecutive steps, for AUTOMATIC1111's default network (``[1, 2, 1]``,
  linear, 768/320/640/1280) and a cross-attention-only one (768). The floor and the runs are interleaved.
- **FLOP-adjusted ratio**: the network's own forward and backward FLOPs (3 x its forward, counted per token)
  are added to the floor: what remains above that is the loop's overhead.
- **memory**: peak resident memory of a training run above the loaded model, with and without gradient
  checkpointing, each in a fresh process (CPU), or peak CUDA memory (GPU).
- **several processes**: the demo model trained from the command line with one process and under
  ``accelerate launch --cpu --num_processes 2`` (one thread each): seconds per step and pictures per second.

Results are written into ``bench/RESULTS.md`` in its ``training`` section (:mod:`sections`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sections  # bench/sections.py: this script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SD1_UNET_CONFIG = ROOT / "extension" / "configs" / "sd1" / "unet" / "config.json"
RESULTS = ROOT / "bench" / "RESULTS.md"


def build_model(device: str = "cpu"):
    """An SD 1.5-shaped LoadedModel with random weights and cheap stand-ins for the VAE and text encoder."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from extension.checkpoints import LoadedModel
    from extension.tokenizer import clip_tokenizer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(json.loads(SD1_UNET_CONFIG.read_text())).eval()
        vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                            scaling_factor=0.18215).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=768,
                                                    num_hidden_layers=1, num_attention_heads=12,
                                                    max_position_embeddings=77, bos_token_id=49406,
                                                    eos_token_id=49407, pad_token_id=49407)).eval()
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False).to(device)
    # left trainable, as the loaders leave a model: the training run must freeze what it does not train
    return LoadedModel(pipe, name="sd15-random", architecture="sd1", device=torch.device(device), dtype=torch.float32)


def write_dataset(folder: Path, size: int, count: int = 8) -> Path:
    from extension.demo.dataset import write_folder

    write_folder(folder, count, seed=1, outline=True, size=size)
    return folder


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def floor_seconds(model, size: int, repeats: int) -> list[float]:
    """Times of a bare forward + backward of the frozen UNet to its inputs."""
    unet, device = model.pipe.unet, model.device
    latent = size // 8
    unet.requires_grad_(False)
    try:
        return _floor_times(unet, device, latent, repeats)
    finally:
        unet.requires_grad_(True)


def _floor_times(unet, device, latent: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sample = torch.randn(1, 4, latent, latent, device=device, requires_grad=True)
        context = torch.randn(1, 77, 768, device=device, requires_grad=True)
        _sync(device)
        start = time.perf_counter()
        unet(sample, torch.tensor([500], device=device), context).sample.square().mean().backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class _Clock:
    """A TrainingMonitor that records when each optimizer step ended."""

    def __init__(self):
        from extension.training import TrainingMonitor

        class Timed(TrainingMonitor):
            def add_loss(inner, step, loss, learn_rate):  # noqa: N805
                _sync(self.device)
                self.ends.append(time.perf_counter())
                super(Timed, inner).add_loss(step, loss, learn_rate)

        self.ends: list[float] = []
        self.device = "cpu"
        self.monitor = Timed()


def training_seconds(model, library, name: str, data: Path, logs: Path, size: int, steps: int,
                     checkpointing: bool = False) -> list[float]:
    """Seconds per optimizer step of a real training run (the first step, a warm-up, left out)."""
    from extension.training import TrainingConfig, train_hypernetwork

    clock = _Clock()
    clock.device = model.device
    config = TrainingConfig(hypernetwork_name=name, learn_rate="1e-5", batch_size=1, data_root=str(data),
                            log_directory=str(logs), training_width=size, training_height=size, steps=10**6,
                            create_image_every=0, save_hypernetwork_every=0, template_filename="filewords.txt",
                            seed=1, gradient_checkpointing=checkpointing, save_optimizer_state=False)
    first = library.load(name).step if library.get(name) else 0
    config.steps = first + steps + 1
    result = train_hypernetwork(config, model, library, monitor=clock.monitor)
    assert result.status == "finished", result.message
    ends = clock.ends
    return [b - a for a, b in zip(ends, ends[1:])]


def network_flops(network, model, size: int) -> int:
    """Forward FLOPs of the network's modules in one UNet call (2 x in x out per token per Linear), from the
    token count and width of every attention layer; the text context counts once (it is transformed once)."""
    from diffusers.models.attention_processor import Attention

    latent = size // 8
    shapes, handles = [], []
    for module in model.pipe.unet.modules():
        if isinstance(module, Attention):
            def hook(mod, args, kwargs):
                context = kwargs.get("encoder_hidden_states")
                cross = context is not None
                shape = (context if cross else args[0]).shape
                shapes.append((cross, shape[1], shape[-1]))
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model.pipe.unet(torch.zeros(1, 4, latent, latent, device=model.device), 500,
                            torch.zeros(1, 77, 768, device=model.device))
    finally:
        for handle in handles:
            handle.remove()
    per_token = {size_: sum(2 * layer.in_features * layer.out_features for m in pair for layer in m.linear
                            if isinstance(layer, torch.nn.Linear)) for size_, pair in network.layers.items()}
    flops, text_done = 0, False
    for cross, tokens, width in shapes:
        if width not in per_token:
            continue
        if cross:
            if not text_done:
                flops += tokens * per_token[width]
                text_done = True
        else:
            flops += tokens * per_token[width]
    return flops


def unet_flops(model, size: int) -> int:
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils.flop_counter import FlopCounterMode

    unet, latent = model.pipe.unet, size // 8
    saved = dict(unet.attn_processors)
    unet.set_attn_processor(AttnProcessor())
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            unet(torch.zeros(1, 4, latent, latent, device=model.device), 500, torch.zeros(1, 77, 768, device=model.device))
        return counter.get_total_flops()
    finally:
        unet.set_attn_processor(saved)


# -- memory, in a fresh process per configuration ------------------------------------------------------------------
def memory_child(args) -> None:
    """Run in a child process: print the peak memory of a short training run above the loaded model (MB)."""
    from extension.library import HypernetworkLibrary
    from extension.training import create_hypernetwork

    torch.set_num_threads(args.threads)
    model = build_model(args.device)
    work = Path(args.work)
    library = HypernetworkLibrary(work / "hypernetworks")
    create_hypernetwork("full", library, sizes=[768, 320, 640, 1280], overwrite=True)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        training_seconds(model, library, "full", work / "pictures", work / "logs", args.size, 2,
                         checkpointing=args.checkpointing)
        peak = torch.cuda.max_memory_allocated()
    else:
        import psutil

        process = psutil.Process()
        before, samples, done = process.memory_info().rss, [], threading.Event()

        def sample():  # the resident size every 10 ms while the run lasts (ru_maxrss would be the model's build)
            while not done.wait(0.01):
                samples.append(process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        training_seconds(model, library, "full", work / "pictures", work / "logs", args.size, 2,
                         checkpointing=args.checkpointing)
        done.set()
        sampler.join()
        peak = max(samples, default=before)
    print(json.dumps({"peak_above_model_mb": (peak - before) / 2**20}))


def memory(args, work: Path, checkpointing: bool) -> float:
    command = [sys.executable, __file__, "--memory-child", "--work", str(work), "--size", str(args.size),
               "--threads", str(args.threads), "--device", args.device]
    if checkpointing:
        command.append("--checkpointing")
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    line = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not line:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(line[-1])["peak_above_model_mb"]


# -- several processes ------------------------------------------------------------------------------------------------
def cli_seconds(work: Path, processes: int, steps: int) -> float:
    """Wall seconds of a demo-model training run of ``steps`` steps from the command line."""
    folder = work / f"cli-{processes}-{steps}"
    (folder / "hypernetworks").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKIP_INSTALL": "1"}
    python = sys.executable
    subprocess.run([python, str(ROOT / "launch.py"), "--skip-install", "--create-hypernetwork", "style",
                    "--hypernetwork-dir", str(folder / "hypernetworks"), "--sizes", "48,64,80", "--activation",
                    "relu"], check=True, capture_output=True, env=env, timeout=600)
    train = ["--skip-install", "--train-hypernetwork", "style", "--dataset", str(work / "demo-pictures"),
             "--hypernetwork-dir", str(folder / "hypernetworks"), "--steps", str(steps), "--batch-size", "8",
             "--learn-rate", "1e-3", "--template", "filewords.txt", "--save-every", "0", "--preview-every", "0",
             "--log-dir", str(folder / "logs"), "--seed", "1", "--train-data-dir", str(work)]
    if processes == 1:
        command = [python, str(ROOT / "launch.py"), *train]
    else:
        command = [str(Path(python).parent / "accelerate"), "launch", "--cpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "29531", str(ROOT / "launch.py"), *train]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - start


def per_step(work: Path, processes: int, short: int, long: int) -> float:
    """Seconds per step: the difference of two runs' wall times over the difference of their steps."""
    return (cli_seconds(work, processes, long) - cli_seconds(work, processes, short)) / (long - short)


# -- report -----------------------------------------------------------------------------------------------------------
def write_section(text: str) -> None:
    sections.write_section(RESULTS, "training", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None,
                        help="picture size (latents are size / 8); default 512 on a GPU, 128 on the CPU")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        args.size = args.size or 128
        memory_child(args)
        return 0
    torch.set_num_threads(args.threads)
    if args.size is None:
        args.size = 512 if torch.device(args.device).type == "cuda" else 128
    started, load_before = time.perf_counter(), os.getloadavg()
    from extension.library import HypernetworkLibrary
    from extension.training import create_hypernetwork

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_dataset(work / "pictures", args.size)
        model = build_model(args.device)
        library = HypernetworkLibrary(work / "hypernetworks")
        networks = {"A1111 default [1,2,1] linear, 768/320/640/1280": [768, 320, 640, 1280],
                    "cross-attention only, [1,2,1] linear, 768": [768]}
        names = {}
        for index, (label, sizes) in enumerate(networks.items()):
            names[label] = f"net{index}"
            create_hypernetwork(names[label], library, sizes=sizes)
        floor_seconds(model, args.size, 1)  # warm-up
        floor, ours = [], {label: [] for label in networks}
        for _ in range(args.rounds):
            floor += floor_seconds(model, args.size, args.steps)
            for label in networks:
                ours[label] += training_seconds(model, library, names[label], work / "pictures", work / "logs",
                                                args.size, args.steps)
        unet = unet_flops(model, args.size)
        extra = {label: network_flops(library.load(names[label]), model, args.size) for label in networks}
        memory_mb = {}
        if not args.skip_memory:
            for checkpointing in (False, True):
                memory_mb[checkpointing] = memory(args, work, checkpointing)
        processes = {}
        if not args.skip_processes:
            from extension.demo.dataset import write_folder

            write_folder(work / "demo-pictures", 64, seed=1, outline=True)
            for count in (1, 2):
                processes[count] = per_step(work, count, 4, 16)
    elapsed = time.perf_counter() - started
    floor_median = statistics.median(floor)
    lines = [
        "## Training speed and memory (`bench/training.py`)",
        "",
        f"Written on {datetime.date.today().isoformat()}; machine: {platform.processor() or platform.machine()}, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, device {args.device}; load average "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {elapsed:.0f} s.",
        "",
        f"SD 1.5 UNet config, random weights, fp32, {args.size}x{args.size} pictures ({args.size // 8}x"
        f"{args.size // 8} latents), batch 1, {args.rounds} interleaved rounds of {args.steps} steps each "
        f"(medians). UNet forward: {unet / 1e9:.1f} GFLOPs; a forward and backward to the inputs is about 3x that.",
        "",
        "| configuration | s/step (median) | steps/s | ratio to the floor | network FLOPs (fwd+bwd) / floor FLOPs "
        "| ratio to floor + network FLOPs |",
        "|---|---:|---:|---:|---:|---:|",
        f"| floor: frozen UNet forward + backward to its inputs | {floor_median:.3f} | {1 / floor_median:.3f} "
        "| 1.000 | - | - |",
    ]
    for label, times in ours.items():
        median = statistics.median(times)
        share = 3 * extra[label] / (3 * unet)
        lines.append(f"| ours, {label} | {median:.3f} | {1 / median:.3f} | {median / floor_median:.3f} | "
                     f"{share:.3f} | {median / (floor_median * (1 + share)):.3f} |")
    if memory_mb:
        lines += ["", f"Peak memory of a training run above the loaded model (A1111 default network, "
                      f"{'CUDA allocated' if args.device != 'cpu' else 'resident, CPU'}): "
                      f"{memory_mb[False]:.0f} MB without gradient checkpointing, {memory_mb[True]:.0f} MB with it."]
    if processes:
        lines += ["", "Demo model from the command line, batch 8 per process, one thread per process "
                      "(seconds per step from a 16-step run minus a 4-step run):", "",
                  "| processes | s/step | pictures/s |", "|---:|---:|---:|"]
        for count, seconds in processes.items():
            lines.append(f"| {count}{' (accelerate launch --cpu --num_processes 2)' if count > 1 else ''} | "
                         f"{seconds:.3f} | {8 * count / seconds:.1f} |")
    lines += ["", "Raw seconds per step:", "", f"- floor: {', '.join(f'{t:.3f}' for t in floor)}"]
    lines += [f"- {label}: {', '.join(f'{t:.3f}' for t in times)}" for label, times in ours.items()]
    text = "\n".join(lines)
    write_section(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
