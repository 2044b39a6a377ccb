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

    if isinstance(tree, _Text):
        return tree.text
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


# What the Earley parses of one prompt may be given: a parse's cost grows with the square (or worse) of the
# brackets it holds (64 in one group take seconds), and each parse costs some milliseconds, so a prompt is parsed
# group by group (:func:`_segments`), only the groups that can hold a schedule, and refused beyond these bounds.
MAX_GROUP_BRACKETS = 64  # brackets in one top-level group (or in a whole prompt whose brackets do not balance)
MAX_PARSE_WORK = 16384  # the sum over the parsed groups of (their bracket count + 8) squared


def _segments(prompt: str) -> list[str] | None:
    """The prompt cut where its bracket depth is back to 0: each top-level bracket group, and the text between
    them (escaped characters, ``\\(``, count as text), except between two of ``[]():``. None when the brackets
    do not balance.

    No group of the grammar can span such a cut (a group's inside is balanced), and no run of literal
    brackets and colons either (the grammar's other way to read them), so parsing the pieces one by one gives
    what parsing the whole gives (``tests/test_prompt_fuzz.py`` compares both on drawn prompts), at a cost
    linear in the number of groups instead of cubic."""
    pieces, start, depth, i = [], 0, 0, 0
    while i < len(prompt):
        char = prompt[i]
        if char == "\\":
            i += 2
            continue
        if char in "([":
            if depth == 0 and i > start:
                pieces.append(prompt[start:i])
                start = i
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                pieces.append(prompt[start:i + 1])
                start = i + 1
        i += 1
    if depth != 0:
        return None
    if start < len(prompt):
        pieces.append(prompt[start:])
    merged: list[str] = []
    for piece in pieces:  # a cut between two of "[]():" is no cut: the grammar may read both as one literal run
        if merged and merged[-1][-1] in _LITERAL and piece[0] in _LITERAL:
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


_LITERAL = "[]():"  # what the grammar's start rule may take as a literal run


def _brackets(text: str) -> int:
    return sum(text.count(char) for char in "[]()")


def _parse_pieces(prompt: str) -> list | None:
    """The parse trees of the prompt's pieces (:func:`_segments`; the whole prompt when its brackets do not
    balance), or None when the grammar does not accept it. A piece with no ``[``, ``|`` or backslash holds no
    schedule and is always accepted: it is not parsed. ``ValueError`` when the rest holds more brackets than
    the parses take in a few seconds (:data:`MAX_GROUP_BRACKETS`, :data:`MAX_PARSE_WORK`)."""
    pieces = _segments(prompt)
    if pieces is None:
        count = _brackets(prompt)
        if count > MAX_GROUP_BRACKETS:
            raise ValueError(f"prompt editing: the prompt's brackets do not balance and there are {count} of them; "
                             f"at most {MAX_GROUP_BRACKETS} can be parsed then (balance them or remove some)")
        pieces = [prompt]
    parsed = [piece for piece in pieces if _needs_parse(piece)]
    counts = [_brackets(piece) for piece in parsed]
    if max(counts, default=0) > MAX_GROUP_BRACKETS or sum((c + 8) ** 2 for c in counts) > MAX_PARSE_WORK:
        raise ValueError(f"prompt editing: too many brackets to parse ({len(parsed)} groups with [ ] or |, the "
                         f"largest holding {max(counts)} brackets; at most {MAX_GROUP_BRACKETS} in a group, fewer "
                         "in all); simplify the prompt")
    trees = []
    for piece in pieces:
        tree = _parse(piece) if _needs_parse(piece) else _Text(piece)
        if tree is None:
            return None
        trees.append(tree)
    return trees


def _needs_parse(piece: str) -> bool:
    """Whether the grammar has a say on ``piece``: without ``[``, ``|`` and backslashes it holds no schedule
    and is accepted as written (``(``, ``)`` and ``:`` alone always are)."""
    return any(char in piece for char in "[|\\")


class _Text:
    """A piece without brackets, standing for its parse tree (nothing to resolve: it renders as written)."""

    data = "text"

    def __init__(self, text: str):
        self.text = text

    def iter_subtrees(self):
        return iter(())


def prompt_schedule(prompt: str, steps: int) -> Schedule:
    """``[(end_at_step, text), ...]`` for ``steps`` sampling steps, the last entry ending at ``steps``.

    Raises ``ValueError`` for ``steps`` below 1 and for a prompt with more brackets than can be parsed in a few
    seconds (see :data:`MAX_GROUP_BRACKETS`); only prompts that may hold a schedule are parsed.

    Args:
        prompt: the prompt, tags already removed.
        steps: the step count the schedule spans (sampler steps, or UNet evaluations: see the module docstring).

    Returns:
        ``[(end_at_step, text), ...]`` in step order; ``[(steps, prompt)]`` when nothing is scheduled.

    Example:

    >>> prompt_schedule("a [cat:dog:0.5] on a sofa", 10)
    [(5, 'a cat on a sofa'), (10, 'a dog on a sofa')]
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    trees = _parse_pieces(prompt) if _may_schedule(prompt) else None
    if trees is None:
        return [(steps, prompt)]
    ends = {steps}
    scheduled = [node for tree in trees for node in _nodes(tree, "scheduled")]
    for node in scheduled:
        when = _switch_step(node.children[-2], steps)
        if when >= 1:
            ends.add(when)
    if any(_nodes(tree, "alternate") for tree in trees):
        ends.update(range(1, steps + 1))
    return [(end, "".join(_render(tree, end, steps) for tree in trees)) for end in sorted(ends)]


def is_edited(schedule: Schedule) -> bool:
    """Whether the text changes during sampling.

    Args:
        schedule: a :func:`prompt_schedule` result.
    """
    return len({text for _, text in schedule}) > 1


def index_at(schedule: Sequence[tuple[int, str]], step: int) -> int:
    """The entry A1111 uses at denoiser call ``step`` (0-based): the first ending at or after it, else the
    first entry (A1111's fallback past the end).

    Args:
        schedule: a :func:`prompt_schedule` result.
        step: the denoiser call, 0-based.
    """
    for index, (end, _) in enumerate(schedule):
        if step <= end:
            return index
    return 0


def text_at(schedule: Sequence[tuple[int, str]], step: int) -> str:
    """The text A1111 uses at denoiser call ``step`` (see :func:`index_at`).

    Args:
        schedule: a :func:`prompt_schedule` result.
        step: the denoiser call, 0-based.
    """
    return schedule[index_at(schedule, step)][1]
