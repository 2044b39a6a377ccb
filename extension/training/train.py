"""``train_hypernetwork``: the one entry point the Train tab, the command line and the REST API call.

A run, in order:

1. check every parameter, the dataset, the template and the network before anything starts or is written
   (:meth:`TrainingConfig.validated`, :mod:`.dataset`, :mod:`.templates`);
2. load the network fresh from its file (never the copy the generation cache holds), with its optimizer
   state when the ``.optim`` sidecar was written for that very file; a file already at the schedule's end
   is reported as complete, and nothing is written;
3. encode the pictures' latents once (:mod:`.latents`) and, when captions cannot change between steps, their
   text encodings once;
4. optimize on accelerate (:mod:`.loop`): mixed precision on GPU with gradients unscaled before clipping,
   gradient accumulation, optional gradient checkpointing, several processes under ``accelerate launch``
   with the network's gradients synchronised;
5. save copies, previews and the loss CSV every N steps, stop on NaN (keeping the last good save) or on
   interrupt (saving, and saying "interrupted at step N"), and save the final file over the one in the
   models folder, in the format it started in.

The network is applied through the same attention processor as at inference
(:mod:`extension.hypernetwork.attention`); the frozen model is not modified.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import torch

from .. import paths
from ..fileio import remove_leftover_temporaries
from ..hypernetwork import Hypernetwork
from ..hypernetwork.attention import install_hypernetwork_processors
from ..library import HypernetworkLibrary
from . import checkpoints
from .config import TrainingConfig, TrainingError
from .dataset import load_pictures
from .log import write_settings
from .loop import Loop, LoopSetup
from .monitor import TrainingMonitor
from .result import TrainingResult
from .schedule import parse_schedule
from .templates import PromptMaker, find_template, read_template

log = logging.getLogger(__name__)


def resolve_dir(path, root: Path) -> Path:
    """A directory parameter: absolute as given, relative to ``root`` otherwise (never to the working folder).

    Args:
        path: the parameter's value (``~`` expanded).
        root: what a relative path is relative to.
    """
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else Path(root) / path


def training_dir(path, root: Path, roots, field: str) -> Path:
    """A directory parameter resolved (:func:`resolve_dir`), or, when ``roots`` is given, confined to them
    (:func:`extension.confine.confine_dir`: relative to the first root; outside them a :class:`TrainingError`).

    Args:
        path: the parameter's value.
        root: what a relative path is relative to when ``roots`` is None.
        roots: the folders the path must lie in, or None for no confinement.
        field: the parameter's name, for messages.

    Raises:
        TrainingError: with ``roots``, a path outside them.
    """
    if roots is None:
        return resolve_dir(path, root)
    from ..confine import OutsideRoots, confine_dir

    try:
        return confine_dir(path, roots, field)
    except OutsideRoots as exc:
        raise TrainingError(str(exc)) from None


def native_size(model) -> int:
    """The model's native picture size (its UNet sample size times the VAE factor).

    Args:
        model: a :class:`~extension.checkpoints.LoadedModel`.

    Returns:
        The size in pixels; 512 when the pipeline does not say.
    """
    pipe = model.pipe
    try:
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    except (AttributeError, TypeError, ValueError):
        return 512


def network_path(name: str, library: HypernetworkLibrary) -> Path:
    """The file of the network called ``name``, rescanning the folder once when it is not listed.

    Args:
        name: the network's name in ``library``.
        library: the hypernetworks folder.

    Raises:
        TrainingError: no such network (the message suggests close names).
    """
    entry = library.get(name)
    if entry is None:
        library.refresh()
        entry = library.get(name)
    if entry is None:
        raise TrainingError(library.unknown_message(name))
    return entry.path


def train_hypernetwork(config: TrainingConfig, model, library: HypernetworkLibrary, *, job=None,
                       monitor: TrainingMonitor | None = None, accelerator=None, root: Path | None = None,
                       templates_dir: Path | None = None, template_paths: bool = True,
                       stop_event=None, roots=None) -> TrainingResult:
    """Train the hypernetwork ``config.hypernetwork_name`` from ``library`` on ``model``.

    Args:
        config: the run's parameters (AUTOMATIC1111's, see :class:`TrainingConfig`).
        model: the loaded checkpoint (:class:`~extension.checkpoints.LoadedModel`); it stays frozen.
        library: the hypernetworks folder the network is found in and saved back to.
        job: the running :class:`~extension.jobs.Job` (interrupt, progress displays), or None.
        monitor: filled with losses, previews and state for watchers, or None.
        accelerator: an ``accelerate.Accelerator`` (``accelerate launch`` runs make their own), or None for
            one made here on the model's device.
        root: what relative ``data_root`` and ``log_directory`` are relative to (the project folder).
        templates_dir: the templates folder (``textual_inversion_templates/``).
        template_paths: whether ``template_filename`` may be a path (the REST API allows names only).
        stop_event: a ``threading.Event`` that, once set, stops the run at the next step with a save (Ctrl+C).
        roots: the folders ``data_root``, ``log_directory`` and a template given as a path must lie in
            (``--train-data-dir``; relative paths are then relative to the first; a template may also lie in the
            templates folder), or None for no confinement (``root`` then decides).

    Returns:
        A :class:`TrainingResult`. Raises :class:`TrainingError` for anything that stops a run from starting.
    """
    monitor = monitor or TrainingMonitor()
    monitor.set_state("preparing")
    config = config.validated()
    root = Path(root or paths.ROOT)
    name = config.hypernetwork_name.strip()
    source = network_path(name, library)
    network = Hypernetwork().load(source)
    network.name = name
    widths = set(model.attention_widths())
    if not set(network.layers) & widths:
        raise TrainingError(f"hypernetwork {name!r} has modules for widths {sorted(network.layers)}, none of which "
                            f"this model's attention uses ({sorted(widths)}); create one for this model")
    data_dir = training_dir(config.data_root, root, roots, "data_root")  # checked before anything is read
    log_dir = training_dir(config.log_directory, root, roots, "log_directory")
    template_name = str(config.template_filename or "").strip()
    if roots is not None and template_paths and (len(Path(template_name).parts) > 1
                                                 or Path(template_name).is_absolute()):
        # a template given as a path: in the training folders or the templates folder (relative to the first)
        template_name = str(training_dir(template_name, root, (*roots, Path(templates_dir or paths.TEMPLATES_DIR)),
                                         "template_filename"))
    template = find_template(template_name, templates_dir, allow_paths=template_paths)
    prompts = PromptMaker(tuple(read_template(template)), name, config.shuffle_tags, config.tag_drop_out)
    size = native_size(model)
    width, height = config.training_width or size, config.training_height or size
    pictures = load_pictures(data_dir, width, height, varsize=config.varsize,
                             use_weight=config.use_weight, word_regex=config.dataset_filename_word_regex,
                             join_string=config.dataset_filename_join_string,
                             latent_factor=int(getattr(model.pipe, "vae_scale_factor", 8)))
    schedule = parse_schedule(config.learn_rate, "learning rate")
    clip = parse_schedule(config.clip_grad_value, "gradient clip") if config.clip_grad_mode != "disabled" else None
    first, last = network.step, schedule.end(config.steps)
    if first >= last:
        message = (f"{name} already holds {first} steps, the end of its schedule ({last}); training is complete "
                   "(raise the steps or extend the learning rate schedule to go on)")
        monitor.set_state("finished", message)
        return TrainingResult("complete", message, str(source), first)

    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    config = dataclasses.replace(config, seed=seed, training_width=width, training_height=height)
    if accelerator is None:
        accelerator = make_accelerator(model.device, config.mixed_precision)
    folder = checkpoints.log_folder(log_dir, name)
    if accelerator.is_main_process:
        for leftover in (source, source.with_name(source.name + ".optim")):  # from a run killed mid-save
            for removed in remove_leftover_temporaries(leftover):
                log.info("removed %s, left by an interrupted save", removed)
        folder.mkdir(parents=True, exist_ok=True)
        write_settings(folder, {**config.as_dict(), "model_name": model.name, "model_hash": model.shorthash,
                                "pictures": len(pictures), "initial_step": first,
                                "hypernetwork_file": str(source)})
    network.sd_checkpoint, network.sd_checkpoint_name = model.shorthash, model.name
    install_hypernetwork_processors(model.pipe)
    setup = LoopSetup(config=config, model=model, network=network, source=source, pictures=pictures,
                      prompts=prompts, schedule=schedule, clip=clip, first_step=first, last_step=last,
                      folder=folder, accelerator=accelerator, job=job, monitor=monitor, stop_event=stop_event)
    result = Loop(setup).run()
    library.refresh()
    return result


def make_accelerator(device: torch.device, mixed_precision: str = "auto"):
    """An ``Accelerator`` for a run in this process on ``device``: fp16 mixed precision on CUDA by default.

    Accelerate's process-wide state is reset first when an earlier run in this process chose another precision
    or device (not in a multi-process run).

    Args:
        device: the model's device.
        mixed_precision: ``"auto"`` (fp16 on CUDA, none elsewhere), ``"no"``, ``"fp16"`` or ``"bf16"``; on a
            device other than CUDA it is always ``"no"``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = torch.device(device)
    precision = ("fp16" if device.type == "cuda" else "no") if mixed_precision == "auto" else mixed_precision
    if device.type != "cuda" and precision != "no":
        precision = "no"  # CPU autocast in half precision helps nothing here and loses accuracy
    state = AcceleratorState._shared_state
    changed = state and (state.get("_mixed_precision") not in (None, precision)
                         or (device.type == "cpu" and getattr(state.get("device"), "type", "cpu") != "cpu"))
    if changed and not _distributed():
        AcceleratorState._reset_state(reset_partial_state=True)  # a previous run in this server chose otherwise
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision)


def _distributed() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1
