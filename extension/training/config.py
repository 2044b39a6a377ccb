"""``TrainingConfig``: every parameter of AUTOMATIC1111's ``train_hypernetwork``, its UI defaults, and ours.

The field names are AUTOMATIC1111's (the REST API and its clients send them as they are); what it did not
have comes after them: horizontal flip (built but never applied there), the optimizer, a seed, precision,
gradient checkpointing and the optimizer-state sidecar. :meth:`TrainingConfig.validated` checks everything
that can be checked before a run starts and raises :class:`TrainingError` naming the field.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Mapping

import torch

from .schedule import ScheduleError, parse_schedule

CLIP_GRAD_MODES = ("disabled", "value", "norm")
LATENT_SAMPLING = ("once", "deterministic", "random")
PRECISIONS = ("auto", "no", "fp16", "bf16")
MAX_SIZE = 2048


class TrainingError(ValueError):
    """A training that cannot start (or must stop); the message says why."""


def optimizer_names() -> list[str]:
    """Every optimizer class in ``torch.optim`` (AUTOMATIC1111 offers them all by name)."""
    return sorted(name for name, cls in vars(torch.optim).items()
                  if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer)


@dataclasses.dataclass
class TrainingConfig:
    """One training run. Defaults are AUTOMATIC1111's Train tab's, except where noted.

    ``training_width``/``training_height`` and ``preview_width``/``preview_height`` of 0 mean the model's
    native size (512 on SD 1.x, 64 on the demo model); AUTOMATIC1111's UI starts at 512.

    Args:
        hypernetwork_name: the network to train (a name in the hypernetworks folder).
        learn_rate: the learning-rate schedule (``"5e-5:100, 5e-6"``) or a number.
        batch_size: pictures per micro-batch (per process).
        gradient_step: micro-batches per optimizer step (gradient accumulation).
        data_root: the dataset folder.
        log_directory: where copies, previews and the loss CSV go (``<log_directory>/<date>/<name>/``).
        training_width: the training width in pixels, a multiple of 8; 0: the model's native size.
        training_height: the training height, likewise.
        varsize: keep each picture's size (cropped to a multiple of 8) instead of resizing ("do not resize").
        steps: the step the run ends at (max steps; the schedule's last bound may end it earlier).
        clip_grad_mode: ``"disabled"``, ``"value"`` or ``"norm"``.
        clip_grad_value: the gradient-clip schedule, in the learning rate's syntax.
        shuffle_tags: shuffle the caption's comma-separated tags each time a picture is used.
        tag_drop_out: the probability of dropping each tag, in [0, 1].
        latent_sampling_method: ``"once"``, ``"deterministic"`` or ``"random"`` (:mod:`.latents`).
        use_weight: the pictures' alpha channel as a loss weight.
        create_image_every: a preview every N steps (0: none).
        save_hypernetwork_every: a save (log copy and the models-folder file) every N steps (0: at the end only).
        template_filename: the prompt template: a file name in the templates folder, or a path.
        preview_from_txt2img: previews use the ``preview_*`` settings instead of the batch's first prompt.
        preview_prompt: the previews' prompt.
        preview_negative_prompt: their negative prompt.
        preview_steps: their sampling steps.
        preview_sampler_name: their sampler.
        preview_cfg_scale: their CFG scale.
        preview_seed: their seed (-1: random).
        preview_width: their width (0: the training width).
        preview_height: their height (0: the training height).
        flip: flip pictures horizontally with probability 0.5.
        optimizer: a ``torch.optim`` class name.
        seed: the run's seed, or None to draw one (recorded in the settings file).
        mixed_precision: ``"auto"`` (fp16 on CUDA, none on CPU), ``"no"``, ``"fp16"`` or ``"bf16"``.
        gradient_checkpointing: recompute the UNet's activations in the backward pass (less memory).
        snr_gamma: min-SNR-gamma loss weighting (e.g. 5); 0: AUTOMATIC1111's plain loss.
        save_optimizer_state: write the ``.optim`` sidecar with every save (needed to resume exactly).
        training_write_csv_every: a loss CSV row every N steps (0: none).
        clip_skip: A1111's CLIP skip for the captions' encoding and the previews.
        dataset_filename_word_regex: AUTOMATIC1111's regular expression picking caption words from file names.
        dataset_filename_join_string: what joins those words.
    """

    hypernetwork_name: str = ""
    learn_rate: Any = "0.00001"
    batch_size: int = 1
    gradient_step: int = 1
    data_root: str = ""
    log_directory: str = "textual_inversion"
    training_width: int = 0
    training_height: int = 0
    varsize: bool = False
    steps: int = 100000
    clip_grad_mode: str = "disabled"
    clip_grad_value: Any = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    use_weight: bool = False
    create_image_every: int = 500
    save_hypernetwork_every: int = 500
    template_filename: str = "style_filewords.txt"
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 0
    preview_height: int = 0
    # -- beyond AUTOMATIC1111 ----------------------------------------------------------------------------
    flip: bool = False                 # horizontal flip with p = 0.5 (A1111 builds it and never applies it)
    optimizer: str = "AdamW"           # any torch.optim class; AdamW with torch defaults, as A1111
    seed: int | None = None            # None: drawn at random (and recorded in the settings file)
    mixed_precision: str = "auto"      # auto: fp16 on CUDA, none on CPU
    gradient_checkpointing: bool = False
    snr_gamma: float = 0.0             # min-SNR-gamma loss weighting (e.g. 5); 0: AUTOMATIC1111's plain loss
    save_optimizer_state: bool = True  # A1111's setting defaults to False; resuming needs it
    training_write_csv_every: int = 500
    clip_skip: int = 1                 # A1111's CLIP_stop_at_last_layers
    dataset_filename_word_regex: str = ""
    dataset_filename_join_string: str = " "

    @classmethod
    def from_request(cls, values: Mapping[str, Any], **defaults) -> "TrainingConfig":
        """A config from AUTOMATIC1111's keyword arguments (the API body, the CLI): unknown keys such as
        ``id_task`` are ignored, missing ones take ``defaults``, then the UI's.

        Args:
            values: field names (and ``preview_sampler_index``, AUTOMATIC1111's old name) to values; None
                values count as missing.
            **defaults: values for fields ``values`` does not set.

        Returns:
            The config, not yet validated (see :meth:`validated`).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        aliases = {"preview_sampler_index": "preview_sampler_name"}  # A1111 before Aug 2023
        kwargs = dict(defaults)
        for key, value in values.items():
            key = aliases.get(key, key)
            if key in names and value is not None:
                kwargs[key] = value
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validated(self) -> "TrainingConfig":
        """This config with numbers coerced to their types, or :class:`TrainingError` naming the field."""
        out = dataclasses.replace(self)

        def whole(field: str, minimum: int, maximum: int | None = None) -> None:
            value = getattr(out, field)
            if isinstance(value, bool):
                raise TrainingError(f"{field} must be a whole number, got {value!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TrainingError(f"{field} must be a whole number, got {value!r}") from None
            if not math.isfinite(number) or number != int(number):
                raise TrainingError(f"{field} must be a whole number, got {value!r}")
            number = int(number)
            if number < minimum or (maximum is not None and number > maximum):
                bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
                raise TrainingError(f"{field} must be {bounds}, got {number}")
            setattr(out, field, number)

        def real(field: str, minimum: float, maximum: float) -> None:
            value = getattr(out, field)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TrainingError(f"{field} must be a number, got {value!r}") from None
            if isinstance(value, bool) or not math.isfinite(number) or not minimum <= number <= maximum:
                raise TrainingError(f"{field} must be a number between {minimum:g} and {maximum:g}, got {value!r}")
            setattr(out, field, number)

        def flag(field: str) -> None:
            value = getattr(out, field)
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, (bool, int)) or value not in (0, 1, True, False):
                raise TrainingError(f"{field} must be true or false, got {value!r}")
            setattr(out, field, bool(value))

        def choice(field: str, options) -> None:
            value = getattr(out, field)
            if value not in options:
                raise TrainingError(f"{field} must be one of {', '.join(options)}, got {value!r}")

        if not isinstance(out.hypernetwork_name, str) or not out.hypernetwork_name.strip():
            raise TrainingError("hypernetwork_name: choose the hypernetwork to train")
        if not isinstance(out.data_root, str) or not out.data_root.strip():
            raise TrainingError("data_root: give the dataset directory")
        for field in ("batch_size", "gradient_step", "steps"):
            whole(field, 1)
        for field in ("training_width", "training_height", "preview_width", "preview_height"):
            whole(field, 0, MAX_SIZE)
            if getattr(out, field) % 8:
                raise TrainingError(f"{field} must be a multiple of 8, got {getattr(out, field)}")
        for field in ("create_image_every", "save_hypernetwork_every", "training_write_csv_every"):
            whole(field, 0)
        whole("preview_steps", 1, 150)
        whole("clip_skip", 1, 12)
        whole("preview_seed", -1)
        real("tag_drop_out", 0.0, 1.0)
        real("preview_cfg_scale", 1.0, 30.0)
        real("snr_gamma", 0.0, 1000.0)
        for field in ("varsize", "shuffle_tags", "use_weight", "preview_from_txt2img", "flip",
                      "gradient_checkpointing", "save_optimizer_state"):
            flag(field)
        choice("clip_grad_mode", CLIP_GRAD_MODES)
        choice("latent_sampling_method", LATENT_SAMPLING)
        choice("mixed_precision", PRECISIONS)
        if out.optimizer not in optimizer_names():
            raise TrainingError(f"optimizer {out.optimizer!r} is not a torch.optim optimizer "
                                f"(one of {', '.join(optimizer_names())})")
        if out.seed is not None:
            whole("seed", 0, 2**63 - 1)
        if (out.create_image_every or out.save_hypernetwork_every) and not str(out.log_directory or "").strip():
            raise TrainingError("log_directory: give a log directory (images and copies are saved every N steps)")
        try:
            parse_schedule(out.learn_rate, "learning rate")
            if out.clip_grad_mode != "disabled":
                parse_schedule(out.clip_grad_value, "gradient clip")
        except ScheduleError as exc:
            raise TrainingError(str(exc)) from None
        if not isinstance(out.template_filename, str) or not out.template_filename.strip():
            raise TrainingError("template_filename: choose a prompt template")
        return out
