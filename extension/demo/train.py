"""Train the demo model from nothing, and the demo hypernetwork on top of it.

``train_demo_model`` draws the dataset (:mod:`extension.demo.dataset`), trains the VAE alone, folds each
latent channel's mean and spread into the VAE's ``quant_conv``/``post_quant_conv`` (so the latents are
zero-mean, unit-variance with ``scaling_factor=1`` while the pipeline stays the stock diffusers one), then
trains the UNet and the text encoder together on cached latents and saves the EMA weights as a diffusers
folder (fp16 weights, loaded as fp32; no tokenizer: it is built from the shipped CLIP vocabulary).

``train_demo_hypernetwork`` freezes that model and trains a ``[1, 2, 1]`` hypernetwork, with modules for
every attention width, to draw the shapes as thick outlines instead of filled.

Runs on CPU or CUDA; ``python -m extension.demo.train OUTDIR`` (see :func:`main`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints.device import resolve_device
from . import architecture, dataset

MIN_SNR_GAMMA = 5.0
CAPTION_DROP = 0.10        # empty caption: teaches the unconditional prediction for guidance
BACKGROUND_DROP = 0.05     # "a red circle" alone: the background is then the model's choice
HYPERNETWORK_NAME = "demo"
HYPERNETWORK_CHECKPOINT_NAME = "demo"


def _lr_lambda(total: int, warmup: int, floor: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``floor`` times the peak rate."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _smooth(running: torch.Tensor | None, value: torch.Tensor, decay: float) -> torch.Tensor:
    """Running mean kept on the device (no host sync per step)."""
    value = value.detach().float()
    return value if running is None else running.mul(decay).add(value, alpha=1 - decay)


def _to_pixels(images_uint8: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float in [-1, 1]."""
    return images_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _Log:
    """Prints progress lines with the time since the start."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.start = log, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.log(f"[{time.perf_counter() - self.start:7.1f}s] {message}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# -- data ----------------------------------------------------------------------------------------------------
def render_images(count: int, seed: int, outline: bool, workers: int) -> tuple[np.ndarray, list[dataset.Picture]]:
    pictures = dataset.sample_pictures(count, seed, outline=outline)
    return dataset.render(pictures, architecture.IMAGE_SIZE, workers=workers), pictures


def tokenize_captions(pictures: list[dataset.Picture]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(full, without background, empty)`` token ids: ``(N, 77)``, ``(N, 77)``, ``(77,)``."""
    from ..tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()
    texts = sorted({p.caption(True) for p in pictures} | {p.caption(False) for p in pictures} | {""})
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    row = {text: i for i, text in enumerate(texts)}
    full = ids[[row[p.caption(True)] for p in pictures]]
    short = ids[[row[p.caption(False)] for p in pictures]]
    return full, short, ids[row[""]]


def pick_captions(full, short, empty, index, generator) -> torch.Tensor:
    """Token ids for a batch: mostly the full caption, sometimes no background, sometimes nothing."""
    draw = torch.rand(len(index), 1, generator=generator, device=full.device)
    ids = torch.where(draw < CAPTION_DROP + BACKGROUND_DROP, short[index], full[index])
    return torch.where(draw < CAPTION_DROP, empty.view(1, -1), ids)


# -- VAE -----------------------------------------------------------------------------------------------------
def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int, generator, log: _Log) -> float:
    """MSE + 1e-4 x KL (per latent element), the posterior sampled; AdamW 2e-3, cosine decay."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, min(100, steps // 10 + 1), 0.05))
    running = None
    for step in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=generator, device=images.device)
        pixels = _to_pixels(images[index])
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction, pixels)
        kl = posterior.kl().mean() / latents[0].numel()
        loss = mse + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running = _smooth(running, mse, 0.98)
        if (step + 1) % 500 == 0 or step + 1 == steps:
            log(f"vae step {step + 1}/{steps}: reconstruction MSE {running.item():.4f}")
    vae.eval().requires_grad_(False)
    return float(running.item()) if running is not None else 0.0


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, std)`` of every image."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(_to_pixels(images[start:start + batch_size])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def fold_latent_normalisation(vae, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the latents zero-mean, unit-variance per channel by rewriting the 1x1 quant convolutions.

    ``quant_conv`` outputs (mean, logvar): the mean is mapped to ``(m - mu) / s`` and the log-variance
    shifted by ``-2 log s``; ``post_quant_conv`` undoes it on its input, ``z -> z * s + mu``.
    """
    channels = mean.numel()
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:channels] /= std.view(-1, 1, 1, 1)
    quant.bias[:channels] = (quant.bias[:channels] - mean) / std
    quant.bias[channels:] -= 2 * torch.log(std)
    post.bias += (post.weight[:, :, 0, 0] * mean.view(1, -1)).sum(dim=1)
    post.weight *= std.view(1, -1, 1, 1)


