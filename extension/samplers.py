"""AUTOMATIC1111 sampler names and schedule types, mapped to diffusers schedulers.

A1111 (>= 1.9) splits a *sampler* ("DPM++ 2M") from a *schedule type* ("Karras"). "Automatic" means the
sampler's own default, which is not always uniform (DPM++ 2M defaults to Karras, DPM++ 2M SDE to
Exponential). Legacy combined names ("DPM++ 2M Karras") still work: the schedule suffix is split off, as
A1111's ``get_sampler_and_scheduler`` does. Exact pixel parity with A1111 is not expected (diffusers'
k-diffusion ports discretise sigmas slightly differently); the same name gives the same algorithm.

Everything here is immutable tables and pure functions; a scheduler is built fresh for every generation.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

DEFAULT_SAMPLER = "Euler a"
AUTOMATIC = "automatic"


@dataclasses.dataclass(frozen=True)
class ScheduleType:
    """One A1111 schedule type; ``overrides`` are the diffusers config changes, ``None`` = not available."""

    name: str  # A1111's key: "karras"
    label: str  # what the UI and infotexts show: "Karras"
    aliases: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] | None = ()


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One A1111 sampler and the diffusers scheduler that implements it."""

    name: str
    aliases: tuple[str, ...]
    scheduler_class: str | None  # a ``diffusers`` class name; None = no diffusers equivalent
    options: tuple[tuple[str, Any], ...] = ()
    default_schedule: str | None = None  # A1111's ``options["scheduler"]``; None: "Automatic" is uniform
    uses_schedule_types: bool = True  # False for A1111's timestep samplers (DDIM, PLMS, UniPC)
    supported_schedules: tuple[str, ...] | None = None  # None = every available schedule type
    approximate: bool = False  # diffusers' closest relative, not the same algorithm
    brownian_noise: bool = False  # seeds its Brownian tree from the image seeds (A1111 does)
    second_order: bool = False  # two UNet evaluations per step, here as in A1111

    def total_steps(self, steps: int) -> int:
        """UNet evaluations A1111 plans for ``steps`` (what prompt-editing schedules count): twice the steps
        for second-order samplers."""
        return steps * 2 if self.second_order else steps

    def api_item(self) -> dict:
        """The item of ``GET /sdapi/v1/samplers``."""
        options = {"scheduler": self.default_schedule} if self.default_schedule else {}
        return {"name": self.name, "aliases": list(self.aliases), "options": options}


_UNIFORM = (("timestep_spacing", "linspace"),)
# A1111's timestep samplers use timesteps 1, 1 + 1000 // steps, ...: diffusers' "leading" spacing, offset 1.
_A1111_TIMESTEPS = (("timestep_spacing", "leading"), ("steps_offset", 1), ("set_alpha_to_one", False))
_SIGMA_FLAGS = (("use_karras_sigmas", False), ("use_exponential_sigmas", False), ("use_beta_sigmas", False))

SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform", overrides=_UNIFORM),
    ScheduleType("karras", "Karras", overrides=_UNIFORM + (("use_karras_sigmas", True),)),
    ScheduleType("exponential", "Exponential", overrides=_UNIFORM + (("use_exponential_sigmas", True),)),
    ScheduleType("polyexponential", "Polyexponential", overrides=None),
    ScheduleType("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), overrides=(("timestep_spacing", "trailing"),)),
    ScheduleType("kl_optimal", "KL Optimal", overrides=None),
    ScheduleType("align_your_steps", "Align Your Steps", overrides=None),
    ScheduleType("simple", "Simple", overrides=(("timestep_spacing", "trailing"),)),
    ScheduleType("normal", "Normal", overrides=_UNIFORM),
    ScheduleType("ddim", "DDIM", overrides=(("timestep_spacing", "leading"), ("steps_offset", 1))),
    ScheduleType("beta", "Beta", overrides=_UNIFORM + (("use_beta_sigmas", True),)),
)

