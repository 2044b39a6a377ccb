"""Inference cost of hypernetworks on an SD 1.5-shaped UNet: measured time against counted FLOPs.

    venv/bin/python bench/inference.py [--steps 20] [--size 256] [--rounds 3] [--out bench/RESULTS.md]

The UNet is the real SD 1.5 configuration (``extension/configs/sd1/unet``, 860 M parameters) with random
weights; a "generation" is ``StableDiffusionPipeline``'s denoising loop (Euler a, classifier-free guidance: UNet
batch 2) with precomputed prompt embeddings, written out (:func:`generations_in_lockstep`) so that the
configurations' generations run side by side, one step of each in turn: on a machine shared with other work,
load then falls on all of them alike (text encoding and VAE decoding cost the same with or without a network and
are left out). Ratios are against the bare UNet, over all rounds and per round.

Configurations:

- ``bare UNet``: the stock processors, no network;
- ``A1111 hooks, ReLU full``: AUTOMATIC1111's way (``a1111_hooks``: pre-hooks on every ``to_k``/``to_v``, the
  modules run at every call, the text context transformed in every cross-attention layer at every step) with a
  [1,2,1] ReLU network on 768/320/640/1280;
- ``linear full``: this project, AUTOMATIC1111's default network ([1,2,1], activation linear, 768/320/640/1280):
  self-attention folded into ``to_k``/``to_v`` (or collapsed), as the FLOP count decides per layer for the
  generation's steps, cross-attention transformed once per generation;
- ``ReLU full``: this project, the ReLU network of the A1111 row (not affine: its modules run at every step);
- ``cross-only``: this project, a linear [1,2,1] network on 768 only (text context, once per generation).

FLOPs: the UNet's are counted with ``torch.utils.flop_counter.FlopCounterMode`` (with diffusers' classic
``AttnProcessor``, whose bmm's the counter sees; it does not count CPU SDPA kernels); the hypernetworks' are
counted analytically, 2 x in x out per token per Linear (the counter's convention), and for the linear network
from the cost model's per-layer choice (:func:`extension.hypernetwork.folding.choose`), each checked against
the counter on real calls. The folds are per generation and counted in every generation; the collapsed map of
each module (``M``, cached on the module across generations) is computed during the warm-up and reported apart.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import sections  # bench/sections.py: this script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from extension.hypernetwork import Hypernetwork  # noqa: E402
from extension.hypernetwork.attention import (ActiveHypernetworks, install_hypernetwork_processors,  # noqa: E402
                                              remove_hypernetwork_processors)
from extension.hypernetwork.folding import (COLLAPSED, FOLDED, RAW, AffineRun, affine_parts, choose,  # noqa: E402
                                            fold_flops, raw_flops_per_token)
from extension.hypernetwork.reference import a1111_hooks  # noqa: E402

SD1_UNET_CONFIG = ROOT / "extension" / "configs" / "sd1" / "unet" / "config.json"
RESULTS_HEADER = """# Benchmark results

Each section is written by its script (`bench/inference.py`, `bench/training.py`) and replaced when it runs
again; the others stay. GPU figures are in `RESULTS-cuda.md` and `RESULTS-gpu.md`.
"""
TEXT_TOKENS = 77
CFG_BATCH = 2  # classifier-free guidance: negative + positive rows
FULL_SIZES = (768, 320, 640, 1280)


@dataclasses.dataclass(frozen=True)
class AttentionLayer:
    name: str
    cross: bool
    tokens: int  # context tokens per sample
    width: int  # context width (the hypernetwork module chosen)
    out: int  # to_k / to_v output width


@dataclasses.dataclass
class Config:
    name: str
    kind: str  # "bare", "a1111" or "project"
    networks: list  # [(hn, multiplier)]
    flops: int = 0  # extra FLOPs per generation (analytic)
    counted: int = 0  # extra FLOPs per generation (FlopCounterMode)


def build_pipeline():
    """SD 1.5 UNet (random weights) in a StableDiffusionPipeline with stand-in VAE / text encoder (unused)."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from extension.demo.architecture import build_components
    from extension.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads(SD1_UNET_CONFIG.read_text())).eval()
    # 4 blocks: latents are 1/8 of the image, as SD's VAE makes them; never run (output_type="latent")
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4).eval()
    _, _, text_encoder = build_components(0)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _zeros(unet, *shape):
    return torch.zeros(*shape, device=unet.device, dtype=unet.dtype)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def attention_layers(unet, latent: int) -> list[AttentionLayer]:
    """Every attention layer's context token count and width, recorded from one forward pass."""
    from diffusers.models.attention_processor import Attention

    layers, handles = [], []
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            def hook(mod, args, kwargs, name=name):
                context = kwargs.get("encoder_hidden_states")
                cross = context is not None
                shape = (context if cross else args[0]).shape
                layers.append(AttentionLayer(name, cross, shape[1], shape[-1], mod.to_k.out_features))
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            unet(_zeros(unet, 1, 4, latent, latent), 500, _zeros(unet, 1, TEXT_TOKENS, unet.config.cross_attention_dim))
    finally:
        for handle in handles:
            handle.remove()
    return layers


