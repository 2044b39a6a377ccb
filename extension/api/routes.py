"""AUTOMATIC1111's ``/sdapi/v1`` routes: thin handlers that check the request, call the app through its state
(:class:`~extension.ui.state.AppState`: the library, the model manager, the settings, the job runner) and shape
the answer as AUTOMATIC1111 does.

Every generation and training run is a job on the one :class:`~extension.jobs.JobRunner` the UI uses, so
the API and the UI wait for each other in arrival order and see each other in ``/progress`` and the UI's
status line. Handlers are plain ``def`` functions: FastAPI runs them on its thread pool, so a request waiting
for the device (or training for an hour) blocks only its own thread.

Errors: a request that cannot be served gets a 4xx whose JSON body says what is wrong and names the field
(``{"error": ..., "detail": ...}``): 400 for a body that is not JSON, 401 for credentials, 404 for an unknown
name (sampler, scheduler, checkpoint, hypernetwork, template, script), 409 for a hypernetwork that already
exists, 422 for a value out of range or of the wrong type. A 500 means a bug here; it is logged, and the
server keeps serving. What a request asks for that this project does not do (hires. fix, tiling, face
restoration, styles, always-on scripts) is accepted and said in the answer's ``info`` (``messages``).
"""
from __future__ import annotations

import base64
import dataclasses
import inspect
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import samplers
from ..errors import HypernetworkError, ModelError
from ..processing import Txt2ImgRequest as ProcessingRequest
from ..prompt.tags import hypernetwork_requests, parse_prompt
from . import options as opts
from . import schemas
from .auth import SchemaAuth, api_credentials, basic_auth

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"

# The txt2img tab's limits (a request beyond them is refused, not clamped).
MIN_SIZE, MAX_SIZE, SIZE_STEP = 16, 2048, 8
# Steps: AUTOMATIC1111's API takes any number (150 is only its UI slider's end). Far past any use, the
# sampler's tables would take the server's memory, so a bound stays; a long run is interruptible as any.
MAX_STEPS = 10_000
MAX_BATCH_SIZE, MAX_BATCH_COUNT = 8, 100
MAX_CFG_SCALE = 30.0
MAX_SEED = 2**63 - 1


class ApiError(Exception):
    """A request the API refuses: ``status`` and a message naming the field."""

    def __init__(self, status: int, message: str, kind: str = "BadRequest"):
        super().__init__(message)
        self.status, self.kind = status, kind


