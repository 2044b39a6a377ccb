"""Checkpoints into diffusers pipelines, offline: AUTOMATIC1111 single files and diffusers folders.

Single files are read safely (:mod:`.weights`), their family told from their keys (:mod:`.detect`), and their
weights converted with diffusers' own LDM converters into models built from the small config folders shipped
in ``extension/configs/<arch>/``. Nothing is downloaded. Every failure is a :class:`ModelError` naming the file.

Which config a single file ``NAME.safetensors`` gets, in order:

1. an explicit ``config_dir`` argument, else a diffusers config folder ``NAME.config/`` beside it
   (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``..., no weights) - for non-standard shapes;
2. else the shipped config of the detected family: ``sd1``, ``sd2`` / ``sd2-v``, ``sdxl``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from .detect import (SD2_TEXT_PREFIX, SDXL_TEXT2_PREFIX, VAE_PREFIX, cross_attention_width, detect_architecture,
                     guess_v_prediction, sidecar_config_dir, yaml_prediction_type)
from .weights import check_folder_weights, read_state_dict

logger = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


def _load_into(model, state: dict, what: str, filename) -> None:
    """Assign ``state`` into a model built on the meta device; every parameter must be supplied."""
    known = set(model.state_dict())
    extra = [k for k in state if k not in known]
    try:
        result = model.load_state_dict({k: v for k, v in state.items() if k in known}, strict=False, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{filename}: the {what} weights do not fit its config ({str(exc)[:500]}); a checkpoint "
                         "with non-standard shapes needs a NAME.config/ diffusers config folder beside it") from exc
    missing = list(result.missing_keys)
    if missing:
        raise ModelError(f"{filename}: {len(missing)} {what} weights are missing from the file "
                         f"(e.g. {', '.join(missing[:3])})")
    if extra:
        logger.warning("%s: %d unused %s weights (e.g. %s)", filename, len(extra), what, ", ".join(extra[:3]))


def _meta_model(build: Callable):
    from accelerate import init_empty_weights
    with init_empty_weights():
        return build()


def _build_text_encoder(state: dict, config_dir: Path, subfolder: str, kind: str, filename):
    """A CLIP text model from LDM keys: ``kind`` is 'clip' (SD1/SDXL-1), 'openclip' (SD2), 'openclip2' (SDXL-2)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if kind == "openclip2" else CLIPTextModel
    config = CLIPTextConfig.from_pretrained(str(config_dir / subfolder), local_files_only=True)
    model = _meta_model(lambda: cls(config))
    if kind == "clip":
        converted = convert_ldm_clip_checkpoint(state)
    else:
        prefix = SD2_TEXT_PREFIX if kind == "openclip" else SDXL_TEXT2_PREFIX
        converted = convert_open_clip_checkpoint(model, state, prefix=prefix)
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel (stack-facts 2.4)
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    # SD 2.x uses the penultimate OpenCLIP layer: the diffusers convention drops the layers above the config's.
    layer = re.compile(r"(?:text_model\.)?encoder\.layers\.(\d+)\.")
    converted = {k: v for k, v in converted.items()
                 if not ((m := layer.match(k)) and int(m.group(1)) >= config.num_hidden_layers)
                 and not k.endswith("position_ids")}
    if kind == "openclip":
        converted.pop("text_projection.weight", None)
    _load_into(model, converted, f"text encoder ({subfolder})", filename)
    return model.eval()