_SIGMA_SCHEDULES = ("uniform", "karras", "exponential", "sgm_uniform", "simple", "normal", "ddim", "beta")
_SPACING_ONLY = ("uniform", "sgm_uniform", "simple", "normal", "ddim")

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint")),
                default_schedule="karras"),
    SamplerSpec("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", default_schedule="karras",
                brownian_noise=True, second_order=True),
    SamplerSpec("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint")),
                default_schedule="exponential"),
    SamplerSpec("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "heun")),
                default_schedule="exponential", approximate=True),
    # A1111 runs it with two evaluations per step; diffusers' single-step solver with one (hence approximate).
    SamplerSpec("DPM++ 2S a", ("k_dpmpp_2s_a",), "DPMSolverSinglestepScheduler",
                (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("lower_order_final", True)),
                default_schedule="karras", approximate=True),
    SamplerSpec("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3)), default_schedule="exponential",
                approximate=True),
    SamplerSpec("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler",
                supported_schedules=_SPACING_ONLY),
    SamplerSpec("Euler", ("k_euler",), "EulerDiscreteScheduler"),
    SamplerSpec("LMS", ("k_lms",), "LMSDiscreteScheduler"),
    SamplerSpec("Heun", ("k_heun",), "HeunDiscreteScheduler", second_order=True),
    SamplerSpec("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", second_order=True),
    SamplerSpec("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", second_order=True),
    SamplerSpec("DPM fast", ("k_dpm_fast",), None),
    SamplerSpec("DPM adaptive", ("k_dpm_ad",), None),
    SamplerSpec("Restart", ("restart",), None, default_schedule="karras"),
    SamplerSpec("DDIM", ("ddim",), "DDIMScheduler", _A1111_TIMESTEPS, uses_schedule_types=False),
    SamplerSpec("DDIM CFG++", ("ddim_cfgpp",), None, uses_schedule_types=False),
    SamplerSpec("PLMS", ("plms",), "PNDMScheduler", _A1111_TIMESTEPS + (("skip_prk_steps", True),),
                uses_schedule_types=False),
    SamplerSpec("UniPC", ("unipc",), "UniPCMultistepScheduler",
                (("timestep_spacing", "leading"), ("steps_offset", 1)) + _SIGMA_FLAGS, uses_schedule_types=False),
    SamplerSpec("LCM", ("k_lcm",), "LCMScheduler", (("timestep_spacing", "leading"), ("steps_offset", 1)),
                uses_schedule_types=False),
)


def _sampler_map() -> dict[str, SamplerSpec]:
    table = {}
    for spec in SAMPLERS:
        for key in (spec.name, *spec.aliases):
            table[key] = table.get(key) or spec
            table.setdefault(key.lower(), spec)
    return table


def _schedule_map() -> dict[str, ScheduleType]:
    table = {}
    for schedule in SCHEDULE_TYPES:
        for key in (schedule.name, schedule.label, *schedule.aliases):
            table.setdefault(key, schedule)
            table.setdefault(key.lower(), schedule)
    return table


def find_sampler(name: str) -> SamplerSpec | None:
    """The sampler called ``name`` or one of its aliases (case-insensitive), or None."""
    table = _sampler_map()
    return table.get(name) or table.get(name.strip().lower())


def find_schedule_type(name: str | None) -> ScheduleType | None:
    if not name:
        return None
    table = _schedule_map()
    return table.get(name) or table.get(name.strip().lower())


@dataclasses.dataclass(frozen=True)
class SamplerChoice:
    """A resolved sampler and schedule type, and what the user should be told about the choice."""

    sampler: SamplerSpec
    schedule: ScheduleType  # as requested ("Automatic" when it is the sampler's default)
    messages: tuple[str, ...] = ()

    @property
    def effective_schedule(self) -> ScheduleType:
        """The schedule actually used: the sampler's default for "Automatic"."""
        if self.schedule.name == AUTOMATIC:
            return find_schedule_type(self.sampler.default_schedule or "uniform")
        return self.schedule


def split_legacy_name(sampler_name: str) -> tuple[str, ScheduleType | None]:
    """``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", Karras)``; names without a schedule suffix are unchanged."""
    for schedule in SCHEDULE_TYPES:
        for option in (schedule.label, *schedule.aliases):
            if sampler_name.endswith(" " + option) and find_sampler(sampler_name[: -len(option) - 1]):
                return sampler_name[: -len(option) - 1], schedule
    return sampler_name, None


