"""Stable Diffusion checkpoints: finding them, telling what they are, loading them offline.

Two kinds of checkpoint live in the checkpoints folder (``models/Stable-diffusion`` by default):

* AUTOMATIC1111-style single files, ``*.safetensors`` and ``*.ckpt`` (original LDM key layout:
  ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*`` / ``conditioner.*``);
* diffusers folders (a directory with ``model_index.json`` and weights).

Single files are read without running code (safetensors, or ``torch.load(weights_only=True)``; a few
training-metadata globals that old ``.ckpt`` files carry are replaced by inert placeholders), their
architecture is told from their keys (:func:`detect_architecture`), and their weights are converted with
diffusers' own LDM converters into models built from the small config folders shipped in
``extension/configs/<arch>/``. Nothing is downloaded. Every failure is a :class:`ModelError` naming the file.

Which config a single file ``NAME.safetensors`` gets, in order:

1. an explicit ``config_dir`` argument, else a diffusers config folder ``NAME.config/`` beside it
   (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``..., no weights) - for non-standard shapes;
2. else the shipped config of the detected family: ``sd1``, ``sd2`` / ``sd2-v``, ``sdxl``.

v-prediction cannot be read from the weights. Like AUTOMATIC1111: a ``NAME.yaml`` beside the file decides
(``model.params.parameterization: "v"`` means v-prediction, anything else epsilon); else a ``NAME.config/``
folder's scheduler decides; else, for SD 2.x only, AUTOMATIC1111's test is run (one UNet call on a constant
input: a mean of ``output - input`` below -1 means v-prediction; it tells the 768-v models from the 512 ones).

Precision: CUDA when present in fp16, else CPU in fp32 (:func:`resolve_device`, :func:`resolve_dtype`).
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..demo.pretrained import MODEL_DIR as DEMO_MODEL_DIR  # the trained demo model's folder
from ..errors import ModelError

logger = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CKPT_DIR = Path("models") / "Stable-diffusion"
DEMO_NAME = "demo"                 # infotext "Model:" of the trained demo model; also a name load() accepts
DEMO_RANDOM_NAME = "demo-random"   # the random-weight stand-in used when the demo model is not trained yet
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
ARCHITECTURES = ("sd1", "sd2", "sd2-v", "sdxl", "demo")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


# -- device and precision ------------------------------------------------------------------------------------
def resolve_device(arg: str | torch.device | None = None) -> torch.device:
    """``--device``: ``auto``/None picks CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    if isinstance(arg, torch.device):
        arg = str(arg)
    value = (arg or "auto").strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", value):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {arg}: CUDA is not available on this machine (use cpu or auto)")
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {arg}: there are only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(value)
    if value == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {arg}: MPS is not available on this machine")
        return torch.device("mps")
    raise ValueError(f"--device {arg!r}: expected auto, cpu, cuda, cuda:N or mps")


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "full": torch.float32,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(arg: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``--precision``: ``auto``/None is fp16 on CUDA and fp32 elsewhere; ``fp32``, ``fp16``, ``bf16`` force one."""
    if isinstance(arg, torch.dtype):
        if arg not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"--precision {arg}: expected one of {', '.join(PRECISIONS)}")
        return arg
    value = (arg or "auto").strip().lower()
    if value == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if value not in _DTYPES:
        raise ValueError(f"--precision {arg!r}: expected one of {', '.join(PRECISIONS)}")
    return _DTYPES[value]


# -- reading single files safely -----------------------------------------------------------------------------
class _Inert:
    """Stands in for harmless training metadata in old ``.ckpt`` pickles; builds nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert(*args, **kwargs):
    return None


# Globals that AUTOMATIC1111's own safe unpickler accepts in checkpoints and that carry no weights: the
# PyTorch Lightning callback state and numpy scalars (``global_step``, scores). They are mapped to inert
# placeholders, so allowing them lets no code run.
_INERT_GLOBALS = [
    (_Inert, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_inert, "numpy.core.multiarray.scalar"),
    (_inert, "numpy._core.multiarray.scalar"),
    (_Inert, "numpy.dtype"),
] + [(_Inert, f"numpy.dtypes.{n}DType") for n in (
    "Bool", "Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float16", "Float32",
    "Float64", "Long", "ULong", "LongLong", "ULongLong")]


def _load_pickle_checkpoint(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "GLOBAL" in text or "global" in text:
            raise ModelError(f"{path}: refused to load: its pickle asks to build objects other than tensors and "
                             f"plain containers (it could run code); nothing in it was executed. Convert it to "
                             f".safetensors with a tool you trust. ({text.splitlines()[-1][:300]})") from exc
        raise ModelError(f"{path}: not a readable checkpoint ({text[:300]})") from exc
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path}: the file is truncated or corrupt ({type(exc).__name__}: {str(exc)[:300]})") from exc
    except Exception as exc:  # any other failure of a malformed file is still the file's fault
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:300]})") from exc


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, on the CPU, keyed as in the file (``state_dict`` unwrapped)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            return _normalize_keys(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError, OSError, ...
            raise ModelError(f"{path}: not a readable .safetensors file, truncated or corrupt "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    state = _load_pickle_checkpoint(path)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a checkpoint (the file holds a {type(state).__name__}, not a dict of tensors)")
    looks = _describe_non_checkpoint(state)
    if looks:
        raise ModelError(f"{path}: not a Stable Diffusion checkpoint: {looks}")
    return _normalize_keys({k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)})


def _normalize_keys(state: dict) -> dict:
    """Old SD 1.x files name CLIP keys without ``text_model.``; AUTOMATIC1111 renames them, so do we."""
    old = tuple(SD1_TEXT_PREFIX + part for part in ("embeddings.", "encoder.", "final_layer_norm."))
    if not any(k.startswith(old) for k in state):
        return state
    return {(SD1_TEXT_PREFIX + "text_model." + k[len(SD1_TEXT_PREFIX):] if k.startswith(old) else k): v
            for k, v in state.items()}


def read_shapes(path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a single file; for ``.safetensors`` from its header alone (no weights read)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:
        raise ModelError(f"{path}: not a readable .safetensors file, truncated or corrupt "
                         f"({type(exc).__name__}: {str(exc)[:300]})") from exc


# -- telling the architecture --------------------------------------------------------------------------------
def _describe_non_checkpoint(keys) -> str | None:
    """What a dict that is not a full SD checkpoint looks like (a hypernetwork, LoRA, ...), or None."""
    keys = list(keys)
    if not keys:
        return "it holds no tensors"
    if any(not isinstance(k, str) for k in keys) or {"layer_structure", "activation_func"} & set(keys):
        return "it looks like a hypernetwork (put it in models/hypernetworks)"
    strs = [k for k in keys if isinstance(k, str)]
    if any(k.startswith(UNET_PREFIX) for k in strs):
        return None
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) or ".lora_down." in k
           or ".lora_A." in k or ".lora_up." in k or k.endswith(".alpha") for k in strs):
        return "it looks like a LoRA (put it in models/Lora)"
    if any(re.match(r"\d+\.", k) for k in strs):  # "768.k.linear.0.weight": this project's hypernetwork files
        return "it looks like a hypernetwork (put it in models/hypernetworks)"
    if {"string_to_param", "emb_params", "clip_l", "clip_g"} & set(strs):
        return "it looks like a textual-inversion embedding (put it in embeddings/)"
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.")) for k in strs) and \
            any("quant_conv" in k for k in strs):
        return "it looks like a VAE on its own (put it in models/VAE)"
    if any(k.startswith(("down_blocks.", "mid_block.", "conv_in.")) for k in strs):
        return "it looks like a diffusers UNet weight file, not a whole checkpoint (use a diffusers folder)"
    return "it has no UNet weights (model.diffusion_model.*)"