# -- UNet + text encoder ---------------------------------------------------------------------------------------
def _noise_scheduler():
    from diffusers import DDPMScheduler

    config = {key: value for key, value in architecture.SCHEDULER_CONFIG.items() if key != "timestep_spacing"}
    return DDPMScheduler(**config)


def diffusion_loss(unet, text_encoder, latents, ids, scheduler, generator) -> torch.Tensor:
    """Epsilon-prediction MSE with min-SNR weighting (gamma 5)."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator,
                              device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    context = text_encoder(ids)[0]
    prediction = unet(noisy, timesteps, context).sample
    alphas = scheduler.alphas_cumprod.to(latents.device)[timesteps]
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    per_sample = F.mse_loss(prediction.float(), noise, reduction="none").mean(dim=(1, 2, 3))
    return (weight * per_sample).mean()


class _Ema:
    """Exponential moving average of parameters, decay ``min(0.999, (1 + s) / (10 + s))``."""

    def __init__(self, parameters: list[torch.Tensor]):
        self.parameters = parameters
        self.shadow = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(0.999, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.parameters], 1 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for shadow, parameter in zip(self.shadow, self.parameters):
            parameter.copy_(shadow)


def save_pipeline(unet, vae, text_encoder, outdir: Path) -> None:
    """A diffusers folder: fp16 weights, configs that load them as fp32, no tokenizer component."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    unet, vae, text_encoder = (model.to("cpu", dtype=torch.float16) for model in (unet, vae, text_encoder))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**architecture.SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(outdir), safe_serialization=True)
    config_path = outdir / "text_encoder" / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"  # weights are stored in fp16 to stay small; compute in fp32 by default
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _optimization_step(unet, text_encoder, latent_dist, captions, batch_size, scheduler, generator, optimizer,
                       schedule, parameters) -> torch.Tensor:
    """One step on a random batch: sample latents from the cached ``(mean, std)``, pick captions, take the
    diffusion loss, clip gradients at 1.0, step the optimizer and the learning-rate schedule."""
    mean, std = latent_dist
    index = torch.randint(len(mean), (batch_size,), generator=generator, device=mean.device)
    latents = mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator, device=mean.device)
    ids = pick_captions(*captions, index, generator)
    loss = diffusion_loss(unet, text_encoder, latents, ids, scheduler, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    schedule.step()
    return loss


def train_demo_model(outdir, steps: int = 3000, seed: int = 0, device: str | None = None, *,
                     vae_steps: int = 1000, batch_size: int = 128, vae_batch_size: int = 64,
                     dataset_size: int = 20000, learning_rate: float = 1e-3, workers: int | None = None,
                     time_limit: float | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the demo model from nothing into the diffusers folder ``outdir``; returns the training record.

    Everything (dataset, initial weights, batches, noise) follows from ``seed``; on CPU the result is
    reproducible bit for bit, on CUDA up to the GPU's non-deterministic kernels. ``time_limit`` (seconds
    since the start) is a safety stop: the UNet loop ends early and the record says at which step.
    """
    from ..tokenizer import clip_tokenizer  # noqa: F401  (fails early if the vocabulary is missing)

    outdir = Path(outdir)
    dev = resolve_device(device)
    say = _Log(log)
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    generator = torch.Generator(dev).manual_seed(seed)

    images_np, pictures = render_images(dataset_size, seed, outline=False, workers=workers)
    outlines_np, _ = render_images(max(1, dataset_size // 4), seed + 1, outline=True, workers=workers)
    images = torch.from_numpy(images_np).to(dev)
    vae_images = torch.cat([images, torch.from_numpy(outlines_np).to(dev)])
    full, short, empty = (t.to(dev) for t in tokenize_captions(pictures))
    say(f"drew {len(images)} pictures (+{len(outlines_np)} outlined, for the VAE) on {workers} processes; device {dev}")

    unet, vae, text_encoder = architecture.build_components(seed)
    unet, vae, text_encoder = unet.to(dev), vae.to(dev), text_encoder.to(dev)

    vae_mse = train_vae(vae, vae_images, vae_steps, vae_batch_size, generator, say)
    del vae_images
    mean, std = encode(vae, images)
    channel_mean, channel_std = mean.mean(dim=(0, 2, 3)), (mean.var(dim=(0, 2, 3)) + std.pow(2).mean(dim=(0, 2, 3))).sqrt()
    say(f"latent channels: mean {channel_mean.tolist()}, std {channel_std.tolist()}")
    fold_latent_normalisation(vae, channel_mean, channel_std)
    mean, std = encode(vae, images)
    vae_seconds = say.elapsed()

    scheduler = _noise_scheduler()
    parameters = [p for p in [*unet.parameters(), *text_encoder.parameters()]]
    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, min(100, steps // 10 + 1)))
    ema = _Ema(parameters)
    running = None
    steps_done = 0
    for step in range(steps):
        if time_limit is not None and step % 50 == 0 and say.elapsed() > time_limit:
            say(f"time limit reached: stopping at step {step} of {steps}")
            break
        loss = _optimization_step(unet, text_encoder, (mean, std), (full, short, empty), batch_size, scheduler,
                                  generator, optimizer, schedule, parameters)
        ema.update(step)
        steps_done = step + 1
        running = _smooth(running, loss, 0.99)
        if (step + 1) % 500 == 0 or step + 1 == steps:
            say(f"unet step {step + 1}/{steps}: loss {running.item():.4f}")
    ema.copy_to()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)

    save_pipeline(unet, vae, text_encoder, outdir)
    record = {
        "command": f"python launch.py --train-demo-model {outdir} --steps {steps} --seed {seed}"
                   + (f" --time-limit {time_limit:g}" if time_limit is not None else ""),
        "seed": seed, "steps": steps, "steps_done": steps_done, "vae_steps": vae_steps, "batch_size": batch_size,
        "vae_batch_size": vae_batch_size, "dataset_size": dataset_size, "learning_rate": learning_rate,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "vae_seconds": round(vae_seconds, 1),
        "total_seconds": round(say.elapsed(), 1), "vae_reconstruction_mse": round(vae_mse, 5),
        "final_loss": round(float(running.item()) if running is not None else 0.0, 5),
    }
    (outdir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    say(f"saved {outdir}")
    return record


# -- hypernetwork ------------------------------------------------------------------------------------------------
def train_demo_hypernetwork(model_dir, out_path, steps: int = 1500, seed: int = 1, device: str | None = None, *,
                            batch_size: int = 16, dataset_size: int = 100, learning_rate: str = "5e-3",
                            snr_gamma: float = MIN_SNR_GAMMA, latent_sampling: str = "random",
                            log: Callable[[str], None] = print):
    """Train the demo hypernetwork (outlined shapes) on the frozen model in ``model_dir``; save to ``out_path``.

    A client of :mod:`extension.training`, as a user of the Train tab is: it writes ``dataset_size`` outlined
    pictures with their captions to a folder, creates a ``[1, 2, 1]`` ReLU network with modules for every
    attention width of the demo model, and trains it with :func:`extension.training.train_hypernetwork`
    (template ``filewords.txt``: the captions alone, in the demo model's words), with the loss the model itself was
    trained with (min-SNR weighting, ``snr_gamma``) and latents drawn afresh from each picture's encoding
    (``latent_sampling``). Returns the ``Hypernetwork``.
    """
    import tempfile

    from ..hypernetwork import load_hypernetwork
    from ..library import HypernetworkLibrary
    from ..training import TrainingConfig, create_hypernetwork, train_hypernetwork
    from .pretrained import load_model

    dev = resolve_device(device)
    say = _Log(log)
    out_path = Path(out_path)
    library = HypernetworkLibrary(out_path.parent)
    model = load_model(dev, torch.float32, Path(model_dir))
    with tempfile.TemporaryDirectory() as tmp:
        dataset.write_folder(Path(tmp) / "pictures", dataset_size, seed, outline=True)
        say(f"drew {dataset_size} outlined pictures; device {dev}")
        torch.manual_seed(seed)
        create_hypernetwork(out_path.stem, library, sizes=list(architecture.ATTENTION_WIDTHS), activation_func="relu",
                            overwrite=True, file_format="pt" if out_path.suffix == ".pt" else "safetensors")
        config = TrainingConfig(hypernetwork_name=out_path.stem, learn_rate=learning_rate, batch_size=batch_size,
                                data_root=str(Path(tmp) / "pictures"), log_directory=str(Path(tmp) / "log"),
                                steps=steps, template_filename="filewords.txt", create_image_every=0,
                                save_hypernetwork_every=0, seed=seed, save_optimizer_state=False,
                                snr_gamma=snr_gamma, latent_sampling_method=latent_sampling)
        result = train_hypernetwork(config, model, library)
    say(result.message)
    network = load_hypernetwork(out_path)
    network.optional_info = (f"Draws the demo model's shapes as thick outlines. Trained {result.step} steps on "
                             f"{dataset_size} pictures, seed {seed}, batch {batch_size}, learning rate "
                             f"{learning_rate}, min-SNR gamma {snr_gamma:g}, latents sampled {latent_sampling}, "
                             f"{say.elapsed():.0f} s on {dev.type}.")
    network.save(out_path)
    say(f"saved {out_path}")
    return network


# -- command line ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py --train-demo-model",
                                     description="Train the demo model (and optionally its hypernetwork) from nothing.")
    parser.add_argument("outdir", help="diffusers folder to write (e.g. extension/demo/model)")
    parser.add_argument("--steps", type=int, default=3000, help="UNet + text encoder steps")
    parser.add_argument("--vae-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset-size", type=int, default=20000)
    parser.add_argument("--time-limit", type=float, default=None, help="safety stop for the UNet loop (seconds)")
    parser.add_argument("--hypernetwork", default=None,
                        help="also train the demo hypernetwork on the new model and save it here")
    parser.add_argument("--skip-model", action="store_true",
                        help="do not train the model: train only the hypernetwork on the model already in OUTDIR")
    parser.add_argument("--hypernetwork-steps", type=int, default=1500)
    parser.add_argument("--hypernetwork-batch-size", type=int, default=16)
    parser.add_argument("--hypernetwork-dataset-size", type=int, default=100)
    parser.add_argument("--hypernetwork-learning-rate", default="5e-3")
    parser.add_argument("--hypernetwork-seed", type=int, default=1)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..quiet_warnings import quiet_image_processor_fallback  # a command line like launch.py's modes: the same quiet

    quiet_image_processor_fallback()
    if resolve_device(args.device).type == "cuda":  # this process only trains: faster matmuls are its choice
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if not args.skip_model:
        train_demo_model(args.outdir, steps=args.steps, seed=args.seed, device=args.device, vae_steps=args.vae_steps,
                         batch_size=args.batch_size, dataset_size=args.dataset_size, time_limit=args.time_limit)
    if args.hypernetwork:
        from .card import write_card
        from .pretrained import load_pipeline

        network = train_demo_hypernetwork(args.outdir, args.hypernetwork, steps=args.hypernetwork_steps,
                                          seed=args.hypernetwork_seed, device=args.device,
                                          batch_size=args.hypernetwork_batch_size,
                                          dataset_size=args.hypernetwork_dataset_size,
                                          learning_rate=args.hypernetwork_learning_rate)
        write_card(load_pipeline(args.outdir), network, args.hypernetwork)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
