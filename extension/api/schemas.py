"""The REST API's request and response models, in AUTOMATIC1111's field names (``modules/api/models.py``).

Requests tolerate unknown fields (clients written for other versions and extensions send more) and treat
``null`` as "the default", as AUTOMATIC1111's all-optional models do. Types are checked by pydantic (a wrong
type is a 422 naming the field); ranges and names are checked by :mod:`extension.api.routes`.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


class Request(BaseModel):
    """A request body: unknown fields kept (and ignored), ``null`` meaning the field's default."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = cls.model_fields
            return {key: value for key, value in data.items()
                    if not (value is None and key in fields and fields[key].default is not None)}
        return data


class StableDiffusionProcessingTxt2Img(Request):
    """``POST /sdapi/v1/txt2img``: every field of AUTOMATIC1111's ``StableDiffusionProcessingTxt2Img`` and the
    API's extras, with its defaults (the schema keeps AUTOMATIC1111's model name)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: Optional[list[str]] = None
    seed: int = Field(-1, description="-1: a random seed; image i of the request gets seed + i")
    subseed: int = -1
    subseed_strength: float = Field(0, description="variation seeds: not supported (reported in info)")
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: Optional[str] = Field(None, description="a name or alias from /sdapi/v1/samplers")
    scheduler: Optional[str] = Field(None, description="a name or label from /sdapi/v1/schedulers")
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: Optional[bool] = Field(None, description="accepted; not supported (reported in info)")
    tiling: Optional[bool] = Field(None, description="accepted; not supported (reported in info)")
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = None
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = Field(
        None, description="options for this request only (sd_model_checkpoint, CLIP_stop_at_last_layers, "
                          "sd_hypernetwork, ...)")
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: bool = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None
    enable_hr: bool = Field(False, description="accepted; hires. fix is not supported (reported in info)")
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: Optional[str] = None
    sampler_index: str = Field("Euler", description="legacy name of sampler_name (used when sampler_name is unset)")
    script_name: Optional[str] = Field(None, description="a txt2img script from /sdapi/v1/scripts")
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}
    infotext: Optional[str] = None


Txt2ImgRequest = StableDiffusionProcessingTxt2Img


class TextToImageResponse(BaseModel):
    images: list[str] = Field(description="The generated images, base64 PNG with their infotext")
    parameters: dict[str, Any]
    info: str = Field(description="A JSON object as a string: infotexts, seed, all_seeds, ...")


class ProgressResponse(BaseModel):
    progress: float = Field(description="The progress with a range of 0 to 1")
    eta_relative: float = Field(description="ETA in seconds")
    state: dict[str, Any] = Field(description="The current state snapshot")
    current_image: Optional[str] = Field(None, description="The current image in base64 format")
    textinfo: Optional[str] = Field(None, description="Info text used by WebUI")
    current_task: Optional[str] = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: Optional[str] = Field(None, description="Short hash (sha256[:10]; null until the file was hashed)")
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None
    error: Optional[str] = Field(None, description="why the file cannot be used (refused, corrupt, not a "
                                                    "hypernetwork); null when it loads. Not in AUTOMATIC1111")


class RefreshHypernetworksResponse(BaseModel):
    added: list[str]
    changed: list[str]
    removed: list[str]


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(description="System memory stats")
    cuda: dict[str, Any] = Field(description="CUDA memory stats")


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(description="Titles of scripts (txt2img), lower-cased as AUTOMATIC1111 does")
    img2img: list[str] = Field(description="Titles of scripts (img2img): none here")


class CreateHypernetworkRequest(Request):
    """``POST /sdapi/v1/create/hypernetwork``: AUTOMATIC1111's ``create_hypernetwork`` arguments; what is
    missing takes the Train tab's default."""

    name: str = Field(description="the file name (letters, digits and ._- ); not a path")
    enable_sizes: Optional[list[int | str]] = Field(
        None, description="attention widths that get modules (default: the loaded model's widths)")
    overwrite_old: bool = False
    layer_structure: Optional[str | list[float]] = "1, 2, 1"
    activation_func: Optional[str] = "linear"
    weight_init: Optional[str] = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: Optional[str | list[float]] = "0, 0, 0"
    activate_output: bool = False
    file_format: str = Field("safetensors", description="safetensors (default) or pt")


class TrainHypernetworkRequest(Request):
    """``POST /sdapi/v1/train/hypernetwork``: AUTOMATIC1111's ``train_hypernetwork`` arguments (``id_task``
    included, and ignored). Only ``hypernetwork_name`` and ``data_root`` are needed; the rest take the Train
    tab's defaults. Types are checked when training starts (a 422 names the field)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"required": ["hypernetwork_name", "data_root"]})

    id_task: Optional[str] = None
    hypernetwork_name: Optional[str] = None
    learn_rate: Optional[str | float] = Field(None, description='a rate or a schedule: "5e-3:100, 1e-3:1000, 1e-5"')
    batch_size: Optional[int] = None
    gradient_step: Optional[int] = None
    data_root: Optional[str] = Field(None, description="the dataset folder on the server")
    log_directory: Optional[str] = None
    training_width: Optional[int] = None
    training_height: Optional[int] = None
    varsize: Optional[bool] = None
    steps: Optional[int] = None
    clip_grad_mode: Optional[str] = None
    clip_grad_value: Optional[str | float] = None
    shuffle_tags: Optional[bool] = None
    tag_drop_out: Optional[float] = None
    latent_sampling_method: Optional[str] = None
    use_weight: Optional[bool] = None
    create_image_every: Optional[int] = None
    save_hypernetwork_every: Optional[int] = None
    template_filename: Optional[str] = Field(None, description="a file name from the templates folder")
    preview_from_txt2img: Optional[bool] = None
    preview_prompt: Optional[str] = None
    preview_negative_prompt: Optional[str] = None
    preview_steps: Optional[int] = None
    preview_sampler_name: Optional[str] = None
    preview_cfg_scale: Optional[float] = None
    preview_seed: Optional[int] = None
    preview_width: Optional[int] = None
    preview_height: Optional[int] = None


class CreateResponse(BaseModel):
    info: str = Field(description="create hypernetwork filename: <path>")


class TrainResponse(BaseModel):
    info: str = Field(description="train embedding complete: filename: <path> error: <error or None> (sic)")


class ErrorResponse(BaseModel):
    error: str = Field(description="the kind of error")
    detail: str = Field(description="what is wrong, naming the field")
    errors: Optional[list[Any]] = Field(None, description="pydantic's errors, for a body that does not validate")


def options_model(fields: dict[str, tuple[type, Any, str]]) -> type[BaseModel]:
    """``Options``: every known option as an optional field (unknown options are allowed too)."""
    definitions = {key: (Optional[kind], Field(default=default, description=description))
                   for key, (kind, default, description) in fields.items()}
    return create_model("Options", __config__=ConfigDict(extra="allow"), **definitions)


def flags_model(parser) -> type[BaseModel]:
    """``Flags``: the server's command-line flags (``/sdapi/v1/cmd-flags``)."""
    definitions = {}
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of its actions
        if action.dest == "help":
            continue
        if isinstance(action, argparse._AppendAction):  # noqa: SLF001 - a repeatable flag: a list
            kind = list[str]
        elif action.type in (int, float):
            kind = action.type
        elif action.nargs == 0:  # store_true / store_false
            kind = bool
        else:
            kind = str  # text and paths
        definitions[action.dest] = (Optional[kind], Field(default=None, description=action.help))
    return create_model("Flags", __config__=ConfigDict(extra="allow"), **definitions)
