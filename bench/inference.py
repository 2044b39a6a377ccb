"""Inference cost of hypernetworks on an SD 1.5-shaped UNet: measured time against counted FLOPs.

    venv/bin/python bench/inference.py [--steps 2] [--size 256] [--rounds 5] [--out bench/RESULTS.md]

The UNet is the real SD 1.5 configuration (``extension/configs/sd1/unet``, 860 M parameters) with random
weights; a "generation" is one ``StableDiffusionPipeline`` call with precomputed prompt embeddings,
classifier-free guidance (UNet batch 2) and ``output_type="latent"``, i.e. the denoising loop the
hypernetworks act on (text encoding and VAE decoding cost the same with or without them and are left out).

Configurations, timed in interleaved rounds (the order rotates each round) so that load from other
processes hits them alike:

- ``baseline``: hypernetwork processors installed, no network (they hand every call to the original
  ``AttnProcessor2_0``);
- ``full [1,2,1]``: a default A1111 network on 768/320/640/1280 (self- and cross-attention);
- ``cross-only 768``: the same structure, text width only, per-generation cached context (the normal path);
- ``cross-only 768, uncached``: the same network passed as a plain list, transformed in every layer at
  every step (what the cache saves).

FLOPs: the UNet's are counted with ``torch.utils.flop_counter.FlopCounterMode`` (with diffusers' classic
``AttnProcessor``, whose bmm's the counter sees; it does not count CPU SDPA kernels); the hypernetworks'
are counted analytically, 2 x in x out per token per Linear (the counter's convention), from the token
count and width of every attention layer (recorded with hooks), and checked against the counter.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from extension.hypernetwork.attention import (ActiveHypernetworks, install_hypernetwork_processors,  # noqa: E402
                                 remove_hypernetwork_processors)
from extension.hypernetwork import Hypernetwork  # noqa: E402

SD1_UNET_CONFIG = ROOT / "extension" / "configs" / "sd1" / "unet" / "config.json"
TEXT_TOKENS = 77
CFG_BATCH = 2  # classifier-free guidance: negative + positive rows


@dataclasses.dataclass(frozen=True)
class AttentionLayer:
    name: str
    cross: bool
    tokens: int  # context tokens per sample
    width: int  # context width (the hypernetwork module chosen)


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
                layers.append(AttentionLayer(name, cross, shape[1], shape[-1]))
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            unet(_zeros(unet, 1, 4, latent, latent), 500, _zeros(unet, 1, TEXT_TOKENS, unet.config.cross_attention_dim))
    finally:
        for handle in handles:
            handle.remove()
    return layers


def module_flops_per_token(module) -> int:
    return sum(2 * layer.in_features * layer.out_features for layer in module.linear
               if isinstance(layer, torch.nn.Linear))


def hypernetwork_flops(hn: Hypernetwork, layers: list[AttentionLayer], steps: int, cached: bool) -> dict[str, int]:
    """Extra FLOPs of one generation: self-attention every step, cross-attention once (cached) or per layer/step."""
    self_flops = cross_per_layer = 0
    for layer in layers:
        pair = hn.layers.get(layer.width)
        if pair is None:
            continue
        flops = CFG_BATCH * layer.tokens * sum(module_flops_per_token(m) for m in pair)
        if layer.cross:
            cross_per_layer = flops  # same context in every cross-attention layer
            self_flops += 0
        else:
            self_flops += flops
    cross_layers = sum(1 for layer in layers if layer.cross and layer.width in hn.layers)
    cross = cross_per_layer if cached else cross_per_layer * cross_layers * steps
    return {"self": self_flops * steps, "cross": cross, "total": self_flops * steps + cross}


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


def counted_hypernetwork_flops(unet, latent: int, networks) -> int:
    """FlopCounterMode's view of what one forward with ``networks`` adds (SDPA is invisible to it either way)."""
    sample = _zeros(unet, CFG_BATCH, 4, latent, latent)
    context = _zeros(unet, CFG_BATCH, TEXT_TOKENS, unet.config.cross_attention_dim)
    install_hypernetwork_processors(unet)
    try:
        base = count_flops(unet, sample, context)
        return count_flops(unet, sample, context, cross_attention_kwargs={"hypernetworks": networks}) - base
    finally:
        remove_hypernetwork_processors(unet)


def make_network(sizes) -> Hypernetwork:
    """A1111's defaults: [1, 2, 1], linear activation, Normal init (the values do not change the cost)."""
    torch.manual_seed(1)
    return Hypernetwork("bench", enable_sizes=sizes, layer_structure=[1, 2, 1])