def _build_components(state: dict, config_dir: Path, family: str, filename) -> dict:
    """``{'unet', 'vae', 'text_encoder'[, 'text_encoder_2']}`` from an LDM state dict and a config folder.

    Models are built on the meta device and take the file's tensors as they are (no copy), so the result
    holds exactly the file's weights, in the file's dtype.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet_config = UNet2DConditionModel.load_config(str(config_dir), subfolder="unet", local_files_only=True)
    vae_config = AutoencoderKL.load_config(str(config_dir), subfolder="vae", local_files_only=True)
    if not any(k.startswith(VAE_PREFIX) for k in state):
        raise ModelError(f"{filename}: no VAE weights ({VAE_PREFIX}*) in the file; checkpoints without a VAE "
                         "are not supported")
    try:
        unet_state = convert_ldm_unet_checkpoint(state, unet_config)
        vae_state = convert_ldm_vae_checkpoint({k: v for k, v in state.items() if k.startswith(VAE_PREFIX)},
                                               vae_config)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ModelError(f"{filename}: the UNet/VAE keys do not follow the Stable Diffusion layout "
                         f"({type(exc).__name__}: {exc})") from exc
    unet = _meta_model(lambda: UNet2DConditionModel.from_config(unet_config))
    _load_into(unet, unet_state, "UNet", filename)
    vae = _meta_model(lambda: AutoencoderKL.from_config(vae_config))
    _load_into(vae, vae_state, "VAE", filename)
    components = {"unet": unet.eval(), "vae": vae.eval()}
    if family == "sdxl":
        components["text_encoder"] = _build_text_encoder(state, config_dir, "text_encoder", "clip", filename)
        components["text_encoder_2"] = _build_text_encoder(state, config_dir, "text_encoder_2", "openclip2",
                                                           filename)
    else:
        kind = "openclip" if family == "sd2" else "clip"
        components["text_encoder"] = _build_text_encoder(state, config_dir, "text_encoder", kind, filename)
    return components


def _scheduler(config_dir: Path, prediction_type: str | None):
    import diffusers
    from diffusers import SchedulerMixin

    config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    cls = getattr(diffusers, str(config.get("_class_name")), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelError(f"{config_dir}: unknown scheduler class {config.get('_class_name')!r}")
    overrides = {"prediction_type": prediction_type} if prediction_type else {}
    return cls.from_config(config, **overrides)


def _pad_tokens(family: str) -> tuple[str, str]:
    """Pad tokens of (tokenizer, tokenizer_2): SD 1.x CLIP pads with <|endoftext|>, OpenCLIP with '!'."""
    return ("!", "!") if family == "sd2" else ("<|endoftext|>", "!")


def _assemble(components: dict, scheduler, family: str, model_index: dict):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from ..tokenizer import clip_tokenizer

    pad, pad_2 = _pad_tokens(family)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **components, tokenizer=clip_tokenizer(pad), tokenizer_2=clip_tokenizer(pad_2), scheduler=scheduler,
            image_encoder=None, feature_extractor=None, add_watermarker=False,
            force_zeros_for_empty_prompt=bool(model_index.get("force_zeros_for_empty_prompt", True)))
    else:
        pipe = StableDiffusionPipeline(
            **components, tokenizer=clip_tokenizer(pad), scheduler=scheduler, safety_checker=None,
            feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    return pipe


def _read_model_index(folder: Path, what) -> dict:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{what}: unreadable model_index.json in {folder} ({exc})") from exc
    if not isinstance(index, dict) or index.get("_class_name") not in PIPELINE_CLASSES:
        found = index.get("_class_name") if isinstance(index, dict) else None
        raise ModelError(f"{what}: {folder} is a {found!r} pipeline; only {' and '.join(PIPELINE_CLASSES)} "
                         "are supported")
    return index


def load_single_file(path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                     config_dir=None, prediction_type: str | None = None):
    """``(pipeline, architecture)`` from an AUTOMATIC1111 single file, offline.

    ``config_dir`` (a diffusers config folder) and ``prediction_type`` (``'epsilon'``/``'v_prediction'``)
    override what is found beside the file (see the module docstring).

    Args:
        path: a ``.safetensors`` or ``.ckpt`` checkpoint in the original LDM key layout.
        device: where the pipeline's models go.
        dtype: their precision.
        config_dir: a diffusers config folder to build the models from, or None (``NAME.config/`` beside the
            file, else the shipped config of the detected family).
        prediction_type: ``'epsilon'`` or ``'v_prediction'``, or None (``NAME.yaml``, the config folder, or
            AUTOMATIC1111's test for SD 2.x decides).

    Returns:
        ``(pipeline, architecture)``: a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (no safety
        checker, the built-in CLIP tokenizer) and ``'sd1'``, ``'sd2'``, ``'sd2-v'`` or ``'sdxl'``.

    Raises:
        ModelError: anything wrong with the file or its config, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    state = read_state_dict(path)
    family = detect_architecture({k: tuple(v.shape) for k, v in state.items()}, path)
    custom_config = Path(config_dir) if config_dir is not None else sidecar_config_dir(path)
    if prediction_type is None:
        prediction_type = yaml_prediction_type(path)
    if custom_config is not None:
        if not (custom_config / "model_index.json").is_file():
            raise ModelError(f"{path}: config folder {custom_config} has no model_index.json")
        config = custom_config
    else:
        config = CONFIGS_DIR / ("sd2-v" if family == "sd2" and prediction_type == "v_prediction" else family)
        expected = json.loads((config / "unet" / "config.json").read_text())["cross_attention_dim"]
        found = cross_attention_width({k: tuple(v.shape) for k, v in state.items()})
        if found is not None and found != expected:
            raise ModelError(f"{path}: a {family}-style checkpoint with cross-attention width {found} (standard "
                             f"{family} has {expected}); put a diffusers config folder {path.stem}.config/ beside it")
    model_index = _read_model_index(config, path)
    components = _build_components(state, config, family, path)
    del state
    for module in components.values():  # nn.Module.to: diffusers' own .to() warns about every dtype cast
        torch.nn.Module.to(module, device=device, dtype=dtype)
    if family == "sd2" and prediction_type is None and custom_config is None:
        prediction_type = "v_prediction" if guess_v_prediction(components["unet"]) else "epsilon"
        if prediction_type == "v_prediction":  # rebuild on the 768-v config (same weights, no copy)
            from diffusers import UNet2DConditionModel
            config = CONFIGS_DIR / "sd2-v"
            unet_config = UNet2DConditionModel.load_config(str(config), subfolder="unet", local_files_only=True)
            unet = _meta_model(lambda: UNet2DConditionModel.from_config(unet_config))
            _load_into(unet, components["unet"].state_dict(), "UNet", path)
            components["unet"] = unet.eval()
    pipe = _assemble(components, _scheduler(config, prediction_type), family, model_index)
    pipe.set_progress_bar_config(disable=True)
    return pipe, _architecture_name(family, pipe.scheduler.config.get("prediction_type"))


def _architecture_name(family: str, prediction_type: str | None) -> str:
    return "sd2-v" if family == "sd2" and prediction_type == "v_prediction" else family


def _folder_family(pipe) -> str:
    """'sdxl', 'sd2' or 'sd1' for a loaded diffusers pipeline (by its UNet and text encoder)."""
    if getattr(pipe, "text_encoder_2", None) is not None or pipe.unet.config.get("addition_embed_type") == "text_time":
        return "sdxl"
    act = getattr(pipe.text_encoder.config, "hidden_act", "quick_gelu")
    return "sd2" if act == "gelu" or pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def load_diffusers_folder(folder, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """``(pipeline, architecture)`` from a diffusers folder, offline (no safety checker; the CLIP tokenizer
    is built in when the folder has none).

    Args:
        folder: a diffusers ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` folder; every weight
            file in it is checked before diffusers reads it (:func:`.weights.check_folder_weights`).
        device: where the pipeline's models go.
        dtype: their precision.

    Returns:
        ``(pipeline, architecture)``, the architecture ``'sd1'``, ``'sd2'``, ``'sd2-v'`` or ``'sdxl'``.

    Raises:
        ModelError: an unsafe, unsupported or broken folder, naming it.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from ..tokenizer import clip_tokenizer

    folder = Path(folder)
    check_folder_weights(folder)  # no pickle runs code, no bomb is unpacked, no link leads out
    index = _read_model_index(folder, folder)
    sdxl = index["_class_name"] == "StableDiffusionXLPipeline"
    te_config = folder / "text_encoder" / "config.json"
    openclip = te_config.is_file() and json.loads(te_config.read_text()).get("hidden_act") == "gelu"
    pad, pad_2 = _pad_tokens("sdxl" if sdxl else "sd2" if openclip else "sd1")
    kwargs: dict = {"local_files_only": True, "dtype": dtype}
    if not (folder / "tokenizer").is_dir():
        kwargs["tokenizer"] = clip_tokenizer(pad)
    if sdxl:
        if not (folder / "tokenizer_2").is_dir():
            kwargs["tokenizer_2"] = clip_tokenizer(pad_2)
        kwargs["add_watermarker"] = False
        cls = StableDiffusionXLPipeline
    else:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        cls = StableDiffusionPipeline
    try:
        pipe = cls.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # missing or corrupt component files
        raise ModelError(f"{folder}: cannot load this diffusers folder ({type(exc).__name__}: "
                         f"{str(exc)[:500]})") from exc
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    family = _folder_family(pipe)
    return pipe, _architecture_name(family, pipe.scheduler.config.get("prediction_type"))
