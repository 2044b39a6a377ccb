"""``python launch.py --generate "PROMPT" [options]``: txt2img from the command line.

Writes PNGs (with A1111 infotexts) under ``<outdir>/txt2img-images/YYYY-MM-DD/`` and prints each path on
stdout; warnings go to stderr. Exit status 0 on success, 2 for bad arguments or a checkpoint that cannot
be loaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .samplers import DEFAULT_SAMPLER, sampler_names, schedule_type_labels

ROOT = Path(__file__).resolve().parent.parent


def native_size(pipe) -> int:
    """The image size the model was trained at: the UNet's sample size times the VAE's scale factor."""
    try:
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    except (AttributeError, TypeError, ValueError):
        return 512


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py --generate", description="Generate images from a prompt.")
    p.add_argument("--generate", required=True, metavar="PROMPT",
                   help='the prompt; <hypernet:NAME:MULTIPLIER> tags apply hypernetworks')
    p.add_argument("--negative", "--negative-prompt", dest="negative", default="", help="negative prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=-1, help="-1: random")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"one of: {', '.join(sampler_names())}")
    p.add_argument("--scheduler", "--schedule-type", dest="scheduler", default="Automatic",
                   help=f"schedule type, one of: {', '.join(schedule_type_labels())}")
    p.add_argument("--width", type=int, default=None,
                   help="default: the model's native size (512 SD 1.x, 768 SD 2.x-v, 1024 SDXL, 64 the demo model)")
    p.add_argument("--height", type=int, default=None, help="default: as --width")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--batch-count", "--n-iter", dest="n_iter", type=int, default=1)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--outdir", type=Path, default=ROOT / "outputs", help="default: outputs/")
    p.add_argument("--ckpt", default=None, help="checkpoint name (default: the demo model)")
    p.add_argument("--ckpt-dir", type=Path, default=ROOT / "models" / "Stable-diffusion")
    p.add_argument("--hypernetwork-dir", type=Path, default=ROOT / "models" / "hypernetworks")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    return p


def main(argv: list[str]) -> int:
    """Parse ``argv`` (``--generate`` included), generate, print the saved paths. Returns the exit status."""
    from .errors import ModelError
    from .library import HypernetworkLibrary
    from .checkpoints import ModelManager
    from .demo.pretrained import builtin_model
    from .processing import Txt2ImgRequest, txt2img

    args = parser().parse_args(argv)
    try:
        model = ModelManager(args.ckpt_dir, args.device, args.precision, builtin=builtin_model()).load(args.ckpt)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = native_size(model.pipe)
    request = Txt2ImgRequest(
        prompt=args.generate, negative_prompt=args.negative, sampler_name=args.sampler, scheduler=args.scheduler,
        steps=args.steps, cfg_scale=args.cfg_scale, width=args.width or size, height=args.height or args.width or size,
        seed=args.seed, batch_size=args.batch_size, n_iter=args.n_iter, clip_skip=args.clip_skip)

    def progress(step: int, total: int) -> None:
        print(f"\rstep {step}/{total}", end="" if step < total else "\n", file=sys.stderr, flush=True)

    try:
        result = txt2img(request, model, HypernetworkLibrary(args.hypernetwork_dir), outdir=args.outdir,
                         progress=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in result.messages:
        print(f"warning: {message}", file=sys.stderr)
    for path in result.paths:
        print(path)
    return 0