def generate(pipe, embeds, steps: int, size: int, networks) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of one generation."""
    kwargs = {"cross_attention_kwargs": {"hypernetworks": networks()}} if networks is not None else {}
    _sync(pipe.device)
    start, start_cpu = time.perf_counter(), time.process_time()
    pipe(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], num_inference_steps=steps, guidance_scale=7.0,
         height=size, width=size, output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs)
    _sync(pipe.device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def module_seconds(hn: Hypernetwork, layers: list[AttentionLayer], steps: int, cached: bool, reps: int = 3,
                   device="cpu", dtype=torch.float32) -> float:
    """Time of the hypernetwork work alone in one generation: its modules on contexts of the generation's
    shapes (fastest of ``reps``), without the UNet around them."""
    work = []
    for layer in layers:
        pair = hn.layers.get(layer.width)
        if pair is not None and (not layer.cross or not cached):
            work += [(pair, layer.tokens, layer.width)] * steps
    cross = [layer for layer in layers if layer.cross and layer.width in hn.layers]
    if cached and cross:
        work.append((hn.layers[cross[0].width], cross[0].tokens, cross[0].width))
    inputs = {(tokens, width): torch.randn(CFG_BATCH, tokens, width, device=device, dtype=dtype)
              for _, tokens, width in work}
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps):
            _sync(device)
            start = time.perf_counter()
            for (k_module, v_module), tokens, width in work:
                k_module(inputs[tokens, width], 1.0)
                v_module(inputs[tokens, width], 1.0)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best


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
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="image size (latents are size / 8)")
    parser.add_argument("--rounds", type=int, default=6)
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
    full = make_network([768, 320, 640, 1280]).for_inference(args.device, dtype)
    cross_only = make_network([768]).for_inference(args.device, dtype)

    base_unet = unet_flops(unet, latent)
    base_generation = base_unet * args.steps
    configs = {
        "baseline": (None, {"self": 0, "cross": 0, "total": 0}),
        "full [1,2,1] 768/320/640/1280": (lambda: ActiveHypernetworks([(full, 1.0)]),
                                          hypernetwork_flops(full, layers, args.steps, cached=True)),
        "cross-only 768 (cached)": (lambda: ActiveHypernetworks([(cross_only, 1.0)]),
                                    hypernetwork_flops(cross_only, layers, args.steps, cached=True)),
        "cross-only 768, uncached": (lambda: [(cross_only, 1.0)],
                                     hypernetwork_flops(cross_only, layers, args.steps, cached=False)),
    }
    check = {
        "full": (counted_hypernetwork_flops(unet, latent, ActiveHypernetworks([(full, 1.0)])),
                 hypernetwork_flops(full, layers, 1, cached=True)["total"]),
        "cross uncached": (counted_hypernetwork_flops(unet, latent, [(cross_only, 1.0)]),
                           hypernetwork_flops(cross_only, layers, 1, cached=False)["total"]),
    }

    install_hypernetwork_processors(pipe)
    embeds = (torch.randn(1, TEXT_TOKENS, 768, generator=torch.Generator().manual_seed(1)).to(args.device, dtype),
              torch.randn(1, TEXT_TOKENS, 768, generator=torch.Generator().manual_seed(2)).to(args.device, dtype))
    names = list(configs)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    generate(pipe, embeds, args.steps, args.size, configs[names[1]][0])  # warm-up (exercises every path)
    rounds: dict[str, list[int]] = {name: [] for name in names}
    every_round = names[:3]
    for round_index in range(args.rounds):
        order = every_round[round_index % 3:] + every_round[:round_index % 3]
        if round_index % 2 == 1:  # the uncached variant only shows what the cache saves: every other round
            order.insert(round_index // 2 % (len(order) + 1), names[3])
        for name in order:
            times[name].append(generate(pipe, embeds, args.steps, args.size, configs[name][0]))
            rounds[name].append(round_index)
    remove_hypernetwork_processors(pipe)
    module_work = {name: module_seconds(hn, layers, args.steps, cached, device=args.device, dtype=dtype)
                   for name, hn, cached in ((names[1], full, True), (names[2], cross_only, True),
                                            (names[3], cross_only, False))}

    def stats(name):
        wall = [w for w, _ in times[name]]
        cpu = [c for _, c in times[name]]
        return min(wall), statistics.median(wall), statistics.median(cpu)

    base = stats("baseline")
    rows = []
    for name in names:
        extra = configs[name][1]["total"]
        flop_ratio = (base_generation + extra) / base_generation
        mine = stats(name)
        baseline_by_round = dict(zip(rounds["baseline"], times["baseline"]))
        paired = statistics.median(w / baseline_by_round[r][0] for r, (w, _) in zip(rounds[name], times[name]))
        rows.append((name, extra, flop_ratio, mine, (mine[0] / base[0], paired, mine[2] / base[2])))

    elapsed = time.perf_counter() - started
    report = render(args, layers, base_unet, base_generation, rows, times, check, elapsed, load_before,
                    os.getloadavg(), module_work)
    args.out.write_text(report)
    print(report)
    return 0


def render(args, layers, base_unet, base_generation, rows, times, check, elapsed, load_before, load_after,
           module_work) -> str:
    g = 1e9
    self_layers = [layer for layer in layers if not layer.cross]
    lines = [
        "# Inference benchmark: hypernetworks on an SD 1.5-shaped UNet",
        "",
        f"Written by `bench/inference.py` on {datetime.date.today().isoformat()}; not part of the test suite. "
        f"Machine: {cpu_name()}"
        + (f", {torch.cuda.get_device_name()}" if torch.device(args.device).type == "cuda" else "")
        + f", {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"shared with other work (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after).",
        "",
        f"Setup: SD 1.5 UNet config, random weights, {args.dtype} on {args.device} (hypernetworks as "
        f"`Hypernetwork.for_inference` prepares them: under autocast on a half-precision CUDA model, as "
        f"AUTOMATIC1111 runs them); {args.size}x{args.size} images "
        f"({args.size // 8}x{args.size // 8} latents), {args.steps} steps of Euler a, guidance 7 (UNet batch 2), "
        f"batch 1; a generation = one pipeline call with precomputed embeddings and `output_type=\"latent\"` "
        f"(the denoising loop; text encoding and VAE decoding are the same with or without a network). "
        f"{args.rounds} interleaved rounds after one warm-up generation; run took {elapsed:.0f} s.",
        "",
        "## FLOPs",
        "",
        f"- UNet forward (batch 2): {base_unet / g:.1f} GFLOPs (FlopCounterMode, classic attention); "
        f"generation: {base_generation / g:.1f} GFLOPs.",
        f"- Attention layers: {len(self_layers)} self-attention (tokens x width: "
        f"{', '.join(sorted({f'{l.tokens}x{l.width}' for l in self_layers}))}), "
        f"{len(layers) - len(self_layers)} cross-attention ({TEXT_TOKENS}x768).",
        "- A [1,2,1] module on width d costs 2 x (d x 2d + 2d x d) = 8 d^2 FLOPs per token; K and V modules "
        "per layer; self-attention contexts change every step, the text context is transformed once per "
        "generation (cached) or in every cross-attention layer at every step (uncached).",
        f"- Check against FlopCounterMode, one forward: full network {check['full'][0] / g:.3f} counted vs "
        f"{check['full'][1] / g:.3f} GFLOPs analytic; cross-only uncached {check['cross uncached'][0] / g:.3f} vs "
        f"{check['cross uncached'][1] / g:.3f}.",
        "",
        "## Time vs FLOPs (per generation)",
        "",
        "Time ratios are against the baseline. Three estimators, because this 2-core machine is shared with "
        "other work: the fastest wall time of each configuration over the fastest baseline (the least disturbed "
        "runs), the median over rounds of each round's wall time over that round's baseline (paired, so slow "
        "changes in load cancel), and the ratio of median CPU times of the process.",
        "",
        "| configuration | extra GFLOPs | FLOP ratio | wall min (s) | wall median (s) | CPU median (s) "
        "| ratio, wall min | ratio, paired wall median | ratio, CPU median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, extra, flop_ratio, (wall_min, wall_median, cpu_median), ratios in rows:
        lines.append(f"| {name} | {extra / g:.2f} | {flop_ratio:.4f} | {wall_min:.3f} | {wall_median:.3f} | "
                     f"{cpu_median:.3f} | {ratios[0]:.4f} | {ratios[1]:.4f} | {ratios[2]:.4f} |")
    full_flops, full_ratios = rows[1][2], rows[1][4]
    cross_flops, cross_ratios = rows[2][2], rows[2][4]
    uncached_ratios = rows[3][4]

    def verdict(ok):
        return "met" if ok else "NOT met"

    lines += [
        "",
        "## Targets",
        "",
        "- Full network, time ratio / FLOP ratio (target within 5%): "
        + ", ".join(f"{label} {r / full_flops:.4f} ({verdict(abs(r / full_flops - 1) <= 0.05)})"
                    for label, r in zip(("wall min", "paired wall", "CPU median"), full_ratios)) + ".",
        f"- Cross-only network, cached, extra time (target under 1%; FLOPs {100 * (cross_flops - 1):+.3f}%): "
        + ", ".join(f"{label} {100 * (r - 1):+.2f}% ({verdict(r - 1 < 0.01)})"
                    for label, r in zip(("wall min", "paired wall", "CPU median"), cross_ratios)) + ".",
        "- For comparison, the same network uncached: "
        + ", ".join(f"{label} {100 * (r - 1):+.2f}%" for label, r in zip(("wall min", "paired wall", "CPU median"),
                                                                     uncached_ratios)) + ".",
        "",
        "Hypernetwork work alone (its modules run on tensors of one generation's shapes, no UNet; fastest of 3), "
        "as a share of the fastest baseline generation: "
        + ", ".join(f"{name} {seconds:.3f} s = {100 * seconds / rows[0][3][0]:.2f}%"
                    for name, seconds in module_work.items()) + ".",
        "",
        "Raw times, wall / CPU seconds, in round order (the uncached variant ran every other round):",
        "",
    ]
    for name, values in times.items():
        lines.append(f"- {name}: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in values)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