# -- FLOPs ----------------------------------------------------------------------------------------------------
def raw_flops(hn: Hypernetwork, layers: list[AttentionLayer], steps: int, cross_cached: bool) -> int:
    """Extra FLOPs of one generation with the modules run as they are: self-attention at every step; the text
    context once per generation (cached) or in every cross-attention layer at every step (A1111)."""
    total = cross_once = 0
    for layer in layers:
        pair = hn.layers.get(layer.width)
        if pair is None:
            continue
        flops = CFG_BATCH * layer.tokens * sum(raw_flops_per_token(m) for m in pair)
        if layer.cross and cross_cached:
            cross_once = flops  # the same context in every cross-attention layer
        else:
            total += flops * steps
    return total + cross_once


def planned_flops(hn: Hypernetwork, layers: list[AttentionLayer], steps: int) -> tuple[int, dict]:
    """Extra FLOPs of one generation on this project's path for a single affine network, from the cost model's
    per-layer choice (self-attention), plus the cached text context; and the choices, by layer shape."""
    total, choices = 0, {}
    for layer in layers:
        pair = hn.layers.get(layer.width)
        if pair is None:
            continue
        tokens = CFG_BATCH * layer.tokens
        if layer.cross:
            continue
        for module in pair:
            run = AffineRun([(module, 1.0)], layer.width)
            mode = choose(run, tokens, steps, layer.out)
            choices[f"{layer.tokens}x{layer.width}"] = mode
            total += {FOLDED: fold_flops(layer.width, layer.out), COLLAPSED: steps * tokens * run.collapsed_flops,
                      RAW: steps * tokens * run.raw_flops}[mode]
    cross = raw_flops(hn, [layer for layer in layers if layer.cross], steps, cross_cached=True)
    return total + cross, choices


def collapse_flops(hn: Hypernetwork) -> int:
    """FLOPs of the one-off collapse ``M = W_2 W_1`` (+ the offset) of every module of a [1,2,1] network."""
    total = 0
    for pair in hn.layers.values():
        for module in pair:
            linears = [layer for layer in module.linear if isinstance(layer, torch.nn.Linear)]
            for first, second in zip(linears, linears[1:]):
                total += 2 * second.out_features * second.in_features * first.in_features
                total += 2 * second.out_features * second.in_features
    return total


def count_flops(unet, sample, context, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, 500, context, **kwargs)
    return counter.get_total_flops()


def unet_flops(unet, latent: int) -> int:
    """One UNet forward at batch 2, attention included (counted through the classic AttnProcessor)."""
    from diffusers.models.attention_processor import AttnProcessor

    saved = dict(unet.attn_processors)
    unet.set_attn_processor(AttnProcessor())
    try:
        return count_flops(unet, _zeros(unet, CFG_BATCH, 4, latent, latent),
                           _zeros(unet, CFG_BATCH, TEXT_TOKENS, unet.config.cross_attention_dim))
    finally:
        unet.set_attn_processor(saved)


def counted_generation_flops(unet, latent: int, config: Config, steps: int) -> int:
    """FlopCounterMode's view of what ``config`` adds to one generation: two calls of one generation's object
    (the first one plans, folds and transforms the text context; the second is every later step), against the
    same processors without networks (CPU SDPA is invisible to the counter either way)."""
    sample = _zeros(unet, CFG_BATCH, 4, latent, latent)
    context = _zeros(unet, CFG_BATCH, TEXT_TOKENS, unet.config.cross_attention_dim)
    if config.kind == "a1111":
        base = count_flops(unet, sample, context)
        with a1111_hooks(unet, config.networks):
            return (count_flops(unet, sample, context) - base) * steps
    install_hypernetwork_processors(unet)
    try:
        base = count_flops(unet, sample, context)
        active = ActiveHypernetworks(config.networks, expected_calls=steps)
        kwargs = {"cross_attention_kwargs": {"hypernetworks": active}}
        first = count_flops(unet, sample, context, **kwargs) - base
        later = count_flops(unet, sample, context, **kwargs) - base
        return first + later * (steps - 1)
    finally:
        remove_hypernetwork_processors(unet)


