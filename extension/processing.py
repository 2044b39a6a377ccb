"""txt2img the AUTOMATIC1111 way, on a diffusers pipeline, with hypernetworks per call.

One call of :func:`txt2img` is one A1111 "Generate": ``n_iter`` batches of ``batch_size`` images, image
``i`` seeded with ``seed + i``. What it does, in order:

1. resolve the sampler and schedule type (:mod:`extension.samplers`);
2. take the ``<hypernet:NAME:MULT>`` tags out of the prompt (:mod:`extension.prompt.tags`), load the networks
   (:class:`~extension.library.HypernetworkLibrary`), warn about networks that do not fit the model;
3. encode prompt and negative prompt with A1111's emphasis, chunking and CLIP skip
   (:mod:`extension.prompt.conditioning`), each text their prompt editing schedules (:mod:`extension.prompt.schedule`),
   pass the first step's embeddings to the pipeline and switch them between steps where the text changes;
   when prompt and negative prompt differ in length, mask the shorter one's padding (:mod:`extension.prompt.padding`)
   unless ``pad_cond_uncond`` asks for A1111's padded way;
4. draw each image's initial noise from its own CPU generator (same images on any device), run the
   pipeline with the networks passed per call (``cross_attention_kwargs``), report progress and stop
   between steps when ``interrupt`` is set;
5. write A1111's infotext into each PNG's ``parameters`` chunk and save under
   ``<outdir>/txt2img-images/YYYY-MM-DD/00000-<seed>.png``.

Problems with tags, names, files and compatibility become ``messages`` in the result and the images are
still made. Settings that cannot make an image (zero steps, a zero size) raise ``ValueError``.

No global state: each call builds its own scheduler and pipeline view sharing the model's modules, so
calls on different threads do not disturb one another (the hypernetwork processors are installed on the
shared UNet once and are stateless).
"""
from __future__ import annotations

import dataclasses
import datetime
import inspect
import random
import re
from pathlib import Path
from typing import Callable

import torch

from .images import save_png
from .hypernetwork.attention import (KWARG, ActiveHypernetworks, attention_widths, compatibility_messages,
                        install_hypernetwork_processors, for_model)
from .infotext import format_infotext, generation_parameters, hypernet_hashes, parse_infotext
from .prompt.tags import hypernetwork_requests, parse_prompt
from .prompt.conditioning import Conditioning, ScheduledConditioning
from .prompt.padding import KWARG as PADDING_KWARG, TextPadding
from .preview import LatentPreview
from .samplers import DEFAULT_SAMPLER, build_scheduler, resolve_sampler

MAX_SEED = 4294967294  # A1111 draws random seeds below this
SIZE_STEP = 8
OUTPUT_SUBDIR = "txt2img-images"

ProgressCallback = Callable[[int, int], None]


@dataclasses.dataclass
class Txt2ImgRequest:
    """The txt2img settings A1111 users know (A1111's defaults, sampler aside)."""

    prompt: str = ""
    negative_prompt: str = ""
    sampler_name: str = DEFAULT_SAMPLER
    scheduler: str = "Automatic"  # A1111's "Schedule type"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1  # -1: random
    batch_size: int = 1
    n_iter: int = 1  # A1111's "Batch count"
    clip_skip: int = 1  # 1 = last CLIP layer, 2 = penultimate (A1111's "Clip skip")
    # A1111's "Pad prompt/negative prompt" (pad_cond_uncond; infotext "Pad conds"); None: off, A1111's default
    pad_cond_uncond: bool | None = None

    @classmethod
    def from_infotext(cls, text: str, **overrides) -> "Txt2ImgRequest":
        """The request an infotext describes (pasting it back); ``overrides`` set what it does not hold."""
        fields = parse_infotext(text)
        defaults = cls()
        values = dict(
            prompt=fields["Prompt"], negative_prompt=fields["Negative prompt"],
            sampler_name=str(fields.get("Sampler", defaults.sampler_name)),
            scheduler=str(fields.get("Schedule type", defaults.scheduler)),
            steps=_as(int, fields.get("Steps"), defaults.steps),
            cfg_scale=_as(float, fields.get("CFG scale"), defaults.cfg_scale),
            width=_as(int, fields.get("Size-1"), defaults.width),
            height=_as(int, fields.get("Size-2"), defaults.height),
            seed=_as(int, fields.get("Seed"), defaults.seed),
            clip_skip=_as(int, fields.get("Clip skip"), defaults.clip_skip),
            pad_cond_uncond=True if str(fields.get("Pad conds", "")).lower() == "true" else None,
        )
        values.update(overrides)
        return cls(**values)


