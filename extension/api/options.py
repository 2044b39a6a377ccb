"""AUTOMATIC1111's option table (``/sdapi/v1/options``) on the app's :class:`~extension.ui.state.Settings`.

Three kinds of option, all read and written by their AUTOMATIC1111 names:

- **settings**: the :class:`~extension.ui.callbacks.SettingSpec` s of :func:`setting_specs` (registered by
  :func:`extension.ui.state.build_state`) and those the scripts register (``sd_hypernetwork``,
  ``extra_networks_default_multiplier``...). The Settings tab shows exactly these; a value is checked by its
  spec (a number in its range, a dropdown's choices) before anything changes.
- **the checkpoint**: ``sd_model_checkpoint`` is the loaded model's title (setting it loads that checkpoint)
  and ``sd_checkpoint_hash`` its sha256 (read-only; posting it back is ignored).
- **compatibility options** (:data:`COMPAT_OPTIONS`): options clients read and write that have no effect here
  (``send_seed``...); they keep their type and are saved with the settings, but the Settings tab does not show
  them, since they would do nothing.

Unknown keys are kept and returned, as AUTOMATIC1111 keeps them.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ..ui.callbacks import SettingSpec

CHECKPOINT = "sd_model_checkpoint"
CHECKPOINT_HASH = "sd_checkpoint_hash"
CLIP_SKIP = "CLIP_stop_at_last_layers"
SAMPLES_SAVE = "samples_save"
LIVE_PREVIEWS = "live_previews_enable"
PAD_COND_UNCOND = "pad_cond_uncond"
ADD_HYPERNETWORK = "sd_hypernetwork"  # registered by extension/ui/hypernetworks_script.py
READ_ONLY = (CHECKPOINT_HASH,)

# Training options of AUTOMATIC1111's Settings > Training that are fields of TrainingConfig by the same name:
# they are the defaults of /sdapi/v1/train/hypernetwork.
TRAINING_OPTIONS = ("save_optimizer_state", "training_write_csv_every", "dataset_filename_word_regex",
                    "dataset_filename_join_string")


def setting_specs() -> list[SettingSpec]:
    """The AUTOMATIC1111 options that act here, as settings (the Settings tab shows them)."""
    return [
        SettingSpec(SAMPLES_SAVE, True, "Always save all generated images", section="Saving images",
                    component="checkbox",
                    info="UI generations are saved under the output folder; API requests save when they ask "
                         "(save_images)"),
        SettingSpec(CLIP_SKIP, 1, "Clip skip (CLIP_stop_at_last_layers) of API generations and training",
                    section="Stable Diffusion", component="slider", minimum=1, maximum=12, step=1),
        SettingSpec(PAD_COND_UNCOND, False, "Pad prompt/negative prompt", section="Optimizations",
                    component="checkbox",
                    info="when prompt and negative prompt have different lengths, the shorter is padded and the "
                         "padding is attended to (AUTOMATIC1111's option; changes images; infotext 'Pad conds'). "
                         "Off: each is seen alone, as AUTOMATIC1111 does by default"),
        SettingSpec(LIVE_PREVIEWS, True, "Show live previews of the image being generated (API progress)",
                    section="Live previews", component="checkbox",
                    info="/sdapi/v1/progress answers current_image while a job runs"),
        SettingSpec("save_optimizer_state", True, "Save the optimizer state as a .optim file beside the network "
                    "(resuming needs it)", section="Training", component="checkbox"),
        SettingSpec("training_write_csv_every", 500, "Write the loss to a CSV file every N steps (0 disables)",
                    section="Training", component="number", minimum=0, step=1),
        SettingSpec("dataset_filename_word_regex", "", "Filename word regex", section="Training"),
        SettingSpec("dataset_filename_join_string", " ", "Filename join string", section="Training"),
    ]


@dataclasses.dataclass(frozen=True)
class CompatOption:
    """An AUTOMATIC1111 option clients use that changes nothing here; ``choices`` limits what is accepted."""

    default: Any
    label: str
    choices: tuple | None = None


COMPAT_OPTIONS: dict[str, CompatOption] = {
    "send_seed": CompatOption(True, "Send seed when sending prompt or image to other interface (no such "
                                    "buttons here)"),
    "send_size": CompatOption(True, "Send size when sending prompt or image to another interface (no such "
                                    "buttons here)"),
    "samples_format": CompatOption("png", "File format for images (only png here)", choices=("png",)),
    "grid_save": CompatOption(True, "Always save all generated image grids (no grids here)"),
    "enable_pnginfo": CompatOption(True, "Save text information about generation parameters as chunks to png "
                                         "files (always here)"),
    "jpeg_quality": CompatOption(80, "Quality for saved jpeg images (only png here)"),
    "outdir_samples": CompatOption("", "Output directory for images (the --outdir flag here)"),
    "show_progress_every_n_steps": CompatOption(10, "Live preview display period (here: drawn when asked)"),
    "sd_vae": CompatOption("Automatic", "SD VAE (the checkpoint's own here)", choices=("Automatic", "None")),
    "eta_ancestral": CompatOption(1.0, "Eta for k-diffusion samplers (diffusers' default here)"),
    "eta_noise_seed_delta": CompatOption(0, "Eta noise seed delta (not used here)", choices=(0,)),
    "randn_source": CompatOption("CPU", "Random number generator source (always CPU here)", choices=("CPU",)),
    "sd_checkpoint_cache": CompatOption(0, "Checkpoints to cache in RAM (one loaded checkpoint here)"),
}


class OptionError(ValueError):
    """A value an option cannot take; ``status`` is 404 for an unknown name (checkpoint, network)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def compat_value(key: str, value: Any) -> Any:
    """``value`` as compatibility option ``key`` takes it (its default's type), or :class:`OptionError`."""
    option = COMPAT_OPTIONS[key]
    kind = type(option.default)
    try:
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                value = value.strip().lower() in ("true", "1")
            elif not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ValueError
            converted = bool(value)
        elif kind in (int, float):
            if isinstance(value, bool):
                raise ValueError
            converted = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        else:
            converted = "" if value is None else str(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {key}: {value!r} is not a {kind.__name__}") from None
    if option.choices is not None and converted not in option.choices:
        raise OptionError(f"option {key}: {value!r} is not supported here (only {', '.join(map(str, option.choices))})")
    return converted


def checkpoint_title(ctx) -> str | None:
    """The loaded checkpoint's title as ``/sd-models`` lists it now (None before anything is loaded)."""
    model = ctx.loaded_model()
    if model is None:
        return None
    info = getattr(model, "info", None)
    if info is None or getattr(model, "architecture", None) == "demo":
        return builtin_title(ctx)
    try:
        for listed in ctx.models.list_checkpoints():
            if Path(listed.filename) == Path(info.filename):
                return listed.title
    except OSError:
        pass
    return info.title


def builtin_title(ctx) -> str | None:
    builtin = getattr(ctx.models, "builtin", None)
    return builtin.name if builtin is not None else None


def current_options(ctx) -> dict[str, Any]:
    """Every option and its value: compatibility defaults, then the settings (unknown keys included), then
    the checkpoint."""
    options: dict[str, Any] = {key: option.default for key, option in COMPAT_OPTIONS.items()}
    options.update(ctx.settings.as_dict())
    model = ctx.loaded_model()
    options[CHECKPOINT] = checkpoint_title(ctx)
    options[CHECKPOINT_HASH] = getattr(model, "sha256", None) if model is not None else None
    return options


def spec_value(ctx, spec: SettingSpec, value: Any) -> Any:
    """``value`` for setting ``spec``, checked against its range and (for dropdowns) its choices."""
    try:
        converted = spec.coerce(value)
    except ValueError as exc:
        raise OptionError(f"option {spec.key}: {exc}") from None
    if spec.component in ("slider", "number"):
        if isinstance(value, bool):
            raise OptionError(f"option {spec.key}: {value!r} is not a number")
        if not math.isfinite(converted):
            raise OptionError(f"option {spec.key}: {value!r} is not a finite number")
    if spec.component == "dropdown" and spec.choices is not None:
        choices = spec.choices(ctx) if callable(spec.choices) else spec.choices
        if converted not in list(choices or []):
            if spec.key == ADD_HYPERNETWORK:
                check_network_name(ctx, converted, f"option {spec.key}")  # a file added since the last scan
                return converted
            raise OptionError(f"option {spec.key}: {converted!r} is not one of {', '.join(map(str, choices))}")
    return converted


def check_network_name(ctx, name: str, field: str) -> None:
    """A hypernetwork name must stay inside the folder (422) and name a listed file (404)."""
    text = str(name)
    if Path(text).is_absolute() or "\0" in text:
        raise OptionError(f"{field}: {text!r} is a path; give a hypernetwork name from /sdapi/v1/hypernetworks")
    try:
        ctx.library.path_inside(text)
    except ValueError:
        raise OptionError(f"{field}: {text!r} is outside the hypernetworks folder; give a name from "
                          "/sdapi/v1/hypernetworks") from None
    if ctx.library.get(text) is None:
        ctx.library.refresh()
        if ctx.library.get(text) is None:
            raise OptionError(f"{field}: {ctx.library.unknown_message(text)}", status=404)


def check_checkpoint(ctx, name: Any) -> str:
    """The checkpoint ``name`` names (a title, name, hash... or the built-in model), or :class:`OptionError`."""
    from ..errors import ModelError

    if not isinstance(name, str) or not name.strip():
        raise OptionError(f"option {CHECKPOINT}: give a checkpoint title from /sdapi/v1/sd-models")
    if "\0" in name:  # no file name holds one (the OS would refuse it: a 500 before this check)
        raise OptionError(f"option {CHECKPOINT}: {name!r} is not a checkpoint name; give a title from "
                          "/sdapi/v1/sd-models")
    builtin = getattr(ctx.models, "builtin", None)
    if builtin is not None and name.strip() in builtin.names:
        return name.strip()
    try:
        return ctx.models.find(name).name
    except ModelError as exc:
        status = 422 if "outside the checkpoints folder" in str(exc) else 404
        raise OptionError(f"option {CHECKPOINT}: {exc}", status=status) from None


def prepare(ctx, values: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Check every value before anything changes: ``(checkpoint to load or None, settings to store)``.

    Raises :class:`OptionError` (its ``status`` says 404 or 422) for the first value that cannot be taken.
    """
    if not isinstance(values, dict):
        raise OptionError("the options must be a JSON object of option names and values")
    checkpoint = None
    store: dict[str, Any] = {}
    specs = ctx.settings.specs
    for key, value in values.items():
        if key == CHECKPOINT:
            if value is not None and value != checkpoint_title(ctx):
                checkpoint = check_checkpoint(ctx, value)
        elif key in READ_ONLY:
            continue
        elif key in specs:
            store[key] = spec_value(ctx, specs[key], value)
        elif key in COMPAT_OPTIONS:
            store[key] = compat_value(key, value)
        else:
            store[key] = value  # unknown: kept and returned, as AUTOMATIC1111 does
    return checkpoint, store


def option_fields(ctx) -> dict[str, tuple[type, Any, str]]:
    """``key -> (type, default, description)`` of every known option, for the OpenAPI schema."""
    fields: dict[str, tuple[type, Any, str]] = {
        CHECKPOINT: (str, None, "Stable Diffusion checkpoint: a title from /sdapi/v1/sd-models (loads it)"),
        CHECKPOINT_HASH: (str, None, "sha256 of the loaded checkpoint (read-only)"),
    }
    for key, option in COMPAT_OPTIONS.items():
        fields[key] = (type(option.default), option.default, f"{option.label} [no effect here]")
    for key, spec in ctx.settings.specs.items():
        kind = {"checkbox": bool, "slider": type(spec.default), "number": type(spec.default)}.get(spec.component, str)
        fields[key] = (kind, spec.default, spec.label)
    return fields