# -- timing ---------------------------------------------------------------------------------------------------
def make_network(sizes, activation=None) -> Hypernetwork:
    """A1111's defaults ([1, 2, 1], Normal init) with the given activation (the values do not change the cost)."""
    torch.manual_seed(1)
    return Hypernetwork("bench", enable_sizes=sizes, layer_structure=[1, 2, 1], activation_func=activation)


@contextlib.contextmanager
def applied(unet, config: Config):
    """The UNet set up for ``config``: stock processors (bare), AUTOMATIC1111's hooks, or this project's
    processors; undone on exit."""
    if config.kind == "a1111":
        with a1111_hooks(unet, config.networks):
            yield
    elif config.kind == "project":
        install_hypernetwork_processors(unet)
        try:
            yield
        finally:
            remove_hypernetwork_processors(unet)
    else:
        yield


def generations_in_lockstep(pipe, embeds, steps: int, size: int, configs: list[Config],
                            offset: int = 0) -> dict[str, list[tuple[float, float]]]:
    """One generation of every configuration, run side by side: step ``i`` of each in turn (the order rotating
    with ``offset + i``), so that load from other processes falls on all of them alike.

    A generation is ``StableDiffusionPipeline``'s denoising loop written out: Euler a, guidance 7 (the UNet at
    batch 2, negative and positive rows), its own scheduler, noise and ``ActiveHypernetworks`` (made for
    ``steps`` calls, so its folds are made, and timed, in its first step). Only the step itself is timed; the
    processors or hooks are put in place and taken away around it.

    Returns:
        ``{name: [(wall seconds, CPU seconds of this process) per step]}``.
    """
    from diffusers import EulerAncestralDiscreteScheduler

    unet = pipe.unet
    context = torch.cat([embeds[1], embeds[0]])
    state = {}
    for config in configs:
        scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=unet.device)
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(1, 4, size // 8, size // 8, generator=generator).to(unet.device, unet.dtype)
        active = ActiveHypernetworks(config.networks, expected_calls=steps) if config.kind == "project" else None
        state[config.name] = [scheduler, latents * scheduler.init_noise_sigma, generator, active]
    times: dict[str, list[tuple[float, float]]] = {config.name: [] for config in configs}
    with torch.no_grad():
        for index in range(steps):
            shift = (offset + index) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                scheduler, latents, generator, active = state[config.name]
                t = scheduler.timesteps[index]
                kwargs = {"cross_attention_kwargs": {"hypernetworks": active}} if active is not None else {}
                with applied(unet, config):
                    _sync(unet.device)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                    noise = unet(model_input, t, encoder_hidden_states=context, **kwargs).sample
                    uncond, cond = noise.chunk(2)
                    latents = scheduler.step(uncond + 7.0 * (cond - uncond), t, latents, generator=generator).prev_sample
                    _sync(unet.device)
                    times[config.name].append((time.perf_counter() - start, time.process_time() - start_cpu))
                state[config.name][1] = latents
    return times


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="image size (latents are size / 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine one thread is the steadier)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.set_num_threads(args.threads)
    latent = args.size // 8
    started = time.perf_counter()
    load_before = os.getloadavg()

    pipe = build_pipeline().to(args.device, dtype)
    unet = pipe.unet
    layers = attention_layers(unet, latent)
    linear = make_network(FULL_SIZES).for_inference(args.device, dtype)
    relu = make_network(FULL_SIZES, "relu").for_inference(args.device, dtype)
    cross_only = make_network([768]).for_inference(args.device, dtype)

    # the one-off collapse of each linear module (cached on the module across generations), timed on a copy
    fresh = [copy.deepcopy(module) for pair in linear.layers.values() for module in pair]  # empty caches
    start = time.perf_counter()
    for module in fresh:
        affine_parts(module, unet.device, torch.promote_types(dtype, torch.float32))
    _sync(args.device)
    collapse_seconds = time.perf_counter() - start

    steps = args.steps
    base_unet = unet_flops(unet, latent)
    linear_flops, choices = planned_flops(linear, layers, steps)
    configs = [
        Config("bare UNet", "bare", []),
        Config("A1111 hooks, ReLU full", "a1111", [(relu, 1.0)], raw_flops(relu, layers, steps, cross_cached=False)),
        Config("linear full", "project", [(linear, 1.0)], linear_flops),
        Config("ReLU full", "project", [(relu, 1.0)], raw_flops(relu, layers, steps, cross_cached=True)),
        Config("cross-only", "project", [(cross_only, 1.0)], raw_flops(cross_only, layers, steps, cross_cached=True)),
    ]
    embeds = (torch.randn(1, TEXT_TOKENS, 768, generator=torch.Generator().manual_seed(1)).to(args.device, dtype),
              torch.randn(1, TEXT_TOKENS, 768, generator=torch.Generator().manual_seed(2)).to(args.device, dtype))
    # warm-up: every path once (and the collapsed maps of the linear modules, cached on them from now on)
    generations_in_lockstep(pipe, embeds, 1, args.size, configs)
    for config in configs[1:]:  # after the warm-up: the one-off collapse is reported apart
        config.counted = counted_generation_flops(unet, latent, config, steps)
    steps_by_round: list[dict[str, list[tuple[float, float]]]] = []
    for round_index in range(args.rounds):
        steps_by_round.append(generations_in_lockstep(pipe, embeds, steps, args.size, configs, offset=round_index))
        print(f"round {round_index + 1}: " + ", ".join(f"{name} {sum(w for w, _ in values):.1f} s"
                                                       for name, values in steps_by_round[-1].items()), flush=True)
    times = {config.name: [tuple(map(sum, zip(*timed[config.name]))) for timed in steps_by_round]
             for config in configs}

    report = render(args, layers, base_unet, configs, times, steps_by_round, choices, collapse_seconds,
                    collapse_flops(linear),
                    time.perf_counter() - started, load_before, os.getloadavg())
    sections.write_section(args.out, "inference", report, header=RESULTS_HEADER)
    print(report)
    return 0


# -- the report -------------------------------------------------------------------------------------------------
def ratios(times: dict, name: str, against: str) -> tuple[float, float, float]:
    """``(total wall ratio, paired wall median ratio, total CPU ratio)`` of ``name`` over ``against``: sums over
    all rounds, and the median over rounds of each round's ratio."""
    mine, theirs = times[name], times[against]
    wall = sum(w for w, _ in mine) / sum(w for w, _ in theirs)
    paired = statistics.median(a[0] / b[0] for a, b in zip(mine, theirs))
    cpu = sum(c for _, c in mine) / sum(c for _, c in theirs)
    return wall, paired, cpu


def render(args, layers, base_unet, configs, times, steps_by_round, choices, collapse_seconds, collapse_gflops,
           elapsed, load_before, load_after) -> str:
    g = 1e9
    steps = args.steps
    base_generation = base_unet * steps
    self_layers = [layer for layer in layers if not layer.cross]
    bare = configs[0].name
    lines = [
        "## Inference: hypernetworks on an SD 1.5-shaped UNet (`bench/inference.py`)",
        "",
        f"Written by `bench/inference.py` on {datetime.date.today().isoformat()}; not part of the test suite. "
        f"Machine: {cpu_name()}"
        + (f", {torch.cuda.get_device_name()}" if torch.device(args.device).type == "cuda" else "")
        + f", {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"shared with other work (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after).",
        "",
        f"Setup: SD 1.5 UNet config, random weights, {args.dtype} on {args.device}; {args.size}x{args.size} images "
        f"({args.size // 8}x{args.size // 8} latents), {steps} steps of Euler a, guidance 7 (UNet batch 2), "
        f"batch 1; a generation = the pipeline's denoising loop with precomputed embeddings (text encoding and "
        f"VAE decoding are the same with or without a network). {args.rounds} rounds; in each, one generation of "
        f"every configuration, run side by side: step i of each in turn, the order rotating every step; after a "
        f"one-step warm-up of each configuration. Run took {elapsed:.0f} s.",
        "",
        "### FLOPs",
        "",
        f"- UNet forward (batch 2): {base_unet / g:.1f} GFLOPs (FlopCounterMode, classic attention); "
        f"generation: {base_generation / g:.1f} GFLOPs.",
        f"- Attention layers: {len(self_layers)} self-attention (tokens x width: "
        f"{', '.join(sorted({f'{layer.tokens}x{layer.width}' for layer in self_layers}))}), "
        f"{len(layers) - len(self_layers)} cross-attention ({TEXT_TOKENS}x768).",
        "- A [1,2,1] module on width d costs 2 x (d x 2d + 2d x d) = 8 d^2 FLOPs per token as it is; collapsed to "
        "one map 2 d^2; folded into a d_out x d projection 2 d^2 d_out once per generation and nothing per call. "
        "K and V modules per layer; the text context is transformed once per generation on this project's path, "
        "in every cross-attention layer at every step on AUTOMATIC1111's.",
        f"- Linear network, the cost model's choice per self-attention layer (tokens x width) for {steps} steps at "
        f"batch 2: " + ", ".join(f"{shape} {mode}" for shape, mode in choices.items()) + ".",
        f"- One-off, per loaded network (cached on its modules, done in the warm-up): collapsing the linear "
        f"network's 8 modules, {collapse_gflops / g:.1f} GFLOPs, {collapse_seconds:.2f} s.",
        "- Extra GFLOPs per generation, analytic vs counted (FlopCounterMode on two real calls of one "
        "generation's object, the first planning and folding; the counter does not see matrix-vector products, "
        "so it misses the folds' bias terms `W c + b`, which the analytic count includes): "
        + ", ".join(f"{c.name} {c.flops / g:.2f} vs {c.counted / g:.2f}" for c in configs[1:]) + ".",
        "",
        "### Time vs FLOPs (per generation)",
        "",
        "Time ratios are against the bare UNet. Three estimators, because this machine is shared with other "
        "work: total wall time over all rounds over the bare UNet's, the median over rounds of each round's wall "
        "time over that round's bare UNet (paired), and the ratio of total CPU times of the process.",
        "",
        "| configuration | extra GFLOPs | FLOP ratio | wall min (s) | wall median (s) | CPU median (s) "
        "| ratio, total wall | ratio, paired wall median | ratio, total CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    flop_ratio, time_ratio = {}, {}
    for config in configs:
        flop_ratio[config.name] = (base_generation + config.flops) / base_generation
        time_ratio[config.name] = ratios(times, config.name, bare)
        wall = [w for w, _ in times[config.name]]
        cpu = [c for _, c in times[config.name]]
        lines.append(f"| {config.name} | {config.flops / g:.2f} | {flop_ratio[config.name]:.4f} | {min(wall):.2f} | "
                     f"{statistics.median(wall):.2f} | {statistics.median(cpu):.2f} | "
                     + " | ".join(f"{r:.4f}" for r in time_ratio[config.name]) + " |")

    def verdict(values, ok) -> str:
        met = [ok(v) for v in values]
        return ("met on all three" if all(met) else "NOT met on any" if not any(met)
                else f"met on {sum(met)} of 3")

    labels = ("total wall", "paired wall", "total CPU")

    def listing(values, fmt) -> str:
        return ", ".join(f"{label} {fmt(v)}" for label, v in zip(labels, values))

    relu_vs_a1111 = ratios(times, "ReLU full", "A1111 hooks, ReLU full")
    relu_over_flops = [r / flop_ratio["ReLU full"] for r in time_ratio["ReLU full"]]
    lines += [
        "",
        "### Targets",
        "",
        f"- Linear full network <= 1.02 x the bare UNet (FLOP ratio {flop_ratio['linear full']:.4f}): "
        + listing(time_ratio["linear full"], lambda v: f"{v:.4f}") + " - "
        + verdict(time_ratio["linear full"], lambda v: v <= 1.02) + ".",
        "- ReLU full network no slower than AUTOMATIC1111's way (time ratio ReLU full / A1111 hooks): "
        + listing(relu_vs_a1111, lambda v: f"{v:.4f}") + " - " + verdict(relu_vs_a1111, lambda v: v <= 1.0) + ".",
        f"- ReLU full network, time ratio at most 2% above its FLOP ratio ({flop_ratio['ReLU full']:.4f}; time "
        "ratio / FLOP ratio, below 1 when the network's large matrix products run faster per FLOP than the UNet): "
        + listing(relu_over_flops, lambda v: f"{v:.4f}") + " - " + verdict(relu_over_flops, lambda v: v <= 1.02)
        + "; within 2% either way: " + verdict(relu_over_flops, lambda v: abs(v - 1) <= 0.02) + ".",
        f"- Cross-only network <= 1.01 x the bare UNet (FLOP ratio {flop_ratio['cross-only']:.5f}): "
        + listing(time_ratio["cross-only"], lambda v: f"{v:.4f}") + " - "
        + verdict(time_ratio["cross-only"], lambda v: v <= 1.01) + ".",
        "",
        "Raw times, wall / CPU seconds per generation, in round order; then the first step (which plans, folds "
        "and transforms the text context) and the median of the later steps, wall seconds, over all rounds:",
        "",
    ]
    for name, values in times.items():
        first = statistics.median(timed[name][0][0] for timed in steps_by_round)
        later = statistics.median(w for timed in steps_by_round for w, _ in timed[name][1:])
        lines.append(f"- {name}: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in values)}; first step {first:.2f}, "
                     f"later steps {later:.2f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
