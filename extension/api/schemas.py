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


class StableDiffusionProcessing(Request):
    """The fields txt2img and img2img share (AUTOMATIC1111's ``StableDiffusionProcessing`` and the API's extras)."""

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
    comments: Optional[dict[str, Any]] = None
    force_task_id: Optional[str] = None
    sampler_index: str = Field("Euler", description="legacy name of sampler_name (used when sampler_name is unset)")
    script_name: Optional[str] = Field(None, description="a txt2img script from /sdapi/v1/scripts")
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}
    infotext: Optional[str] = None


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """``POST /sdapi/v1/txt2img``: every field of AUTOMATIC1111's ``StableDiffusionProcessingTxt2Img`` and the
    API's extras, with its defaults (the schema keeps AUTOMATIC1111's model name)."""

    denoising_strength: Optional[float] = None
    firstpass_image: Optional[str] = None
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


Txt2ImgRequest = StableDiffusionProcessingTxt2Img


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """``POST /sdapi/v1/img2img``: AUTOMATIC1111's ``StableDiffusionProcessingImg2Img`` fields and defaults.
    Pictures are base64 PNG or JPEG, a ``data:image/...;base64,`` prefix allowed; white in ``mask`` is
    inpainted (or, for an RGBA mask with transparency, its opaque part)."""

    init_images: Optional[list[str]] = Field(None, description="the pictures to start from (one, or one per "
                                                               "image of the batch)")
    resize_mode: int = Field(0, description="0 just resize, 1 crop and resize, 2 resize and fill, "
                                            "3 just resize (latent upscale)")
    denoising_strength: float = Field(0.75, description="0..1: how much of the schedule runs (0 keeps the picture)")
    image_cfg_scale: Optional[float] = Field(None, description="instruct-pix2pix models only: ignored")
    mask: Optional[str] = Field(None, description="inpaint: a picture of the init image's size, white = change")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: Optional[int] = Field(None, description="sets mask_blur_x and mask_blur_y")
    mask_round: bool = True
    inpainting_fill: int = Field(0, description="masked content: 0 fill, 1 original, 2 latent noise, "
                                                "3 latent nothing")
    inpaint_full_res: bool = Field(True, description="inpaint area: true only masked, false whole picture")
    inpaint_full_res_padding: int = Field(0, description="only masked: pixels around the masked box")
    inpainting_mask_invert: int = Field(0, description="1: inpaint what is not masked")
    initial_noise_multiplier: Optional[float] = Field(None, description="the start noise's scale (default 1)")
    latent_mask: Optional[str] = None
    include_init_images: bool = Field(False, description="keep init_images and mask in the answer's parameters")


Img2ImgRequest = StableDiffusionProcessingImg2Img


class TextToImageResponse(BaseModel):
    images: list[str] = Field(description="The generated images, base64 PNG with their infotext")
    parameters: dict[str, Any]
    info: str = Field(description="A JSON object as a string: infotexts, seed, all_seeds, ...")


ImageToImageResponse = TextToImageResponse


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


class PNGInfoRequest(Request):
    image: str = Field("", description="a base64 image (a data: URL prefix is allowed)")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="the infotext (the PNG's parameters chunk), empty when it has none")
    items: dict[str, Any] = Field(description="the image's other text fields")
    parameters: dict[str, Any] = Field(description="the infotext's fields, as AUTOMATIC1111 parses them")


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = {}


class ScriptArg(BaseModel):
    label: Optional[str] = None
    value: Optional[Any] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    step: Optional[Any] = None
    choices: Optional[list[Any]] = None


class ScriptInfo(BaseModel):
    name: str = Field(description="the script's title, lower-cased (what script_name takes)")
    is_alwayson: bool = False
    is_img2img: bool = False
    args: list[ScriptArg] = Field(description="script_args, in order")


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
