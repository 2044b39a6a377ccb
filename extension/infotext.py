"""AUTOMATIC1111's infotext: the "parameters" text of a generated PNG, written and read back.

Format (A1111's ``create_infotext``)::

    a cat <hypernet:foo:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Hypernet hashes: "foo: 0123456789"

The prompt keeps its ``<hypernet:...>`` tags. Values holding ``,``, ``:`` or a newline are JSON-quoted.
``Clip skip`` is written only when it is above 1. ``Hypernet hashes`` is this project's addition (A1111
writes none; its ``Lora hashes`` field has the same shape).

Reading follows A1111's ``parse_generation_parameters``, including its legacy conversions: ``Hypernet: X``
and ``Hypernet strength: Y`` (infotexts of Oct 2022 - Jan 2023) become a ``<hypernet:X:Y>`` tag appended to
the prompt, and a legacy combined sampler name ("DPM++ 2M Karras") is split into sampler and schedule type.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from .samplers import find_sampler, split_legacy_name

_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")

# Fields turned into numbers when read back (others stay strings, as A1111 leaves them).
_INT_FIELDS = ("Steps", "Seed", "Clip skip", "Size-1", "Size-2", "Batch size", "Batch pos")
_FLOAT_FIELDS = ("CFG scale", "Hypernet strength", "Denoising strength")


def quote(value: Any) -> str:
    """A1111's ``quote``: JSON-quote a value holding ``,``, ``:`` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def format_number(value: float | int) -> str:
    """``7.0`` -> ``7``, ``7.5`` -> ``7.5`` (how A1111 infotexts show slider values)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def hypernet_hashes(networks: Iterable[tuple[str, str | None]]) -> str | None:
    """``"name: shorthash, name2: shorthash"`` for the networks that were applied, or None for none."""
    parts = [f"{name}: {shorthash}" for name, shorthash in networks if shorthash]
    return ", ".join(dict.fromkeys(parts)) or None


def generation_parameters(*, steps: int, sampler: str, schedule_type: str, cfg_scale: float, seed: int,
                          width: int, height: int, model_hash: str | None = None, model_name: str | None = None,
                          clip_skip: int = 1, rng: str | None = None, hypernet_hashes: str | None = None,
                          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The key/value line in A1111's order; ``None`` values are left out when formatted."""
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": format_number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash or None,
        "Model": model_name or None,
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "RNG": rng,  # A1111 writes it when noise is not drawn on the GPU
        "Hypernet hashes": hypernet_hashes,
    }
    params.update(extra or {})
    return params


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """A1111's ``create_infotext`` text from a prompt, a negative prompt and ordered parameters."""
    line = ", ".join(key if key == value else f"{key}: {quote(value)}" for key, value in params.items()
                     if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def _typed(key: str, value: str) -> Any:
    try:
        if key in _INT_FIELDS:
            return int(value)
        if key in _FLOAT_FIELDS:
            return float(value)
    except ValueError:
        pass
    return value


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's ``parse_generation_parameters``: the fields of an infotext as a dict.

    Keys are A1111's: ``Prompt``, ``Negative prompt``, ``Steps``, ``Sampler``, ``Schedule type``,
    ``CFG scale``, ``Seed``, ``Size-1`` (width), ``Size-2`` (height), ``Model hash``, ``Model``,
    ``Clip skip``, ``Hypernet hashes``... Numbers come back as ``int``/``float``; unknown fields as strings.
    Defaults as A1111 fills them: ``Clip skip`` 1, ``Schedule type`` "Automatic".
    """
    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = text.strip().split("\n")
    if len(_RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for key, value in _RE_PARAM.findall(lastline):
        value = value.strip()
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        size = _RE_IMAGE_SIZE.match(value)
        if size is not None:
            res[f"{key}-1"] = int(size.group(1))
            res[f"{key}-2"] = int(size.group(2))
        else:
            res[key] = _typed(key, value)

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    res.setdefault("Clip skip", 1)

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        strength = res.get("Hypernet strength", "1.0")
        res["Prompt"] += f"<hypernet:{hypernet}:{format_number(strength) if isinstance(strength, float) else strength}>"

    if "Sampler" in res:
        name, legacy = split_legacy_name(str(res["Sampler"]))
        res["Sampler"] = name
        if legacy is not None and "Schedule type" not in res:
            spec = find_sampler(name)
            res["Schedule type"] = "Automatic" if spec and spec.default_schedule == legacy.name else legacy.label
    res.setdefault("Schedule type", "Automatic")
    return res