def _cross_attention_width(shapes: Mapping[str, Sequence[int]]) -> int | None:
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(shape[1])
    return None


def detect_architecture(shapes: Mapping[str, Sequence[int]], filename: str | os.PathLike = "checkpoint") -> str:
    """The family of a single-file checkpoint from its keys and shapes: ``'sd1'``, ``'sd2'`` or ``'sdxl'``.

    SD 1.x has a CLIP text model under ``cond_stage_model.transformer.*``, SD 2.x an OpenCLIP one under
    ``cond_stage_model.model.*``, SDXL two under ``conditioner.embedders.{0,1}.*``. Whether an SD 2.x model
    predicts v is not in the keys (see the module docstring). Anything else is a :class:`ModelError`.
    """
    looks = _describe_non_checkpoint(shapes.keys())
    if looks:
        raise ModelError(f"{filename}: not a Stable Diffusion checkpoint: {looks}")
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise ModelError(f"{filename}: not a Stable Diffusion checkpoint: no UNet input layer "
                         f"({UNET_PREFIX}input_blocks.0.0.weight)")
    in_channels = int(conv_in[1])
    if in_channels == 9:
        raise ModelError(f"{filename}: an inpainting checkpoint (9 UNet input channels); only txt2img "
                         "checkpoints (4 channels) are supported")
    if in_channels != 4:
        raise ModelError(f"{filename}: a UNet with {in_channels} input channels (instruct-pix2pix, depth or "
                         "another special model); only txt2img checkpoints (4 channels) are supported")
    keys = list(shapes)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has(SDXL_TEXT2_PREFIX) and has(SDXL_TEXT_PREFIX):
        return "sdxl"
    if has(SDXL_REFINER_TEXT_PREFIX):
        raise ModelError(f"{filename}: an SDXL refiner checkpoint; only base models are supported")
    if has(SD2_TEXT_PREFIX):
        return "sd2"
    if has(SD1_TEXT_PREFIX):
        return "sd1"
    raise ModelError(f"{filename}: no text encoder weights (cond_stage_model.* or conditioner.embedders.*); "
                     "checkpoints without a text encoder are not supported")