def _as(kind, value, default):
    try:
        return kind(value) if value is not None else default
    except (TypeError, ValueError):
        return default


@dataclasses.dataclass
class Txt2ImgResult:
    """Images and what goes with them, one entry per image; ``messages`` are for the user."""

    images: list = dataclasses.field(default_factory=list)  # PIL images
    infotexts: list[str] = dataclasses.field(default_factory=list)
    seeds: list[int] = dataclasses.field(default_factory=list)
    messages: list[str] = dataclasses.field(default_factory=list)
    paths: list[Path] = dataclasses.field(default_factory=list)
    request: Txt2ImgRequest | None = None  # as run: seed resolved, sampler/schedule normalised
    hypernetworks: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # applied, in order
    interrupted: bool = False

    @property
    def info(self) -> str:
        """The first image's infotext (what A1111 shows under the gallery)."""
        return self.infotexts[0] if self.infotexts else ""


def validate(request: Txt2ImgRequest) -> tuple[Txt2ImgRequest, list[str]]:
    """Check numbers; round width and height down to multiples of 8 (with a message)."""
    messages = []
    if int(request.steps) < 1:
        raise ValueError(f"steps must be at least 1, got {request.steps}")
    if int(request.batch_size) < 1 or int(request.n_iter) < 1:
        raise ValueError(f"batch size and batch count must be at least 1, got {request.batch_size} and {request.n_iter}")
    if int(request.clip_skip) < 1:
        raise ValueError(f"clip skip must be at least 1, got {request.clip_skip}")
    sizes = {}
    for field in ("width", "height"):
        value = int(getattr(request, field))
        rounded = value - value % SIZE_STEP
        if rounded < SIZE_STEP:
            raise ValueError(f"{field} must be at least {SIZE_STEP}, got {value}")
        if rounded != value:
            messages.append(f"{field.capitalize()} {value} is not a multiple of {SIZE_STEP}; using {rounded}.")
        sizes[field] = rounded
    return dataclasses.replace(request, steps=int(request.steps), cfg_scale=float(request.cfg_scale),
                               batch_size=int(request.batch_size), n_iter=int(request.n_iter),
                               clip_skip=int(request.clip_skip), seed=int(request.seed), **sizes), messages


def resolve_seed(seed: int) -> int:
    """A1111: -1 (or any negative) means a random seed."""
    return int(seed) if int(seed) >= 0 else random.SystemRandom().randrange(MAX_SEED)


def pipeline_view(pipe, scheduler, cls=None):
    """A new pipeline object sharing ``pipe``'s modules, with its own scheduler and per-call state.

    A diffusers pipeline keeps per-call state on itself, so concurrent calls need one view each. ``cls``
    makes another pipeline class on the same modules (img2img's); by default ``pipe``'s own.
    """
    cls = cls or type(pipe)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: module for name, module in pipe.components.items() if name in params}
    kwargs["scheduler"] = scheduler
    for name in params:
        if name not in kwargs and name in pipe.config and not name.startswith("_"):
            kwargs[name] = pipe.config[name]
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = getattr(pipe, "safety_checker", None) is not None
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    view = cls(**kwargs)
    view.set_progress_bar_config(disable=True)
    return view