def error_response(status: int, kind: str, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": kind, "detail": detail, **extra}, headers=headers)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """pydantic's errors as one readable line per field (and the list itself under ``errors``)."""
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            return error_response(400, "MalformedJSON", f"the request body is not valid JSON: {reason}".rstrip(": "))
    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    safe = json.loads(json.dumps(errors, default=str))
    return error_response(422, "ValidationError", "; ".join(lines) or "invalid request", errors=safe)


class ApiRoute(APIRoute):
    """Turns every error of an API route into a JSON answer: 4xx for bad requests, 500 (logged) for bugs."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.kind, str(exc))
            except RequestValidationError as exc:
                return validation_response(exc)
            except StarletteHTTPException as exc:  # FastAPI's, and Starlette's own (a body that is not UTF-8: 400)
                kind = "Unauthorized" if exc.status_code == 401 else "HTTPException"
                return error_response(exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None))
            except Exception as exc:  # noqa: BLE001 - a bug: say so, log it, keep serving
                log.exception("API %s %s failed", request.method, request.url.path)
                return error_response(500, type(exc).__name__, f"internal error (a bug in the server): {exc}")

        return guarded


# -- images and infotexts -------------------------------------------------------------------------------------
def encode_png(image, infotext: str | None = None) -> str:
    """``image`` as base64 PNG (no ``data:`` prefix), with ``infotext`` in its ``parameters`` chunk."""
    from PIL import PngImagePlugin

    meta = None
    if infotext:
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


BASE_INFOTEXT_KEYS = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size-1", "Size-2",
                      "Model hash", "Model", "Clip skip"}


def extra_generation_params(infotext: str) -> dict[str, Any]:
    """The infotext's fields beyond AUTOMATIC1111's fixed ones (``Schedule type``, ``Hypernet hashes``...)."""
    from ..infotext import parse_infotext

    if not infotext:
        return {}
    booleans = {"True": True, "False": False}  # A1111 holds these as bools ("Pad conds": true)
    return {key: booleans.get(value, value) if isinstance(value, str) else value
            for key, value in parse_infotext(infotext).items() if key not in BASE_INFOTEXT_KEYS}


# -- txt2img ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Txt2ImgPlan:
    """A checked txt2img request: what to run, what to change around it, what to tell the client."""

    request: ProcessingRequest
    checkpoint: str | None
    settings: dict[str, Any]
    script: Any
    messages: list[str]


def whole(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ApiError(422, f"{field} must be between {low} and {high}, got {value}")
    return value


def check_size(field: str, value: int) -> int:
    if value % SIZE_STEP:
        raise ApiError(422, f"{field} must be a multiple of {SIZE_STEP}, got {value} "
                            f"(for example {max(MIN_SIZE, value - value % SIZE_STEP)})")
    return whole(field, value, MIN_SIZE, MAX_SIZE)


def check_sampler(body: schemas.Txt2ImgRequest) -> tuple[str, str | None]:
    """``(sampler name, schedule type or None)``: ``sampler_name``, else the legacy ``sampler_index``."""
    field = "sampler_name" if body.sampler_name else "sampler_index"
    name = (body.sampler_name or body.sampler_index or samplers.DEFAULT_SAMPLER).strip()
    base, legacy = samplers.split_legacy_name(name)
    if samplers.find_sampler(base) is None:
        raise ApiError(404, f"{field}: unknown sampler {name!r} (available: {', '.join(samplers.sampler_names())})",
                       "NotFound")
    scheduler = body.scheduler
    if scheduler and samplers.find_schedule_type(scheduler) is None:
        names = [s.name for s in samplers.SCHEDULE_TYPES if s.overrides is not None]
        raise ApiError(404, f"scheduler: unknown schedule type {scheduler!r} (available: {', '.join(names)})",
                       "NotFound")
    if legacy is not None and not scheduler:
        scheduler = legacy.label
    return base, scheduler


def check_prompt_networks(ctx, prompt: str, field: str) -> None:
    """``<hypernet:NAME>`` names that would leave the hypernetworks folder are refused (unknown names are only
    reported in ``info``, as a generation reports them)."""
    requests, _ = hypernetwork_requests(parse_prompt(prompt)[1])
    for request in requests:
        if Path(request.name).is_absolute() or not _inside(ctx, request.name):
            raise ApiError(422, f"{field}: <hypernet:{request.name}> names a file outside the hypernetworks folder; "
                                "give a name from /sdapi/v1/hypernetworks")


def check_prompt_editing(prompt: str, field: str, steps: int) -> None:
    """A prompt whose editing syntax cannot be parsed within bounds (see :mod:`extension.prompt.schedule`) is a
    422 now, not an error in the middle of the job."""
    from ..prompt.schedule import prompt_schedule

    try:
        for text in dict.fromkeys((prompt, parse_prompt(prompt)[0])):  # as written, and without its tags
            prompt_schedule(text, steps)
    except ValueError as exc:
        raise ApiError(422, f"{field}: {exc}") from None


def _inside(ctx, name: str) -> bool:
    try:
        ctx.library.path_inside(name)
        return True
    except ValueError:
        return False


def find_script(ctx, name: str):
    for script in ctx.callbacks.scripts:
        if script.title().lower() == name.strip().lower():
            return script
    titles = ", ".join(s.title().lower() for s in ctx.callbacks.scripts) or "none"
    raise ApiError(404, f"script_name: no txt2img script {name!r} (available: {titles})", "NotFound")


def unsupported_messages(body: schemas.Txt2ImgRequest) -> list[str]:
    """What the request asks for that this project does not do; the generation goes on without it."""
    messages = []
    if getattr(body, "enable_hr", False):  # txt2img's only
        messages.append(f"Hires. fix (enable_hr) is not supported here; the images were made at "
                        f"{body.width}x{body.height} without a second pass.")
    if body.tiling:
        messages.append("Tiling is not supported here; it was ignored.")
    if body.restore_faces:
        messages.append("Face restoration (restore_faces) is not supported here; it was ignored.")
    if body.subseed_strength:
        messages.append("Variation seeds (subseed_strength) are not supported here; they were ignored.")
    if body.seed_resize_from_w > 0 or body.seed_resize_from_h > 0:
        messages.append("Resizing the seed (seed_resize_from_w/h) is not supported here; it was ignored.")
    if body.styles:
        messages.append(f"Prompt styles are not supported here; ignored: {', '.join(body.styles)}.")
    if body.alwayson_scripts:
        messages.append(f"Always-on scripts are not available here; ignored: {', '.join(body.alwayson_scripts)}.")
    if body.refiner_checkpoint:
        messages.append("A refiner (refiner_checkpoint) is not supported here; it was ignored.")
    return messages


def plan_txt2img(ctx, body: schemas.Txt2ImgRequest) -> Txt2ImgPlan:
    """Check everything before waiting for the device; :class:`ApiError` for the first problem (the checks
    img2img shares: an img2img body gives the txt2img part of its request)."""
    width, height = check_size("width", body.width), check_size("height", body.height)
    steps = whole("steps", body.steps, 1, MAX_STEPS)
    batch_size = whole("batch_size", body.batch_size, 1, MAX_BATCH_SIZE)
    n_iter = whole("n_iter", body.n_iter, 1, MAX_BATCH_COUNT)
    if not 0 <= body.cfg_scale <= MAX_CFG_SCALE:
        raise ApiError(422, f"cfg_scale must be between 0 and {MAX_CFG_SCALE:g}, got {body.cfg_scale:g}")
    if not -1 <= body.seed <= MAX_SEED - batch_size * n_iter:
        raise ApiError(422, f"seed must be -1 (random) or a whole number from 0 to {MAX_SEED - batch_size * n_iter}, "
                            f"got {body.seed}")
    sampler_name, scheduler = check_sampler(body)
    prompt, negative = body.prompt, body.negative_prompt
    messages = unsupported_messages(body)
    if body.disable_extra_networks:
        if parse_prompt(prompt)[1]:
            messages.append("disable_extra_networks: the <hypernet:...> tags were removed from the prompt.")
        prompt = parse_prompt(prompt)[0]
    check_prompt_networks(ctx, prompt, "prompt")
    check_prompt_editing(prompt, "prompt", steps)
    check_prompt_editing(negative, "negative_prompt", steps)
    try:
        checkpoint, settings = opts.prepare(ctx, body.override_settings or {})
    except opts.OptionError as exc:
        raise ApiError(exc.status, f"override_settings: {exc}", "NotFound" if exc.status == 404 else "BadRequest")
    unknown = [key for key in settings if key not in ctx.settings.specs and key not in opts.COMPAT_OPTIONS]
    for key in unknown:
        settings.pop(key)
    if unknown:
        messages.append(f"override_settings: unknown options ignored: {', '.join(unknown)}.")
    if body.script_name and isinstance(body, schemas.Img2ImgRequest):
        raise ApiError(404, f"script_name: no img2img script {body.script_name!r} (available: none)", "NotFound")
    script = find_script(ctx, body.script_name) if body.script_name else None
    request = ProcessingRequest(prompt=prompt, negative_prompt=negative, sampler_name=sampler_name,
                                scheduler=scheduler or "Automatic", steps=steps, cfg_scale=float(body.cfg_scale),
                                width=width, height=height, seed=body.seed, batch_size=batch_size, n_iter=n_iter)
    return Txt2ImgPlan(request, checkpoint, settings, script, messages)


def model_key(ctx, model) -> str | None:
    """What loads ``model`` again: the built-in model's name or the checkpoint's file."""
    if model is None:
        return None
    if getattr(model, "architecture", None) == "demo" or getattr(model, "info", None) is None:
        return opts.builtin_title(ctx)
    return model.info.filename


def run_txt2img(ctx, body: schemas.Txt2ImgRequest, plan: Txt2ImgPlan):
    """The generation (txt2img, or img2img for an img2img plan), as one job on the device, with
    ``override_settings`` applied around it."""
    name = "img2img" if isinstance(body, schemas.Img2ImgRequest) else "txt2img"
    with ctx.jobs.job(name, job_count=plan.request.n_iter, source="api") as job:
        previous_model = model_key(ctx, ctx.loaded_model())
        restore = body.override_settings_restore_afterwards
        previous_settings = {key: ctx.settings.get(key) for key in plan.settings}
        if plan.checkpoint is not None:
            ctx.load_model(plan.checkpoint)
        ctx.settings.update(plan.settings, save=not restore)
        try:
            request = dataclasses.replace(plan.request, clip_skip=int(ctx.settings.get(opts.CLIP_SKIP, 1) or 1))
            if plan.script is not None:
                try:
                    inspect.signature(plan.script.run).bind(ctx, request, *body.script_args, progress=None)
                except TypeError as exc:
                    raise ApiError(422, f"script_args do not fit script {body.script_name!r}: {exc}") from None
                saving = ctx.settings.get(opts.SAMPLES_SAVE)  # the script's generations save as save_images says
                ctx.settings.update({opts.SAMPLES_SAVE: bool(body.save_images)}, save=False)
                try:
                    result = plan.script.run(ctx, request, *body.script_args, progress=None)
                except ValueError as exc:  # what a script says of its arguments (a bad multiplier list, ...)
                    raise ApiError(422, f"script {body.script_name!r}: {exc}") from None
                finally:
                    ctx.settings.update({opts.SAMPLES_SAVE: saving}, save=False)
            else:
                result = ctx.generate(request, source="api", save=bool(body.save_images))
            model = ctx.loaded_model()
        finally:
            if restore:
                ctx.settings.update(previous_settings, save=False)
                if plan.checkpoint is not None and previous_model is not None:
                    ctx.load_model(previous_model)
        return result, model, job.timestamp


def processed_info(body: schemas.Txt2ImgRequest, plan: Txt2ImgPlan, result, model, timestamp: str) -> dict:
    """AUTOMATIC1111's ``Processed.js()`` fields, plus ``scheduler``, ``hypernetworks``, ``messages``."""
    request = result.request or plan.request
    count = request.n_iter * request.batch_size
    seeds = [request.seed + i for i in range(count)] if request.seed >= 0 else list(result.seeds)
    if plan.script is not None:  # a script decides how many images (and seeds) it makes
        seeds = list(result.seeds)
    infotexts = list(result.infotexts)
    return {
        "prompt": request.prompt,
        "all_prompts": [request.prompt] * max(count, len(infotexts)),
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * max(count, len(infotexts)),
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "subseed": body.subseed,
        "all_subseeds": [body.subseed] * len(seeds),
        "subseed_strength": 0,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler_name,
        "scheduler": request.scheduler,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": getattr(model, "name", None),
        "sd_model_hash": getattr(model, "shorthash", None),
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": body.denoising_strength,
        "extra_generation_params": extra_generation_params(infotexts[0] if infotexts else ""),
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": list(body.styles or []),
        "job_timestamp": timestamp,
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": "sd-webui-hypernetworks",
        "hypernetworks": [{"name": name, "multiplier": multiplier} for name, multiplier in result.hypernetworks],
        "interrupted": bool(result.interrupted),
        "messages": plan.messages + list(result.messages),
    }


# -- img2img ---------------------------------------------------------------------------------------------------
MAX_NOISE_MULTIPLIER = 10.0


def decode_picture(text, field: str):
    """``text`` (a request's base64 picture) opened, or a 422 naming ``field``."""
    from .image_input import BadImage, decode_image

    try:
        return decode_image(text, field)
    except BadImage as exc:
        raise ApiError(422, str(exc)) from None


def plan_img2img(ctx, body: schemas.Img2ImgRequest) -> Txt2ImgPlan:
    """txt2img's checks, then the pictures and img2img's numbers: 422 for no or undecodable ``init_images``, a
    ``mask`` that is not a picture of the first init image's size, ``denoising_strength`` outside 0..1, an
    unknown ``resize_mode`` or ``inpainting_fill`` (A1111 answers a missing init image with a 404)."""
    from .. import masking
    from ..img2img import Img2ImgRequest

    if not body.init_images:
        raise ApiError(422, "init_images: give at least one picture (base64 PNG or JPEG)")
    if not 0 <= body.denoising_strength <= 1:
        raise ApiError(422, f"denoising_strength must be between 0 and 1, got {body.denoising_strength:g}")
    for field, choices in (("resize_mode", masking.RESIZE_MODES), ("inpainting_fill", masking.MASKED_CONTENT)):
        value = getattr(body, field)
        if not 0 <= value < len(choices):
            named = ", ".join(f"{i} {name}" for i, name in enumerate(choices))
            raise ApiError(422, f"{field} must be one of 0..{len(choices) - 1} ({named}), got {value}")
    blur = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
    whole("mask_blur", blur, 0, 256)
    whole("inpaint_full_res_padding", body.inpaint_full_res_padding, 0, MAX_SIZE)
    multiplier = 1.0 if body.initial_noise_multiplier is None else body.initial_noise_multiplier
    if not 0 <= multiplier <= MAX_NOISE_MULTIPLIER:
        raise ApiError(422, f"initial_noise_multiplier must be between 0 and {MAX_NOISE_MULTIPLIER:g}, got "
                            f"{multiplier:g}")
    plan = plan_txt2img(ctx, body)
    pictures = [decode_picture(text, f"init_images[{i}]") for i, text in enumerate(body.init_images)]
    if len(pictures) > 1 and len(pictures) > plan.request.batch_size:
        raise ApiError(422, f"init_images: {len(pictures)} pictures for a batch_size of {plan.request.batch_size}; "
                            "give one picture, or at most batch_size")
    mask = decode_picture(body.mask, "mask") if body.mask else None
    if mask is not None and mask.size != pictures[0].size:
        raise ApiError(422, f"mask: its size {mask.width}x{mask.height} differs from init_images[0]'s "
                            f"{pictures[0].width}x{pictures[0].height}")
    if body.mask_blur is None and body.mask_blur_x != body.mask_blur_y:
        plan.messages.append(f"mask_blur_y ({body.mask_blur_y}) differs from mask_blur_x; both were "
                             f"{body.mask_blur_x}.")
    if body.latent_mask:
        plan.messages.append("latent_mask is not supported here; the mask was used.")
    if not body.mask_round:
        plan.messages.append("mask_round false is not supported here; the mask was rounded.")
    fields = {field.name: getattr(plan.request, field.name) for field in dataclasses.fields(ProcessingRequest)}
    plan.request = Img2ImgRequest(
        **fields, init_images=pictures, mask=mask, denoising_strength=float(body.denoising_strength),
        resize_mode=body.resize_mode, mask_blur=blur, inpainting_fill=body.inpainting_fill,
        inpaint_full_res=body.inpaint_full_res, inpaint_full_res_padding=body.inpaint_full_res_padding,
        inpainting_mask_invert=1 if body.inpainting_mask_invert else 0, initial_noise_multiplier=float(multiplier))
    return plan


def generation_answer(ctx, body, plan: Txt2ImgPlan) -> dict:
    """Run ``plan`` and answer as AUTOMATIC1111: ``images`` (base64 PNG with their infotext), ``parameters`` (the
    request; img2img's pictures left out unless ``include_init_images``) and ``info`` (a JSON string)."""
    try:
        result, model, timestamp = run_txt2img(ctx, body, plan)
    except (HypernetworkError, ModelError) as exc:
        raise ApiError(422, str(exc)) from None
    images = [encode_png(image, infotext) for image, infotext in zip(result.images, result.infotexts)] \
        if body.send_images else []
    info = processed_info(body, plan, result, model, timestamp)
    parameters = body.model_dump()
    if not getattr(body, "include_init_images", True):
        parameters.update(init_images=None, mask=None)
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


# -- training --------------------------------------------------------------------------------------------------
def training_config(ctx, body: schemas.TrainHypernetworkRequest):
    """The run's :class:`~extension.training.TrainingConfig`: the request, then the settings, then the UI's
    defaults; names and values checked (404 for an unknown network or template, 422 otherwise)."""
    from ..training import TrainingConfig, TrainingError
    from ..training.templates import list_templates

    name = body.hypernetwork_name
    if not name or not str(name).strip():
        raise ApiError(422, "hypernetwork_name: give the name of a hypernetwork from /sdapi/v1/hypernetworks")
    try:
        opts.check_network_name(ctx, str(name).strip(), "hypernetwork_name")
    except opts.OptionError as exc:
        raise ApiError(exc.status, str(exc), "NotFound" if exc.status == 404 else "BadRequest") from None
    if body.template_filename is not None:
        template = str(body.template_filename).strip()
        if Path(template).name != template or template in ("", ".", ".."):
            raise ApiError(422, f"template_filename: {template!r} is a path; give a file name from the templates "
                                f"folder ({', '.join(list_templates())})")
        if template not in list_templates():
            raise ApiError(404, f"template_filename: no template {template!r} (available: "
                                f"{', '.join(list_templates()) or 'none'})", "NotFound")
    defaults = {key: ctx.settings.get(key) for key in opts.TRAINING_OPTIONS if key in ctx.settings.specs}
    defaults["clip_skip"] = ctx.settings.get(opts.CLIP_SKIP, 1)
    values = body.model_dump(exclude_none=True)
    try:
        config = TrainingConfig.from_request(values, **defaults)
        config.validated()
    except TrainingError as exc:
        raise ApiError(422, str(exc)) from None
    except TypeError as exc:  # a field of the wrong kind
        raise ApiError(422, f"training parameters: {exc}") from None
    check_training_dirs(ctx, config)
    return config


def check_training_dirs(ctx, config) -> None:
    """``data_root`` and ``log_directory`` must lie in the server's training folders (``--train-data-dir``):
    a 422 before the request waits for the device (training checks them again when it starts)."""
    from ..confine import OutsideRoots, confine_dir

    roots = ctx.options.training_roots
    for field in ("data_root", "log_directory"):
        try:
            confine_dir(getattr(config, field), roots, field)
        except OutsideRoots as exc:
            raise ApiError(422, str(exc)) from None


# -- the router ------------------------------------------------------------------------------------------------
def make_router(ctx, credentials: dict[str, str]) -> APIRouter:
    """Every ``/sdapi/v1`` route for the app state ``ctx``; all behind HTTP Basic when ``credentials``."""
    dependencies = [Depends(basic_auth(credentials))] if credentials else []
    router = APIRouter(prefix=PREFIX, route_class=ApiRoute, dependencies=dependencies,
                       responses={400: {"model": schemas.ErrorResponse}, 401: {"model": schemas.ErrorResponse},
                                  404: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}})

    # -- generation ----------------------------------------------------------------------------------------
    @router.post("/txt2img", response_model=schemas.TextToImageResponse, summary="Text to image")
    def txt2img(body: schemas.Txt2ImgRequest) -> dict:
        """A generation, as AUTOMATIC1111's: ``images`` (base64 PNG with their infotext), ``parameters`` (the
        request) and ``info`` (a JSON string). It waits for the device in line with the UI's generations."""
        return generation_answer(ctx, body, plan_txt2img(ctx, body))

    @router.post("/img2img", response_model=schemas.ImageToImageResponse, summary="Image to image, inpainting")
    def img2img(body: schemas.Img2ImgRequest) -> dict:
        """AUTOMATIC1111's img2img (inpainting with ``mask``), answered as txt2img is; ``parameters`` leaves the
        pictures out unless ``include_init_images``. The hypernetwork tags of the prompt apply as in txt2img."""
        return generation_answer(ctx, body, plan_img2img(ctx, body))

    @router.get("/progress", response_model=schemas.ProgressResponse, summary="Progress of the running job")
    def progress(skip_current_image: bool = Query(False, description="leave current_image out")) -> dict:
        """The running job, whoever started it (the API, the UI, training): AUTOMATIC1111's shape, plus
        ``source`` and ``waiting`` in ``state``."""
        snapshot = ctx.jobs.progress()
        state = {"skipped": snapshot.skipped, "interrupted": snapshot.interrupted, "stopping_generation": False,
                 "job": snapshot.job, "job_count": snapshot.job_count if snapshot.active else 0,
                 "job_timestamp": snapshot.job_timestamp, "job_no": snapshot.job_no,
                 "sampling_step": snapshot.sampling_step, "sampling_steps": snapshot.sampling_steps,
                 "source": snapshot.source, "waiting": snapshot.waiting}
        if not snapshot.active:
            return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None, "textinfo": None}
        textinfo = snapshot.textinfo
        monitor = getattr(ctx, "training", None)
        if snapshot.job == "train-hypernetwork" and monitor is not None:
            textinfo = monitor.summary()
        image = None
        job = ctx.jobs.current
        if not skip_current_image and job is not None and ctx.settings.get(opts.LIVE_PREVIEWS, True):
            picture = job.preview()
            image = encode_png(picture) if picture is not None else None
        return {"progress": max(0.01, snapshot.progress), "eta_relative": snapshot.eta, "state": state,
                "current_image": image, "textinfo": textinfo}

    @router.post("/interrupt", summary="Stop the running job (a training run saves first)")
    def interrupt() -> dict:
        ctx.interrupt()
        return {}

    @router.post("/skip", summary="Stop the running generation's current batch and go on with the next")
    def skip() -> None:
        ctx.skip()
        return None

    # -- options -------------------------------------------------------------------------------------------
    options_model = schemas.options_model(opts.option_fields(ctx))

    @router.get("/options", response_model=options_model, summary="Every option (AUTOMATIC1111's names)")
    def get_options() -> dict:
        return opts.current_options(ctx)

    @router.post("/options", summary="Set options; sd_model_checkpoint loads that checkpoint")
    def set_options(values: dict[str, Any] = Body(..., openapi_examples={
            "send_seed": {"value": {"send_seed": False}},
            "checkpoint": {"value": {"sd_model_checkpoint": "demo"}}})) -> None:
        """Every value is checked before anything changes; unknown options are kept, as AUTOMATIC1111 keeps
        them. A checkpoint loads when the device is free."""
        try:
            checkpoint, store = opts.prepare(ctx, values)
        except opts.OptionError as exc:
            raise ApiError(exc.status, str(exc), "NotFound" if exc.status == 404 else "BadRequest") from None
        if checkpoint is not None:
            try:
                ctx.load_model(checkpoint)
            except ModelError as exc:
                raise ApiError(422, f"sd_model_checkpoint: {exc}") from None
        ctx.settings.update(store)
        return None

    flags_model = schemas.flags_model(_server_parser())

    @router.get("/cmd-flags", response_model=flags_model, summary="The server's command-line flags")
    def cmd_flags() -> dict:
        """Passwords are not shown (AUTOMATIC1111 showed them)."""
        flags = {}
        for action in _server_parser()._actions:  # noqa: SLF001
            if action.dest == "help":
                continue
            value = getattr(ctx.options, action.dest, action.default)
            if action.dest in ("gradio_auth", "api_auth") and value:
                value = "(hidden)"
            if isinstance(value, (list, tuple)):
                value = [str(item) for item in value]
            flags[action.dest] = str(value) if isinstance(value, Path) else value
        return flags

    # -- lists ---------------------------------------------------------------------------------------------
    @router.get("/samplers", response_model=list[schemas.SamplerItem], summary="Samplers diffusers can run")
    def get_samplers() -> list:
        return [spec.api_item() for spec in samplers.SAMPLERS if spec.scheduler_class is not None]

    @router.get("/schedulers", response_model=list[schemas.SchedulerItem], summary="Schedule types")
    def get_schedulers() -> list:
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": None,
                 "need_inner_model": False} for s in samplers.SCHEDULE_TYPES if s.overrides is not None]

    @router.get("/sd-models", response_model=list[schemas.SDModelItem], summary="Checkpoints (and the demo model)")
    def get_sd_models() -> list:
        items = []
        builtin = getattr(ctx.models, "builtin", None)
        if builtin is not None:
            from ..demo.pretrained import MODEL_DIR

            sha256 = ctx.models.builtin_sha256()  # what the infotext's "Model hash" is the start of
            items.append({"title": builtin.name, "model_name": builtin.name, "hash": sha256[:10] if sha256 else None,
                          "sha256": sha256, "filename": str(MODEL_DIR), "config": None})
        for info in ctx.models.list_checkpoints():
            items.append({"title": info.title, "model_name": info.model_name, "hash": info.shorthash,
                          "sha256": info.sha256, "filename": info.filename, "config": info.config})
        return items

    @router.post("/refresh-checkpoints", summary="Rescan the checkpoints folder")
    def refresh_checkpoints() -> None:
        ctx.models.list_checkpoints()
        return None

    @router.get("/hypernetworks", response_model=list[schemas.HypernetworkItem], summary="Hypernetworks")
    def get_hypernetworks() -> list:
        """Every hypernetwork file of the folder (every format), as of the last scan, with the error of each file
        that cannot be used (read from headers and pickles only, cached; see the cards)."""
        library = ctx.library
        return [{"name": entry.name, "path": str(entry.path), "error": library.details(entry).error}
                for entry in library.entries()]

    @router.post("/refresh-hypernetworks", response_model=schemas.RefreshHypernetworksResponse,
                 summary="Rescan the hypernetworks folder (not in AUTOMATIC1111)")
    def refresh_hypernetworks() -> dict:
        report = ctx.library.refresh()
        return {"added": list(report.added), "changed": list(report.changed), "removed": list(report.removed)}

    @router.get("/scripts", response_model=schemas.ScriptsList, summary="txt2img scripts (script_name)")
    def get_scripts() -> dict:
        return {"txt2img": [script.title().lower() for script in ctx.callbacks.scripts], "img2img": []}

    @router.get("/script-info", response_model=list[schemas.ScriptInfo], summary="Each script's script_args")
    def get_script_info() -> list:
        """AUTOMATIC1111's shape: each script's name (what ``script_name`` takes), and the ``script_args`` it
        takes in order, with their defaults and choices."""
        return [{"name": script.title().lower(), "is_alwayson": False, "is_img2img": False,
                 "args": script.api_args(ctx)} for script in ctx.callbacks.scripts]

    @router.post("/png-info", response_model=schemas.PNGInfoResponse, summary="The infotext of an image")
    def png_info(body: schemas.PNGInfoRequest) -> dict:
        """AUTOMATIC1111's answer: ``info`` (the infotext, empty when the image has none), ``items`` (its
        other text fields) and ``parameters`` (the infotext's fields, parsed as AUTOMATIC1111 parses them)."""
        from ..images import read_infotext
        from ..infotext import parse_infotext

        info, items = read_infotext(decode_picture(body.image, "image"))
        return {"info": info or "", "items": items, "parameters": parse_infotext(info or "")}

    @router.get("/loras", response_model=list[schemas.LoraItem], summary="LoRA networks (not supported: none)")
    def get_loras() -> list:
        """LoRA is not supported here (this project is about hypernetworks), so the list is empty, as
        AUTOMATIC1111's is with no LoRA files."""
        return []

    @router.post("/refresh-loras", summary="Rescan LoRA networks (not supported: nothing to do)")
    def refresh_loras() -> None:
        return None

    @router.get("/memory", response_model=schemas.MemoryResponse, summary="RAM and CUDA memory")
    def get_memory() -> dict:
        return memory()

    # What AUTOMATIC1111's own tests and clients list, and this project does not have: empty answers.
    @router.get("/upscalers", response_model=list[schemas.UpscalerItem], summary="Upscalers (none here)")
    def get_upscalers() -> list:
        return []

    @router.get("/latent-upscale-modes", response_model=list[schemas.LatentUpscalerModeItem],
                summary="Latent upscale modes (none here)")
    def get_latent_upscale_modes() -> list:
        return []

    @router.get("/sd-vae", response_model=list[schemas.SDVaeItem], summary="VAEs (each checkpoint's own here)")
    def get_sd_vae() -> list:
        return []

    @router.post("/refresh-vae", summary="Rescan VAEs (none here)")
    def refresh_vae() -> None:
        return None

    @router.get("/face-restorers", response_model=list[schemas.FaceRestorerItem], summary="Face restorers (none)")
    def get_face_restorers() -> list:
        return []

    @router.get("/realesrgan-models", response_model=list[schemas.RealesrganItem], summary="RealESRGAN (none)")
    def get_realesrgan_models() -> list:
        return []

    @router.get("/prompt-styles", response_model=list[schemas.PromptStyleItem], summary="Prompt styles (none)")
    def get_prompt_styles() -> list:
        return []

    @router.get("/embeddings", response_model=schemas.EmbeddingsResponse, summary="Embeddings (none here)")
    def get_embeddings() -> dict:
        return {"loaded": {}, "skipped": {}}

    # -- create and train ----------------------------------------------------------------------------------
    @router.post("/create/hypernetwork", response_model=schemas.CreateResponse, summary="Create a hypernetwork")
    def create_hypernetwork(body: schemas.CreateHypernetworkRequest) -> dict:
        """AUTOMATIC1111's Create: a new file in the hypernetworks folder; what is missing takes the Train tab's
        default (``enable_sizes``: the loaded model's widths)."""
        from ..training import TrainingError
        from ..training.create import NameTaken, create_hypernetwork as create

        sizes = body.enable_sizes
        if not sizes:
            sizes = sorted(ctx.current_model().attention_widths())
        try:
            sizes = [int(size) for size in sizes]
        except (TypeError, ValueError):
            raise ApiError(422, f"enable_sizes must be attention widths (whole numbers), got {body.enable_sizes!r}")
        try:
            path = create(body.name, ctx.library, sizes=sizes, layer_structure=body.layer_structure or "1, 2, 1",
                          activation_func=body.activation_func or "linear", weight_init=body.weight_init or "Normal",
                          add_layer_norm=body.add_layer_norm, use_dropout=body.use_dropout,
                          dropout_structure=body.dropout_structure or "0, 0, 0",
                          activate_output=body.activate_output, overwrite=body.overwrite_old,
                          file_format=body.file_format)
        except TrainingError as exc:
            status = 409 if isinstance(exc, NameTaken) else 422
            raise ApiError(status, str(exc), "Conflict" if status == 409 else "BadRequest") from None
        return {"info": f"create hypernetwork filename: {path}"}

    @router.post("/train/hypernetwork", response_model=schemas.TrainResponse, summary="Train a hypernetwork")
    def train_hypernetwork(body: schemas.TrainHypernetworkRequest) -> dict:
        """AUTOMATIC1111's Train: answers when training ends (``/progress`` follows it meanwhile, ``/interrupt``
        stops it with a save) with ``info`` in AUTOMATIC1111's words. Only ``hypernetwork_name`` and
        ``data_root`` are needed; the rest take the settings' and the Train tab's defaults."""
        from ..training import TrainingError

        config = training_config(ctx, body)
        try:
            result = ctx.train(config, source="api", template_paths=False)
        except TrainingError as exc:
            raise ApiError(422, str(exc)) from None
        except (HypernetworkError, ModelError) as exc:
            raise ApiError(422, str(exc)) from None
        return {"info": result.info()}

    return router