def _yaml_prediction_type(path: Path) -> str | None:
    """``'v_prediction'``/``'epsilon'`` from an AUTOMATIC1111 ``NAME.yaml`` beside ``path``, or None."""
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    import yaml
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{yaml_path}: unreadable config beside the checkpoint ({exc})") from exc
    return "v_prediction" if _says_v(data) else "epsilon"


def _says_v(node) -> bool:
    """An LDM yaml with ``parameterization: "v"``, or an SGM (SDXL) one with a ``...VScaling`` denoiser."""
    if isinstance(node, dict):
        if node.get("parameterization") == "v":
            return True
        if isinstance(node.get("target"), str) and node["target"].split(".")[-1].startswith("VScaling"):
            return True
        return any(_says_v(v) for v in node.values())
    if isinstance(node, list):
        return any(_says_v(v) for v in node)
    return False


def sidecar_config_dir(path) -> Path | None:
    """The ``NAME.config/`` diffusers config folder beside a single file, when there is one."""
    candidate = Path(path).with_suffix(".config")
    return candidate if (candidate / "model_index.json").is_file() else None


def _guess_v_prediction(unet) -> bool:
    """AUTOMATIC1111's test for SD 2.x: v-models answer a constant input far below it at t=999."""
    param = next(unet.parameters())
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=param.device, dtype=param.dtype)
        cond = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=param.device, dtype=param.dtype)
        t = torch.tensor([999], device=param.device)
        out = unet(x, t, encoder_hidden_states=cond).sample
        return (out.float() - x.float()).mean().item() < -1


# -- building diffusers components from an LDM state dict ----------------------------------------------------
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
    if not isinstance(index, dict) or index.get("_class_name") not in _PIPELINE_CLASSES:
        found = index.get("_class_name") if isinstance(index, dict) else None
        raise ModelError(f"{what}: {folder} is a {found!r} pipeline; only {' and '.join(_PIPELINE_CLASSES)} "
                         "are supported")
    return index