def initial_noise(pipe, seeds: list[int], width: int, height: int) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Each image's starting latents from its own CPU generator seeded with its seed (A1111 "RNG: CPU").

    The generators are returned too: ancestral and SDE samplers keep drawing each image's noise from them.
    """
    channels = pipe.unet.config.in_channels
    factor = pipe.vae_scale_factor
    shape = (channels, height // factor, width // factor)
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    latents = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    return latents, generators


@dataclasses.dataclass(frozen=True)
class ResolvedHypernetwork:
    """A network a prompt tag asked for: the name as written in the tag, the loaded network, its multiplier."""

    name: str
    network: object  # extension.hypernetwork.Hypernetwork
    multiplier: float


def resolve_hypernetworks(prompt: str, model, library) -> tuple[str, list[ResolvedHypernetwork], list[str]]:
    """``(prompt for the text encoder, networks in prompt order, messages)`` for a prompt and a model."""
    cleaned, tags = parse_prompt(prompt)
    requests, messages = hypernetwork_requests(tags)
    resolved: list[ResolvedHypernetwork] = []
    if requests and library is None:
        messages.append("No hypernetworks folder is set; <hypernet:...> tags were ignored.")
        requests = []
    for request in requests:
        networks, resolve_messages = library.resolve([request])
        messages.extend(resolve_messages)
        resolved.extend(ResolvedHypernetwork(request.name, hn, multiplier) for hn, multiplier in networks)
    widths = attention_widths(model.pipe)
    for seen, entry in enumerate(resolved):
        if any(other.network is entry.network for other in resolved[:seen]):
            continue
        messages.extend(compatibility_messages(entry.network, widths, checkpoint_name=getattr(model, "name", None),
                                               checkpoint_hash=getattr(model, "shorthash", None)))
    return cleaned, resolved, messages


def output_directory(outdir: Path, when: datetime.date | None = None, subdir: str = OUTPUT_SUBDIR) -> Path:
    return Path(outdir) / subdir / (when or datetime.date.today()).isoformat()


def loop_tensor_names(pipe) -> list[str]:
    """The sampling loop's tensors a step callback must see to change the conditioning."""
    names = ["latents", "prompt_embeds"]
    return names + ["add_text_embeds"] if "add_text_embeds" in pipe._callback_tensor_inputs else names


def loop_conditioning(pipe, conditioning: Conditioning, batch_size: int, current: dict) -> dict:
    """``conditioning`` as the pipeline's loop holds it (negative batch first when CFG is on), in the dtype
    and on the device of what it replaces."""
    kwargs = conditioning.pipeline_kwargs(batch_size)

    def batched(negative, positive, like):
        tensor = torch.cat([negative, positive]) if pipe.do_classifier_free_guidance else positive
        return tensor.to(device=like.device, dtype=like.dtype)

    tensors = {"prompt_embeds": batched(kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"],
                                        current["prompt_embeds"])}
    if "add_text_embeds" in current:
        tensors["add_text_embeds"] = batched(kwargs["negative_pooled_prompt_embeds"],
                                             kwargs["pooled_prompt_embeds"], current["add_text_embeds"])
    return tensors


class Txt2ImgMode:
    """What a generation does where txt2img and img2img differ; :func:`sample` does the rest.

    txt2img starts every image from pure noise over the whole schedule; :class:`extension.img2img.Img2ImgMode`
    starts from an encoded picture part-way down it, blends a mask between steps and pastes the original back.
    """

    subdir = OUTPUT_SUBDIR

    def steps_run(self, request) -> int:
        """Sampling steps actually run (img2img runs fewer)."""
        return request.steps

    def extra_params(self) -> dict:
        """Infotext fields of this kind of generation (A1111's ``extra_generation_params``)."""
        return {}

    def pipeline(self, pipe, scheduler):
        return pipeline_view(pipe, scheduler)

    def batch_kwargs(self, view, request, batch_index: int, seeds: list[int]) -> dict:
        """The pipeline call's image arguments for one batch (each image's noise from its seed)."""
        latents, generators = initial_noise(view, seeds, request.width, request.height)
        return dict(width=request.width, height=request.height, generator=generators,
                    latents=latents.to(device=view.unet.device, dtype=view.unet.dtype))

    def after_step(self, view, step: int, callback_kwargs: dict, last: bool) -> None:
        """Called after every sampling step; ``last`` when no step follows (the end, or a stop)."""

    def finish(self, images: list, batch_index: int) -> list:
        """The batch's decoded images as the user gets them."""
        return images