def _server_parser():
    from ..cli_parser import server_parser

    return server_parser()


def memory() -> dict:
    """AUTOMATIC1111's ``/memory`` answer: the process and system RAM, and CUDA's counters when there is CUDA."""
    try:
        import psutil

        process = psutil.Process(os.getpid())
        total = psutil.virtual_memory().total
        used = process.memory_info().rss
        ram = {"free": total - used, "used": used, "total": total}
    except Exception as exc:  # noqa: BLE001
        ram = {"error": str(exc)}
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            pair = lambda key: {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}  # noqa: E731
            cuda = {"system": {"free": free, "used": total - free, "total": total},
                    "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
                    "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
                    "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
        else:
            cuda = {"error": "unavailable"}
    except Exception as exc:  # noqa: BLE001
        cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}


def add_request_log(app: FastAPI) -> None:
    """``--api-log``: one line per ``/sdapi`` request (method, path, status, seconds)."""

    @app.middleware("http")
    async def log_api_request(request: Request, call_next):
        started = time.monotonic()
        response = await call_next(request)
        if request.url.path.startswith("/sdapi"):
            client = request.client.host if request.client else "-"
            print(f"API {request.method} {request.url.path} {response.status_code} {client} "
                  f"{time.monotonic() - started:.3f}s", flush=True)
        return response


ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def add_missing_route_answer(app: FastAPI, ctx) -> None:
    """Answer a path under ``/sdapi`` that no route serves in the project's error shape: a 404 that says the
    route does not exist (not a missing model: FastAPI's bare ``{"detail": "Not Found"}`` could be either), or a
    405 naming the methods the path takes. Added after every other route (the API's, a script's
    ``app_started`` ones), behind the same credentials."""
    from starlette.routing import Match, Mount

    options = ctx.options
    credentials = api_credentials(getattr(options, "api_auth", None), getattr(options, "api_auth_path", None))
    catch_all = "/sdapi/{rest:path}"

    def missing_route(request: Request, rest: str):
        path = request.url.path
        others = [route for route in request.app.router.routes  # not this one, nor Gradio's mount of every path
                  if getattr(route, "path", None) != catch_all and not isinstance(route, Mount)]
        allowed = [method for method in ALL_METHODS  # what the other routes take at this path
                   if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in others)]
        if allowed:
            return error_response(405, "MethodNotAllowed", f"{path} takes {', '.join(allowed)}, not "
                                  f"{request.method}", headers={"Allow": ", ".join(allowed)})
        raise ApiError(404, f"no such route: {request.method} {path} (the API's routes are listed at /docs)",
                       "NoSuchRoute")

    app.router.add_api_route(catch_all, missing_route, methods=list(ALL_METHODS), include_in_schema=False,
                      route_class_override=ApiRoute,
                      dependencies=[Depends(basic_auth(credentials))] if credentials else None)


def mount_api(app: FastAPI, ctx) -> None:
    """Add every ``/sdapi/v1`` route to ``app`` (before Gradio's catch-all mount) for app state ``ctx``."""
    options = ctx.options
    credentials = api_credentials(getattr(options, "api_auth", None), getattr(options, "api_auth_path", None))
    app.include_router(make_router(ctx, credentials))
    if credentials:  # the schema asks for the same credentials (see extension.api.auth)
        app.add_middleware(SchemaAuth, credentials=credentials)
    if getattr(options, "api_log", False):
        add_request_log(app)