def resolve_sampler(sampler_name: str | None, scheduler: str | None = None) -> SamplerChoice:
    """A1111's ``get_sampler_and_scheduler``: aliases, legacy combined names, "Automatic" normalisation.

    Unknown or unavailable names fall back to :data:`DEFAULT_SAMPLER` with a message (A1111 falls back
    silently); so does a schedule type diffusers cannot do, or one the sampler cannot use.
    """
    messages = []
    schedule = find_schedule_type(scheduler)
    if scheduler and schedule is None:
        messages.append(f"Unknown schedule type {scheduler!r}; using Automatic.")
    name = (sampler_name or DEFAULT_SAMPLER).strip()
    name, legacy_schedule = split_legacy_name(name)
    if legacy_schedule is not None:
        schedule = legacy_schedule
    spec = find_sampler(name)
    if spec is None:
        messages.append(f"Unknown sampler {sampler_name!r}; using {DEFAULT_SAMPLER}.")
        spec = find_sampler(DEFAULT_SAMPLER)
    elif spec.scheduler_class is None:
        messages.append(f"Sampler {spec.name} has no diffusers equivalent; using {DEFAULT_SAMPLER}.")
        spec = find_sampler(DEFAULT_SAMPLER)
    schedule = schedule or find_schedule_type(AUTOMATIC)
    if schedule.name == spec.default_schedule:
        schedule = find_schedule_type(AUTOMATIC)  # A1111 writes the sampler's own default as "Automatic"
    if schedule.name != AUTOMATIC:
        if not spec.uses_schedule_types:
            messages.append(f"{spec.name} ignores the schedule type ({schedule.label}), as in AUTOMATIC1111.")
        elif schedule.overrides is None:
            messages.append(f"Schedule type {schedule.label} is not available in diffusers; using Automatic.")
            schedule = find_schedule_type(AUTOMATIC)
        elif spec.supported_schedules is not None and schedule.name not in spec.supported_schedules:
            messages.append(f"{spec.name} cannot use the {schedule.label} schedule in diffusers; using Automatic.")
            schedule = find_schedule_type(AUTOMATIC)
    return SamplerChoice(spec, schedule, tuple(messages))


def scheduler_overrides(choice: SamplerChoice, seeds: list[int] | None = None) -> dict[str, Any]:
    """The config changes that turn the model's scheduler config into ``choice``'s scheduler."""
    spec = choice.sampler
    overrides: dict[str, Any] = {}
    if spec.uses_schedule_types:
        schedule = choice.effective_schedule
        if schedule.name in _SIGMA_SCHEDULES and (spec.supported_schedules is None
                                                  or schedule.name in spec.supported_schedules):
            if spec.supported_schedules is None:
                overrides.update(_SIGMA_FLAGS)
            overrides.update(dict(schedule.overrides or ()))
    overrides.update(dict(spec.options))
    if spec.brownian_noise and seeds:
        overrides["noise_sampler_seed"] = list(seeds) if len(seeds) > 1 else seeds[0]
    return overrides


def build_scheduler(choice: SamplerChoice, base_config: Mapping[str, Any], seeds: list[int] | None = None):
    """A fresh diffusers scheduler for ``choice``, keeping the model's betas and prediction type.

    ``seeds`` (one per image) seed the Brownian tree of SDE samplers, as A1111 does.
    """
    import diffusers

    cls = getattr(diffusers, choice.sampler.scheduler_class)
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {key: value for key, value in dict(base_config).items() if key in accepted}
    config.update({key: value for key, value in scheduler_overrides(choice, seeds).items() if key in accepted})
    return cls.from_config(config)


def sampler_names() -> list[str]:
    """The samplers diffusers can run, in A1111's UI order."""
    return [spec.name for spec in SAMPLERS if spec.scheduler_class is not None]


def schedule_type_labels() -> list[str]:
    """The schedule types diffusers can follow, in A1111's UI order."""
    return [schedule.label for schedule in SCHEDULE_TYPES if schedule.overrides is not None]


def sampler_api_items() -> list[dict]:
    """``GET /sdapi/v1/samplers``: only the samplers this project can run."""
    return [spec.api_item() for spec in SAMPLERS if spec.scheduler_class is not None]


def schedule_type_api_items() -> list[dict]:
    """``GET /sdapi/v1/schedulers``: only the schedule types this project can follow."""
    rho = {"karras": 7.0, "polyexponential": 1.0}
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
             "default_rho": rho.get(s.name, -1), "need_inner_model": s.name in _SPACING_ONLY + ("beta",)}
            for s in SCHEDULE_TYPES if s.overrides is not None]