def txt2img(request: Txt2ImgRequest, model, library, *, outdir: Path | None = None,
            progress: ProgressCallback | None = None, job=None) -> Txt2ImgResult:
    """Generate images for ``request`` with ``model`` (a :class:`~extension.checkpoints.manager.LoadedModel`).

    ``library`` (a :class:`~extension.library.HypernetworkLibrary`, or None) resolves ``<hypernet:...>``
    tags. ``progress(step, total)`` is called after every sampling step, counting over all batches.
    ``job`` (an :class:`extension.jobs.Job`, or None) is where the request runs: once ``job.interrupted`` is
    set, sampling stops after the current step, the images of the current batch are decoded from where they
    got to (as in A1111) and later batches are skipped; ``job.skipped`` does the same for the current batch
    only (it is cleared, and the next batch runs). Images are saved only when ``outdir`` is given.

    Args:
        request: the settings; see :class:`Txt2ImgRequest`.
        model: the loaded checkpoint.
        library: the hypernetworks folder, or None.
        outdir: where images are saved (``<outdir>/txt2img-images/DATE/``), or None.
        progress: ``progress(step, total)`` after each step.
        job: the running job, for interrupt, skip and progress displays.

    Returns:
        A :class:`Txt2ImgResult`; problems with tags and files are in its ``messages``.
    """
    request, messages = validate(request)
    return sample(request, Txt2ImgMode(), model, library, messages, outdir=outdir, progress=progress, job=job)


