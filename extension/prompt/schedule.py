"""AUTOMATIC1111's prompt editing: which text conditions the image at which step.

- ``[from:to:when]`` uses ``from`` up to step ``when``, then ``to``; ``[to:when]`` adds ``to`` after
  ``when``; ``[from::when]`` removes ``from`` after it. ``when`` with a decimal point is a fraction of the
  steps (``0.5`` of 20 is 10), without one a step number; it is capped at the step count.
- ``[a|b|c]`` alternates the texts step by step (``[fe|]male`` alternates "female" and "male").
- Everything else, emphasis ``(a:1.2)`` and ``[a]`` included, is kept as written for the emphasis parser.
  A prompt the grammar cannot parse (``a [unbalanced``) is used unchanged for every step.

``prompt_schedule(prompt, steps)`` gives ``[(end_at_step, text), ...]``, as A1111's
``get_learned_conditioning_prompt_schedules`` (base steps, the default "new" scheduling), and
:func:`text_at` picks the entry for a UNet evaluation the way A1111's CFG denoiser does (its step counts
evaluations, and second-order samplers such as Heun schedule over twice the steps to match); past the last
entry it falls back to the first one. The parse itself uses A1111's grammar with lark's Earley parser, so
ambiguous text splits the same way. Earley parsing is slow on long runs of brackets (seconds for a thousand),
so a prompt that cannot hold a schedule is not parsed at all.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

# A1111's schedule grammar (the syntax users write), unchanged so that every prompt parses the same way.
GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""

Schedule = list[tuple[int, str]]


@functools.lru_cache(maxsize=1)
def _parser():
    """The grammar compiled once (like a compiled regex: each parse keeps its own state)."""
    import lark

    return lark.Lark(GRAMMAR)


def _parse(prompt: str):
    """The parse tree, or None when the grammar does not accept the prompt."""
    import lark

    try:
        return _parser().parse(prompt)
    except lark.exceptions.LarkError:
        return None


# What a ``scheduled`` rule must end with: ":" then a number (lark's SIGNED_NUMBER) then "]".
_SWITCH = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*\]")


def _may_schedule(prompt: str) -> bool:
    """Whether the prompt can hold a scheduled or alternating part. When not, the parse (which can take
    seconds on long runs of brackets) would give back the text as written, so it is skipped."""
    return "[" in prompt and ("|" in prompt or _SWITCH.search(prompt) is not None)


def _switch_step(number: str, steps: int) -> int:
    """Where a ``[...:when]`` switches: a fraction of ``steps`` when written with a point, else a step."""
    value = float(number)
    if "." in number:
        value *= steps
    return int(max(-1.0, min(value, steps)))  # A1111's min(steps, int(value)), safe for 1e999 (inf)


def _nodes(tree, kind: str):
    return [node for node in tree.iter_subtrees() if node.data == kind]


def _render(tree, step: int, steps: int) -> str:
    """The text at ``step``: every token in order, each scheduled part and alternative resolved (iterative,
    so deeply nested brackets cannot exhaust the stack)."""
    from lark import Token

    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if isinstance(node, Token):
            out.append(node.value)
        elif node.data == "scheduled":
            before, after, _, when, _ = node.children
            stack.append(before if step <= _switch_step(when, steps) else after)
        elif node.data == "alternate":
            stack.append(node.children[(step - 1) % len(node.children)])
        else:
            stack.extend(reversed(node.children))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> Schedule:
    """``[(end_at_step, text), ...]`` for ``steps`` sampling steps, the last entry ending at ``steps``.

    >>> prompt_schedule("a [cat:dog:0.5] on a sofa", 10)
    [(5, 'a cat on a sofa'), (10, 'a dog on a sofa')]
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    tree = _parse(prompt) if _may_schedule(prompt) else None
    if tree is None:
        return [(steps, prompt)]
    ends = {steps}
    for node in _nodes(tree, "scheduled"):
        when = _switch_step(node.children[-2], steps)
        if when >= 1:
            ends.add(when)
    if _nodes(tree, "alternate"):
        ends.update(range(1, steps + 1))
    return [(end, _render(tree, end, steps)) for end in sorted(ends)]


def is_edited(schedule: Schedule) -> bool:
    """Whether the text changes during sampling."""
    return len({text for _, text in schedule}) > 1


def index_at(schedule: Sequence[tuple[int, str]], step: int) -> int:
    """The entry A1111 uses at denoiser call ``step`` (0-based): the first ending at or after it, else the
    first entry (A1111's fallback past the end)."""
    for index, (end, _) in enumerate(schedule):
        if step <= end:
            return index
    return 0


def text_at(schedule: Sequence[tuple[int, str]], step: int) -> str:
    return schedule[index_at(schedule, step)][1]
