"""``launch.py --create-hypernetwork`` and ``--train-hypernetwork``: headless runs with every field of the UI.

Training also runs in several processes under ``accelerate launch`` (``--multi_gpu --num_processes N`` on
GPUs; on CPU ``--cpu --num_processes N`` works too: accelerate itself starts one process there, unless MPI is
set up, so this command starts the N processes, with ``torch.distributed.run``, when it finds it was asked
for more than one). Each process loads the model; the network's gradients are synchronised; the first process
writes the files.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .. import paths

CREATE_FLAG = "--create-hypernetwork"
TRAIN_FLAG = "--train-hypernetwork"


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hypernetwork-dir", type=Path, default=paths.HYPERNETWORK_DIR,
                        help="folder of hypernetwork files (default models/hypernetworks)")
    parser.add_argument("--ckpt-dir", type=Path, default=paths.CKPT_DIR, help="folder of checkpoints")
    parser.add_argument("--ckpt", default=None, help="checkpoint to train on (default: the demo model)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when present)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="the frozen model's precision (default: fp16 on CUDA, fp32 on CPU)")


def create_parser() -> argparse.ArgumentParser:
    from ..cli_parser import ModeParser
    from ..hypernetwork.config import WEIGHT_INITS, ui_activations

    p = ModeParser(prog=f"launch.py {CREATE_FLAG}", description="Create a new hypernetwork file.")
    p.add_argument(CREATE_FLAG, dest="name", required=True, metavar="NAME", help="the network's name")
    p.add_argument("--sizes", default=None,
                   help="attention widths to give modules, e.g. 768,320,640,1280 (default: the model's widths)")
    p.add_argument("--layer-structure", default="1, 2, 1", help='default "1, 2, 1"')
    p.add_argument("--activation", default="linear", choices=ui_activations(), metavar="NAME",
                   help=f"default linear; one of: {', '.join(ui_activations())}")
    p.add_argument("--weight-init", default="Normal", choices=WEIGHT_INITS)
    p.add_argument("--layer-norm", action="store_true", help="add layer normalization")
    p.add_argument("--use-dropout", action="store_true", help="use dropout (implied by --dropout-structure)")
    p.add_argument("--dropout-structure", default=None, help='e.g. "0, 0.1, 0"')
    p.add_argument("--activate-output", action="store_true", help="the activation also follows the last layer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file of that name")
    p.add_argument("--pt", action="store_true", help="write AUTOMATIC1111's .pt (default .safetensors)")
    _model_flags(p)
    return p


def train_parser() -> argparse.ArgumentParser:
    from ..cli_parser import ModeParser
    from .config import CLIP_GRAD_MODES, LATENT_SAMPLING, PRECISIONS, TrainingConfig, optimizer_names

    d = TrainingConfig()
    p = ModeParser(prog=f"launch.py {TRAIN_FLAG}", description="Train a hypernetwork (AUTOMATIC1111's Train tab).")
    p.add_argument(TRAIN_FLAG, dest="hypernetwork_name", required=True, metavar="NAME")
    p.add_argument("--dataset", dest="data_root", default=None, metavar="DIR",
                   help="folder of pictures (required, unless --request-json names it)")
    p.add_argument("--learn-rate", default=d.learn_rate, help=f'schedule, e.g. "5e-5:100, 5e-6:1500" '
                                                             f"(default {d.learn_rate})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"max steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--gradient-accumulation", dest="gradient_step", type=int, default=d.gradient_step)
    p.add_argument("--template", dest="template_filename", default=d.template_filename,
                   help=f"template file name in textual_inversion_templates/, or a path (default "
                        f"{d.template_filename})")
    p.add_argument("--width", dest="training_width", type=int, default=0, help="default: the model's size")
    p.add_argument("--height", dest="training_height", type=int, default=0, help="default: the model's size")
    p.add_argument("--varsize", action="store_true", help="do not resize the pictures (batched by size)")
    p.add_argument("--log-dir", dest="log_directory", default=None,
                   help=f"log folder (a relative path: from the working folder; default {d.log_directory} in the "
                        f"project folder)")
    p.add_argument("--train-data-dir", type=Path, action="append", default=None, metavar="DIR",
                   help="confine the dataset, the template and the log folder to these folders (repeat for "
                        "several; relative paths are then relative to the first). Without it the command line "
                        "reads and writes where its flags point; a run from --request-json (a host's Train tab or "
                        "API) is always confined, to the project folder by default")
    p.add_argument("--save-every", dest="save_hypernetwork_every", type=int, default=d.save_hypernetwork_every,
                   help="save a copy every N steps (0: never)")
    p.add_argument("--preview-every", dest="create_image_every", type=int, default=d.create_image_every,
                   help="save a preview picture every N steps (0: never)")
    p.add_argument("--seed", type=int, default=None, help="default: random (recorded in the settings file)")
    p.add_argument("--latent-sampling", dest="latent_sampling_method", default=d.latent_sampling_method,
                   choices=LATENT_SAMPLING)
    p.add_argument("--clip-grad", dest="clip_grad_mode", default="disabled", choices=CLIP_GRAD_MODES)
    p.add_argument("--clip-grad-value", default=d.clip_grad_value, help="schedule (default 0.1)")
    p.add_argument("--shuffle-tags", action="store_true")
    p.add_argument("--tag-dropout", dest="tag_drop_out", type=float, default=0.0)
    p.add_argument("--use-weight", action="store_true", help="use PNG alpha as loss weight")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--optimizer", default=d.optimizer, choices=optimizer_names(), metavar="NAME",
                   help="a torch.optim optimizer (default AdamW)")
    p.add_argument("--mixed-precision", default=d.mixed_precision, choices=PRECISIONS)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--snr-gamma", type=float, default=0.0,
                   help="min-SNR-gamma loss weighting, e.g. 5 (default 0: AUTOMATIC1111's plain loss)")
    p.add_argument("--no-optimizer-state", dest="save_optimizer_state", action="store_false",
                   help="do not write .optim sidecars (then a resume starts a fresh optimizer)")
    p.add_argument("--csv-every", dest="training_write_csv_every", type=int, default=d.training_write_csv_every)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--preview-prompt", default=None, help="preview with these settings (else the batch's prompt)")
    p.add_argument("--preview-negative-prompt", default="")
    p.add_argument("--preview-steps", type=int, default=d.preview_steps)
    p.add_argument("--preview-sampler", dest="preview_sampler_name", default=d.preview_sampler_name)
    p.add_argument("--preview-cfg-scale", type=float, default=d.preview_cfg_scale)
    p.add_argument("--preview-seed", type=int, default=d.preview_seed)
    p.add_argument("--preview-width", type=int, default=0)
    p.add_argument("--preview-height", type=int, default=0)
    p.add_argument("--request-json", type=Path, default=None, metavar="FILE",
                   help="the run's parameters as a JSON object with AUTOMATIC1111's names (what a Train tab or "
                        "POST /sdapi/v1/train/hypernetwork sends); flags other than the model's are then ignored")
    p.add_argument("--progress-json", action="store_true",
                   help="write the progress as JSON lines on stdout (for a host's Train tab: "
                        "extension/training/progress_stream.py) instead of a progress bar")
    _model_flags(p)
    return p


def _load_model(args, device=None):
    from ..checkpoints import ModelManager
    from ..demo.pretrained import builtin_model

    return ModelManager(args.ckpt_dir, device or args.device, args.precision,
                        builtin=builtin_model()).load(args.ckpt)


def create(argv: list[str]) -> int:
    """Run ``--create-hypernetwork``; prints the file written."""
    from ..errors import ModelError
    from ..library import HypernetworkLibrary
    from .config import TrainingError
    from .create import create_hypernetwork

    args = create_parser().parse_args(argv)
    try:
        sizes = [s for s in args.sizes.split(",") if s.strip()] if args.sizes else \
            sorted(_load_model(args).attention_widths())
        path = create_hypernetwork(
            args.name, HypernetworkLibrary(args.hypernetwork_dir), sizes=sizes, layer_structure=args.layer_structure,
            activation_func=args.activation, weight_init=args.weight_init, add_layer_norm=args.layer_norm,
            use_dropout=args.use_dropout or args.dropout_structure is not None,
            dropout_structure=args.dropout_structure or "0, 0, 0", activate_output=args.activate_output,
            overwrite=args.overwrite, file_format="pt" if args.pt else "safetensors")
    except (TrainingError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {path}")
    return 0


def parent_num_processes() -> int | None:
    """How many processes ``accelerate launch`` was asked for, read from its command line (Linux), when it
    started this one as a single process (``--cpu --num_processes N`` without MPI)."""
    if os.environ.get("WORLD_SIZE") or os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true":
        return None
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
            parent = [part.decode(errors="replace") for part in handle.read().split(b"\0")]
    except OSError:
        return None
    if not any("accelerate" in part for part in parent[:3]):
        return None
    for i, part in enumerate(parent):
        for flag in ("--num_processes", "--num-processes"):
            if part == flag and i + 1 < len(parent):
                return int(parent[i + 1]) if parent[i + 1].isdigit() else None
            if part.startswith(flag + "="):
                value = part.split("=", 1)[1]
                return int(value) if value.isdigit() else None
    return None


def _relaunch(count: int) -> int:
    """Start ``count`` processes of this very command with ``torch.distributed.run`` and wait for them."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(count),
               "--master_addr", os.environ.get("MASTER_ADDR", "127.0.0.1"),
               "--master_port", os.environ.get("MASTER_PORT", "29500"), str(paths.ROOT / "launch.py"),
               "--skip-install", *sys.argv[1:]]
    print(f"accelerate launch --cpu asked for {count} processes; starting them with torch.distributed.run",
          file=sys.stderr, flush=True)
    return subprocess.call(command, env={**os.environ, "SKIP_INSTALL": "1"})