def sample(request: Txt2ImgRequest, mode: Txt2ImgMode, model, library, messages: list[str], *,
           outdir: Path | None = None, progress: ProgressCallback | None = None, job=None) -> Txt2ImgResult:
    """The generation of a validated ``request`` (see :func:`txt2img`), what differs done by ``mode``."""
    choice = resolve_sampler(request.sampler_name, request.scheduler)
    messages.extend(choice.messages)
    request = dataclasses.replace(request, seed=resolve_seed(request.seed), sampler_name=choice.sampler.name,
                                  scheduler=choice.schedule.label)
    pipe = model.pipe
    architecture = getattr(model, "architecture", None)
    if request.clip_skip > 1 and architecture in ("sd2", "sd2-v", "sdxl"):
        messages.append(f"Clip skip is ignored by {architecture} models, as in AUTOMATIC1111.")

    text, resolved, network_messages = resolve_hypernetworks(request.prompt, model, library)
    messages.extend(network_messages)
    if any(re.search(r"\bAND\b", prompt) for prompt in (text, request.negative_prompt)):
        messages.append("AND (composable prompts) is not supported: the prompt is encoded as one text.")
    # prompt editing counts over the whole schedule (A1111: img2img too); the UNet runs for the steps run
    evaluations = choice.sampler.total_steps(request.steps)
    evaluations_run = choice.sampler.total_steps(mode.steps_run(request))
    # one object serves every batch: the UNet calls it will see weigh the one-off cost of folding
    active = ActiveHypernetworks(for_model([(entry.network, entry.multiplier) for entry in resolved], pipe),
                                 expected_calls=evaluations_run * request.n_iter)
    conditioning = ScheduledConditioning(pipe, text, request.negative_prompt, evaluations,
                                         clip_skip=request.clip_skip, architecture=architecture,
                                         pad_cond_uncond=bool(request.pad_cond_uncond))
    if active or conditioning.masks_padding:
        install_hypernetwork_processors(pipe)
    # A1111 writes "Pad conds" when its last UNet evaluation padded
    extra_params = {**mode.extra_params(),
                    **({"Pad conds": True} if conditioning.at(evaluations_run - 1).padded else {})} or None
    hashes = hypernet_hashes((entry.name, entry.network.shorthash()) for entry in resolved)
    result = Txt2ImgResult(messages=messages, request=request,
                           hypernetworks=[(entry.name, entry.multiplier) for entry in resolved])
    directory = output_directory(outdir, subdir=mode.subdir) if outdir is not None else None
    seeds = [request.seed + i for i in range(request.n_iter * request.batch_size)]
    done = 0
    job_base = job.job_no if job is not None else 0  # a script's several generations count on in one job
    preview = LatentPreview(pipe, request.width, request.height)
    if job is not None:
        job.set_preview(preview.image)  # drawn only when a progress display asks (API current_image)

    for batch in range(request.n_iter):
        if job is not None and job.interrupted.is_set():
            result.interrupted = True
            break
        batch_seeds = seeds[batch * request.batch_size:(batch + 1) * request.batch_size]
        view = mode.pipeline(pipe, build_scheduler(choice, pipe.scheduler.config, seeds=batch_seeds))
        padding = TextPadding(len(batch_seeds), conditioning.at(0)) if conditioning.masks_padding else None
        cross_attention_kwargs = {key: value for key, value in ((KWARG, active), (PADDING_KWARG, padding))
                                  if value} or None

        def on_step_end(p, step, timestep, callback_kwargs, batch=batch, batch_size=len(batch_seeds),
                        padding=padding):
            nonlocal done
            done = batch * p.num_timesteps + step + 1
            preview.update(callback_kwargs["latents"])
            if progress is not None:
                progress(done, p.num_timesteps * request.n_iter)
            if job is not None:
                job.update(step + 1, p.num_timesteps, job_no=job_base + batch)
                if job.interrupted.is_set() or job.skipped.is_set():
                    p._interrupt = True
            mode.after_step(p, step, callback_kwargs, last=p.interrupt or step + 1 >= p.num_timesteps)
            if conditioning.key(step + 1) != conditioning.key(step):  # prompt editing: the next text
                callback_kwargs.update(loop_conditioning(p, conditioning.at(step + 1), batch_size, callback_kwargs))
                if padding is not None:
                    padding.follow(conditioning.at(step + 1))
            return callback_kwargs

        output = view(
            **conditioning.at(0).pipeline_kwargs(len(batch_seeds)),
            **mode.batch_kwargs(view, request, batch, batch_seeds),
            num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
            cross_attention_kwargs=cross_attention_kwargs, callback_on_step_end=on_step_end, output_type="pil",
            callback_on_step_end_tensor_inputs=loop_tensor_names(view) if conditioning.varies else ["latents"],
        )
        for image, seed in zip(mode.finish(output.images, batch), batch_seeds):
            params = generation_parameters(
                steps=request.steps, sampler=choice.sampler.name, schedule_type=choice.schedule.label,
                cfg_scale=request.cfg_scale, seed=seed, width=request.width, height=request.height,
                model_hash=getattr(model, "shorthash", None), model_name=getattr(model, "name", None),
                clip_skip=request.clip_skip, rng="CPU", hypernet_hashes=hashes, extra=extra_params)
            infotext = format_infotext(request.prompt, request.negative_prompt, params)
            result.images.append(image)
            result.infotexts.append(infotext)
            result.seeds.append(seed)
            if directory is not None:
                result.paths.append(save_png(image, directory, str(seed), infotext))
        if job is not None and job.skipped.is_set() and not job.interrupted.is_set():
            job.skipped.clear()  # A1111: skip ends this batch; the next one runs
            messages.append(f"Skipped: batch {batch + 1} of {request.n_iter} was stopped early.")
            continue
        if view.interrupt:
            result.interrupted = True
            break

    if result.interrupted:
        messages.append(f"Interrupted: {len(result.images)} of {len(seeds)} images made"
                        f"{' (the last batch unfinished)' if result.images else ''}.")
    return result