def load_single_file(path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                     config_dir=None, prediction_type: str | None = None):
    """``(pipeline, architecture)`` from an AUTOMATIC1111 single file, offline.

    ``config_dir`` (a diffusers config folder) and ``prediction_type`` (``'epsilon'``/``'v_prediction'``)
    override what is found beside the file (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    state = read_state_dict(path)
    family = detect_architecture({k: tuple(v.shape) for k, v in state.items()}, path)
    custom_config = Path(config_dir) if config_dir is not None else sidecar_config_dir(path)
    if prediction_type is None:
        prediction_type = _yaml_prediction_type(path)
    if custom_config is not None:
        if not (custom_config / "model_index.json").is_file():
            raise ModelError(f"{path}: config folder {custom_config} has no model_index.json")
        config = custom_config
    else:
        config = CONFIGS_DIR / ("sd2-v" if family == "sd2" and prediction_type == "v_prediction" else family)
        expected = json.loads((config / "unet" / "config.json").read_text())["cross_attention_dim"]
        found = _cross_attention_width({k: tuple(v.shape) for k, v in state.items()})
        if found is not None and found != expected:
            raise ModelError(f"{path}: a {family}-style checkpoint with cross-attention width {found} (standard "
                             f"{family} has {expected}); put a diffusers config folder {path.stem}.config/ beside it")
    model_index = _read_model_index(config, path)
    components = _build_components(state, config, family, path)
    del state
    for module in components.values():  # nn.Module.to: diffusers' own .to() warns about every dtype cast
        torch.nn.Module.to(module, device=device, dtype=dtype)
    if family == "sd2" and prediction_type is None and custom_config is None:
        prediction_type = "v_prediction" if _guess_v_prediction(components["unet"]) else "epsilon"
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
    is built in when the folder has none)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from ..tokenizer import clip_tokenizer

    folder = Path(folder)
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


# -- hashes --------------------------------------------------------------------------------------------------
def sha256_of(path) -> str:
    """sha256 of a file (AUTOMATIC1111's checkpoint hash), or of a folder: sha256 over every file's
    ``relative/path`` and its sha256, in sorted order."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_of(file).encode() + b"\n")
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the checkpoints folder ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint in the checkpoints folder, named like AUTOMATIC1111 names it.

    ``name`` is the path relative to the folder (``sub/v1-5.safetensors``), ``title`` that plus
    ``" [shorthash]"`` once the file was hashed, ``model_name`` the relative path without extension with
    ``/`` turned into ``_`` (the file stem for a top-level file), ``name_for_extra`` the file stem (the
    infotext ``Model:`` value).
    """
    title: str
    model_name: str
    filename: str                 # absolute path of the file or folder
    name: str
    name_for_extra: str
    kind: str                     # 'single-file' | 'diffusers'
    size: int                     # bytes (all files, for a folder)
    mtime: float
    sha256: str | None = None
    config: str | None = None     # NAME.config/ or NAME.yaml beside a single file, when present

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None


def _folder_has_weights(folder: Path) -> bool:
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.rglob("*") if p.is_file())


class LoadedModel:
    """A loaded checkpoint: the diffusers pipeline generation uses, and what infotexts say about it."""

    def __init__(self, pipe, *, name: str, architecture: str, device: torch.device, dtype: torch.dtype,
                 info: CheckpointInfo | None = None, hasher: Callable[[], str | None] | None = None):
        self.pipe = pipe
        self.name = name
        self.architecture = architecture
        self.device = torch.device(device)
        self.dtype = dtype
        self.info = info
        self._hasher = hasher
        self._sha256: str | None = None
        self._hash_lock = threading.Lock()

    @property
    def sha256(self) -> str | None:
        """Full sha256 of the file (computed on first use, then cached by the manager); None for random weights."""
        with self._hash_lock:
            if self._sha256 is None and self._hasher is not None:
                self._sha256 = self._hasher()
            return self._sha256

    @property
    def shorthash(self) -> str | None:
        """AUTOMATIC1111 ``Model hash:`` (sha256[:10])."""
        sha = self.sha256
        return sha[:10] if sha else None

    @property
    def filename(self) -> str | None:
        return self.info.filename if self.info else None

    @property
    def is_sdxl(self) -> bool:
        return self.architecture == "sdxl"

    @property
    def prediction_type(self) -> str:
        """``'epsilon'`` or ``'v_prediction'`` (the training target hypernetwork training must use)."""
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    def _attentions(self):
        from diffusers.models.attention_processor import Attention
        return [(n, m) for n, m in self.pipe.unet.named_modules() if isinstance(m, Attention)]

    def attention_widths(self) -> set[int]:
        """Every context width an attention layer of the UNet reads (``to_k.in_features``)."""
        return {m.to_k.in_features for _, m in self._attentions()}

    def self_attention_widths(self) -> set[int]:
        return {m.to_k.in_features for n, m in self._attentions() if n.endswith("attn1")}

    @property
    def cross_attention_width(self) -> int:
        """The width of the text context the UNet cross-attends to (768 SD1, 1024 SD2, 2048 SDXL)."""
        widths = {m.to_k.in_features for n, m in self._attentions() if n.endswith("attn2")}
        return max(widths) if widths else int(self.pipe.unet.config.cross_attention_dim)

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, {self.architecture}, {self.device}, {self.dtype})"


class ModelManager:
    """The checkpoints folder and the one checkpoint loaded from it. Thread-safe.

    ``default`` names the checkpoint loaded when none is chosen; without it, the trained demo model
    (``extension/demo/model``) when it exists, else a random-weight demo pipeline. Loading another
    checkpoint drops this manager's reference to the old one first (callers still holding the old
    :class:`LoadedModel` keep it alive).
    """

    def __init__(self, ckpt_dir=DEFAULT_CKPT_DIR, device=None, precision=None, default: str | None = None, *,
                 demo_dir=DEMO_MODEL_DIR):
        self.ckpt_dir = Path(ckpt_dir).resolve()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.default = default
        self.demo_dir = Path(demo_dir)
        self._lock = threading.RLock()
        self._current: LoadedModel | None = None
        self._current_key: tuple | None = None
        self._hashes: dict[tuple, str] = {}

    # listing
    def _stat_key(self, path: Path) -> tuple:
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return (str(path), sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files),
                                                                         default=0))
        stat = path.stat()
        return (str(path), stat.st_size, stat.st_mtime_ns)

    def _info(self, path: Path, kind: str) -> CheckpointInfo:
        key = self._stat_key(path)
        rel = path.relative_to(self.ckpt_dir).as_posix()
        stem = path.name if kind == "diffusers" else path.stem
        no_ext = rel if kind == "diffusers" else rel[: -len(path.suffix)]
        sha = self._hashes.get(key)
        config = None
        if kind == "single-file":
            sidecar = sidecar_config_dir(path)
            config = str(sidecar) if sidecar else (str(path.with_suffix(".yaml"))
                                                   if path.with_suffix(".yaml").is_file() else None)
        return CheckpointInfo(title=f"{rel} [{sha[:10]}]" if sha else rel, model_name=no_ext.replace("/", "_"),
                              filename=str(path), name=rel, name_for_extra=stem, kind=kind, size=key[1],
                              mtime=key[2] / 1e9, sha256=sha, config=config)

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """Every ``*.safetensors``/``*.ckpt`` and diffusers folder under the checkpoints folder (rescanned)."""
        found: list[CheckpointInfo] = []
        if not self.ckpt_dir.is_dir():
            return found
        for root, dirs, files in os.walk(self.ckpt_dir, followlinks=False):
            here = Path(root)
            if here != self.ckpt_dir and "model_index.json" in files:
                dirs[:] = []
                if _folder_has_weights(here):  # a NAME.config/ sidecar holds configs only
                    found.append(self._info(here, "diffusers"))
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                path = here / name
                if path.suffix.lower() in SINGLE_FILE_SUFFIXES and not name.startswith(".") and path.is_file():
                    found.append(self._info(path, "single-file"))
        return sorted(found, key=lambda i: i.name.lower())

    def find(self, name: str) -> CheckpointInfo:
        """The checkpoint called ``name``: a title, ``name``, ``model_name``, file stem, relative path, absolute
        path inside the folder, or (short) hash. A :class:`ModelError` says why nothing matched."""
        if not isinstance(name, str) or not name.strip():
            raise ModelError("no checkpoint name given")
        wanted = name.strip()
        infos = self.list_checkpoints()
        bare = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", wanted)
        tiers = (lambda i: {i.title, i.name, i.filename},  # exact names first, the bare file stem last
                 lambda i: {i.model_name, i.name.rsplit(".", 1)[0] if i.kind == "single-file" else i.name},
                 lambda i: {i.sha256, i.shorthash} if i.sha256 else set(),
                 lambda i: {i.name_for_extra})
        for aliases in tiers:
            for candidate in dict.fromkeys((wanted, bare)):
                for info in infos:
                    if candidate in aliases(info):
                        return info
        path = Path(bare)
        resolved = (path if path.is_absolute() else self.ckpt_dir / path).resolve()
        if resolved != self.ckpt_dir and self.ckpt_dir not in resolved.parents:
            raise ModelError(f"checkpoint {name!r}: the path is outside the checkpoints folder {self.ckpt_dir}")
        for info in infos:
            if Path(info.filename).resolve() == resolved:
                return info
        available = ", ".join(i.title for i in infos[:20]) or "none"
        raise ModelError(f"checkpoint {name!r} not found in {self.ckpt_dir} (available: {available})")

    def sha256(self, info: CheckpointInfo) -> str:
        """Full sha256 of a checkpoint (cached in this manager by path, size and mtime)."""
        path = Path(info.filename)
        key = self._stat_key(path)
        if key not in self._hashes:
            self._hashes[key] = sha256_of(path)
        return self._hashes[key]

    # loading
    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded checkpoint, or None; never loads anything."""
        with self._lock:
            return self._current

    @property
    def current(self) -> LoadedModel:
        """The loaded checkpoint; the default one is loaded on first use."""
        with self._lock:
            if self._current is None:
                return self.load(None)
            return self._current

    def _target(self, name: str | None):
        """``('demo', None)`` or ``('checkpoint', CheckpointInfo)``."""
        if name is None or (isinstance(name, str) and not name.strip()):
            if self.default:
                return self._target(self.default)
            return ("demo", None)
        try:
            return ("checkpoint", self.find(name))
        except ModelError:
            if name.strip() in (DEMO_NAME, DEMO_RANDOM_NAME):
                return ("demo", None)
            raise

    def _key(self, target) -> tuple:
        kind, info = target
        return ("demo",) if kind == "demo" else (info.filename, info.size, info.mtime)

    def load(self, name: str | None = None) -> LoadedModel:
        """Load checkpoint ``name`` (None: the default) unless it is already loaded; free the previous one."""
        with self._lock:
            target = self._target(name)
            key = self._key(target)
            if self._current is not None and key == self._current_key:
                return self._current
            kind, info = target
            if kind == "checkpoint" and info.kind == "single-file" and info.filename.lower().endswith(".safetensors"):
                detect_architecture(read_shapes(info.filename), info.filename)  # cheap check before unloading
            previous = (self._current_key, self._previous_target())
            self.unload()
            try:
                model = self._load_target(target)
            except ModelError:
                self._restore(previous)
                raise
            except Exception as exc:  # a loader failure we did not foresee: still the file's problem
                self._restore(previous)
                where = info.filename if info else "the demo model"
                raise ModelError(f"{where}: loading failed ({type(exc).__name__}: {str(exc)[:500]})") from exc
            self._current, self._current_key = model, key
            return model

    def _previous_target(self):
        if self._current is None:
            return None
        return ("demo", None) if self._current.info is None or self._current.architecture == "demo" \
            else ("checkpoint", self._current.info)

    def _restore(self, previous) -> None:
        key, target = previous
        if target is None:
            return
        try:
            self._current, self._current_key = self._load_target(target), key
        except Exception:  # the old one cannot come back either; stay unloaded
            logger.exception("could not reload the previous checkpoint")

    def _load_target(self, target) -> LoadedModel:
        kind, info = target
        if kind == "demo":
            return self._load_demo()
        if info.kind == "diffusers":
            pipe, arch = load_diffusers_folder(info.filename, self.device, self.dtype)
        else:
            pipe, arch = load_single_file(info.filename, self.device, self.dtype)
        return LoadedModel(pipe, name=info.name_for_extra, architecture=arch, device=self.device, dtype=self.dtype,
                           info=info, hasher=lambda: self.sha256(info))

    def _load_demo(self) -> LoadedModel:
        if (self.demo_dir / "model_index.json").is_file():
            pipe, _ = load_diffusers_folder(self.demo_dir, self.device, self.dtype)
            stat = self._stat_key(self.demo_dir)
            info = CheckpointInfo(title=DEMO_NAME, model_name=DEMO_NAME, filename=str(self.demo_dir.resolve()),
                                  name=DEMO_NAME, name_for_extra=DEMO_NAME, kind="diffusers", size=stat[1],
                                  mtime=stat[2] / 1e9)
            return LoadedModel(pipe, name=DEMO_NAME, architecture="demo", device=self.device, dtype=self.dtype,
                               info=info, hasher=lambda: self.sha256(info))
        from ..demo.architecture import build_random_pipeline
        pipe = build_random_pipeline(torch_dtype=self.dtype).to(self.device)
        return LoadedModel(pipe, name=DEMO_RANDOM_NAME, architecture="demo", device=self.device, dtype=self.dtype)

    def unload(self) -> None:
        """Drop the loaded checkpoint and give its memory back."""
        with self._lock:
            self._current = None
            self._current_key = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
