"""``python launch.py --generate "PROMPT" [options]``: txt2img from the command line.

Writes PNGs (with A1111 infotexts) under ``<outdir>/txt2img-images/YYYY-MM-DD/`` and prints each path on
stdout; progress (a bar with the ETA in a terminal, ``step N/M`` lines otherwise) and warnings go to stderr.
Exit status 0 on success, 2 for bad arguments or a checkpoint that cannot be loaded.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from . import paths
from .cli_parser import ModeParser
from .samplers import DEFAULT_SAMPLER, sampler_names, schedule_type_labels


def native_size(pipe) -> int:
    """The image size the model was trained at: the UNet's sample size times the VAE's scale factor."""
    try:
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    except (AttributeError, TypeError, ValueError):
        return 512


class Progress:
    """``progress(step, total)`` for :func:`txt2img`: a tqdm bar with the rate and ETA when ``stream`` is a
    terminal, else one plain ``step N/M`` line per step (logs and pipes get no carriage returns)."""

    def __init__(self, stream):
        self.stream, self.bar = stream, None
        self.terminal = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, step: int, total: int) -> None:
        if not self.terminal:
            print(f"step {step}/{total}", file=self.stream, flush=True)
            return
        if self.bar is None:
            from tqdm import tqdm

            try:
                sized = os.get_terminal_size(self.stream.fileno()).columns > 0
            except (AttributeError, OSError, ValueError):
                sized = False
            # A terminal that reports no width (a bare pseudo-terminal) would get a bar 0 columns wide.
            self.bar = tqdm(total=total, desc="txt2img", unit="step", file=self.stream,
                            **({"dynamic_ncols": True} if sized else {"ncols": 80}))
        self.bar.total = total
        self.bar.update(step - self.bar.n)
        if step >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def no_loading_bars(enabled: bool = True):
    """Within: no "Loading pipeline components" / "Loading weights" bars from diffusers and transformers (used
    when stderr is not a terminal: in a log or a pipe they are carriage-return noise). Restored after."""
    if not enabled:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


def parser() -> argparse.ArgumentParser:
    p = ModeParser(prog="launch.py", description="Generate images from a prompt.")
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
    p.add_argument("--pad-cond-uncond", action="store_true",
                   help="AUTOMATIC1111's 'Pad prompt/negative prompt': attend to the padding of the shorter one")
    p.add_argument("--outdir", type=Path, default=paths.OUTPUT_DIR, help="default: outputs/")
    p.add_argument("--ckpt", default=None, help="checkpoint name (default: the demo model)")
    p.add_argument("--ckpt-dir", type=Path, default=paths.CKPT_DIR, help="default: models/Stable-diffusion/")
    p.add_argument("--hypernetwork-dir", type=Path, default=paths.HYPERNETWORK_DIR,
                   help="default: models/hypernetworks/")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="weights precision (default: fp16 on CUDA, fp32 on CPU)")
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
        with no_loading_bars(not sys.stderr.isatty()):
            model = ModelManager(args.ckpt_dir, args.device, args.precision, builtin=builtin_model()).load(args.ckpt)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = native_size(model.pipe)
    request = Txt2ImgRequest(
        prompt=args.generate, negative_prompt=args.negative, sampler_name=args.sampler, scheduler=args.scheduler,
        steps=args.steps, cfg_scale=args.cfg_scale, width=args.width or size, height=args.height or args.width or size,
        seed=args.seed, batch_size=args.batch_size, n_iter=args.n_iter, clip_skip=args.clip_skip,
        pad_cond_uncond=args.pad_cond_uncond)

    progress = Progress(sys.stderr)
    try:
        result = txt2img(request, model, HypernetworkLibrary(args.hypernetwork_dir), outdir=args.outdir,
                         progress=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    for message in result.messages:
        print(f"warning: {message}", file=sys.stderr)
    for path in result.paths:
        print(path)
    return 0