def command_line_roots(args) -> tuple[Path, ...] | None:
    """The folders a run's paths must lie in, or None for none.

    A path typed on one's own command line is the user's: ``--dataset``, ``--template`` and ``--log-dir`` go
    wherever they point. ``--train-data-dir`` confines them on request. A run from ``--request-json`` carries
    paths that arrived in a request (a host's Train tab or its API), so it is always confined: to its
    ``--train-data-dir`` folders, or the project folder.
    """
    from ..confine import training_roots

    if args.train_data_dir or args.request_json is not None:
        return training_roots(args.train_data_dir)
    return None


def typed_paths(config, args) -> dict:
    """The paths the user typed, made absolute from the working folder (an unconfined run); a log folder left
    at its default stays in the project folder, as the UI's does."""
    changes = {}
    if config.data_root:
        changes["data_root"] = str(Path(config.data_root).expanduser().absolute())
    if args.request_json is None and args.log_directory:
        changes["log_directory"] = str(Path(args.log_directory).expanduser().absolute())
    template = Path(str(config.template_filename or "")).expanduser()
    if len(template.parts) > 1 and not template.is_absolute():
        changes["template_filename"] = str(template.absolute())
    return changes


def train(argv: list[str]) -> int:
    """Run ``--train-hypernetwork``: a progress bar (or lines) with loss and ETA, then where the files went."""
    count = parent_num_processes()
    if count and count > 1:
        return _relaunch(count)
    import torch

    from ..errors import ModelError
    from ..library import HypernetworkLibrary
    from .config import TrainingConfig, TrainingError
    from .monitor import TrainingMonitor
    from .train import make_accelerator

    parser = train_parser()
    args = parser.parse_args(argv)
    if args.request_json is not None:
        try:
            values = json.loads(args.request_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            parser.error(f"--request-json {args.request_json}: {exc}")
        if not isinstance(values, dict):
            parser.error(f"--request-json {args.request_json}: not a JSON object")
        values["hypernetwork_name"] = args.hypernetwork_name
    else:
        if not args.data_root:
            parser.error("--dataset is required")
        values = {k: v for k, v in vars(args).items()
                  if k not in ("hypernetwork_dir", "ckpt_dir", "ckpt", "device", "precision", "train_data_dir",
                               "progress_json", "request_json")}
        values["preview_from_txt2img"] = args.preview_prompt is not None
        values["preview_prompt"] = args.preview_prompt or ""
    config = TrainingConfig.from_request(values)
    roots = command_line_roots(args)
    if roots is None:  # the user's own paths: relative to where they typed them
        config = dataclasses.replace(config, **typed_paths(config, args))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ
    try:
        if distributed:
            from accelerate import Accelerator

            use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" or not torch.cuda.is_available()
            accelerator = Accelerator(cpu=use_cpu)
            model = _load_model(args, str(accelerator.device))
        else:
            model = _load_model(args)
            accelerator = make_accelerator(model.device, config.mixed_precision)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    monitor, stop = TrainingMonitor(), threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl+C: save, then stop
    if args.progress_json:
        from .progress_stream import ProgressWriter

        reporter = ProgressWriter(monitor)
    else:
        reporter = _Progress(monitor, accelerator.is_main_process)
    reporter.start()
    try:
        from . import train as train_module

        result = train_module.train_hypernetwork(config, model, HypernetworkLibrary(args.hypernetwork_dir),
                                                 monitor=monitor, accelerator=accelerator, stop_event=stop,
                                                 roots=roots)
    except TrainingError as exc:
        reporter.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
        reporter.stop()
    if accelerator.num_processes > 1 and result.network is not None:  # None: nothing was left to train
        digest = hashlib.sha256()  # of this process's weights in memory: DDP must have kept them identical
        for tensor in result.network.weights():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        print(f"process {accelerator.process_index}: weights sha256 {digest.hexdigest()}", flush=True)
    if args.progress_json:
        reporter.result(result)
    if accelerator.is_main_process:
        print(result.message)
        if result.log_dir:
            print(f"log folder: {result.log_dir}")
        for path in result.files:
            print(f"  {path}")
    return 0 if result.status in ("finished", "complete", "interrupted") else 1


class _Progress:
    """A tqdm bar with loss and ETA in a terminal; a line every few seconds otherwise (main process only)."""

    def __init__(self, monitor, enabled: bool):
        self.monitor, self.enabled = monitor, enabled
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        terminal = sys.stderr.isatty()
        bar = None
        shown = -1
        while not self._done.wait(0.5 if terminal else 5.0):
            monitor = self.monitor
            if monitor.state != "training":
                continue
            losses = monitor.losses()
            if terminal:
                from tqdm import tqdm

                if bar is None:
                    bar = tqdm(total=monitor.last_step, initial=monitor.first_step, unit="step", file=sys.stderr,
                               dynamic_ncols=True)
                bar.n = monitor.step
                if losses:
                    bar.set_postfix(loss=f"{losses[-1].loss:.4f}", lr=f"{losses[-1].learn_rate:g}", refresh=False)
                bar.refresh()
            elif monitor.step != shown:
                shown = monitor.step
                print(monitor.summary(), file=sys.stderr, flush=True)
        if bar is not None:
            bar.n = self.monitor.step
            bar.close()
