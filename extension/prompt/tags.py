"""Prompt tags: AUTOMATIC1111's extra-network grammar ``<TYPE:ITEM:ITEM...>``.

``<hypernet:NAME>`` applies a hypernetwork at 1.0, ``<hypernet:NAME:MULT>`` at ``MULT`` (negative values
allowed). Several tags apply in prompt order. Every tag, of any type, is removed from the text that reaches
the text encoder; tags of other types (``<lora:...>``, ...) are reported as not supported here.
"""
from __future__ import annotations

import dataclasses
import math
import re

EXTRA_NETWORK_RE = re.compile(r"<(\w+):([^>]+)>")
HYPERNET = "hypernet"


@dataclasses.dataclass(frozen=True)
class NetworkTag:
    """One ``<network:items...>`` tag as written in the prompt.

    Args:
        network: the tag's type (``hypernet``, ``lora``...).
        items: what follows it, split on ``:`` (``("NAME", "0.8")``).
        text: the tag as written, for messages.
    """

    network: str
    items: tuple[str, ...]
    text: str = ""


@dataclasses.dataclass(frozen=True)
class HypernetworkRequest:
    """A hypernetwork the prompt asks for, by name, at a multiplier.

    Args:
        name: the name in the tag (a file stem, or a path relative to the folder).
        multiplier: the strength (negative values allowed).
    """

    name: str
    multiplier: float = 1.0


def parse_prompt(prompt: str) -> tuple[str, list[NetworkTag]]:
    """Return the prompt with every tag removed, and the tags in prompt order.

    Args:
        prompt: the prompt as typed (None counts as empty).

    Returns:
        ``(text for the text encoder, [NetworkTag, ...])``.
    """
    tags: list[NetworkTag] = []

    def take(match: re.Match) -> str:
        tags.append(NetworkTag(match.group(1), tuple(match.group(2).split(":")), match.group(0)))
        return ""

    return EXTRA_NETWORK_RE.sub(take, prompt or ""), tags


def parse_multiplier(text: str) -> float:
    """A tag's multiplier: a finite number. Raises ``ValueError`` with a message for the user.

    Args:
        text: the multiplier as written in the tag.
    """
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"multiplier {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"multiplier {text.strip()!r} is not a finite number")
    return value


def hypernetwork_requests(tags: list[NetworkTag]) -> tuple[list[HypernetworkRequest], list[str]]:
    """The hypernetworks the tags ask for, and a message for each tag that cannot be honoured.

    Args:
        tags: the tags :func:`parse_prompt` found, in prompt order.

    Returns:
        ``(requests in prompt order, messages)``: tags of other types, empty names and bad multipliers give a
        message and no request.
    """
    requests: list[HypernetworkRequest] = []
    messages: list[str] = []
    for tag in tags:
        if tag.network != HYPERNET:
            messages.append(f"{tag.text}: <{tag.network}:...> networks are not supported here "
                            f"(only <hypernet:NAME:MULTIPLIER>); the tag was removed from the prompt")
            continue
        name = tag.items[0].strip() if tag.items else ""
        if not name:
            messages.append(f"{tag.text}: the hypernetwork name is empty; the tag was ignored")
            continue
        multiplier = 1.0
        if len(tag.items) > 1 and "=" not in tag.items[1]:
            try:
                multiplier = parse_multiplier(tag.items[1])
            except ValueError as exc:
                messages.append(f"{tag.text}: {exc}; write it as <hypernet:{name}:0.8>. The tag was ignored")
                continue
        requests.append(HypernetworkRequest(name, multiplier))
    return requests, messages


def parse_hypernetworks(prompt: str) -> tuple[str, list[HypernetworkRequest], list[str]]:
    """``parse_prompt`` then ``hypernetwork_requests``: (cleaned prompt, requests, messages).

    Args:
        prompt: the prompt as typed.
    """
    cleaned, tags = parse_prompt(prompt)
    requests, messages = hypernetwork_requests(tags)
    return cleaned, requests, messages


def format_tag(name: str, multiplier: float = 1.0) -> str:
    """The tag for ``name`` at ``multiplier``, as a card click inserts it.

    Args:
        name: the hypernetwork's name.
        multiplier: its strength (written with ``:g``).
    """
    return f"<{HYPERNET}:{name}:{multiplier:g}>"
