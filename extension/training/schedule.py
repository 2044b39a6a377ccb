"""AUTOMATIC1111's learning-rate (and gradient-clip) schedule: ``"5e-5:100, 5e-6:1500, 5e-7:10000"``.

What its users rely on, kept:

- ``rate:step`` pairs separated by commas; whitespace around numbers is fine; empty items (a leading or
  trailing comma) are skipped. A bare ``rate``, or ``rate:-1``, lasts until max steps and ends the schedule
  (pairs after it are ignored).
- The value for step ``s`` (0-based: the ``s+1``-th optimizer update) is the first pair whose bound is
  greater than ``s``: in ``5e-5:100, 5e-6:1500`` step 100 already uses 5e-6.
- The last bound ends training, even when max steps is larger; each bound is capped at max steps.
- Resuming from a file at step ``S`` continues with the rates an uninterrupted run would have used.

AUTOMATIC1111's bugs, fixed (``../shared/notes/a1111-training.md``): malformed strings it silently read as a
constant (``1e-3:10:5``, ``1e-3:10 1e-4:20``), ``nan``, ``inf``, zero or negative rates, ``1_0``, out-of-order
or duplicate bounds are refused with a message naming the problem; numbers from JSON are accepted; a bound
equal to max steps followed by another pair no longer trains one extra step; resuming past the end says the
training is complete instead of "Invalid learning rate schedule".
"""
from __future__ import annotations

import dataclasses
import math
import re

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


class ScheduleError(ValueError):
    """A schedule string that cannot be read; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``(value, bound)`` pairs, ``bound`` None for "until max steps".

    Args:
        pairs: ``(value, bound)`` in order, bounds increasing; only the last bound may be None.
        text: the schedule as written, for display.
    """

    pairs: tuple[tuple[float, int | None], ...]
    text: str = ""

    @property
    def open_ended(self) -> bool:
        """Whether the last value lasts until max steps (a bare value or ``:-1``)."""
        return self.pairs[-1][1] is None

    def end(self, max_steps: int) -> int:
        """The step count a run reaches: max steps, or the last bound when it is smaller.

        Args:
            max_steps: the run's ``steps``.
        """
        return max_steps if self.open_ended else min(max_steps, self.pairs[-1][1])

    def value_at(self, step: int) -> float:
        """The value for 0-based step ``step``: the first pair whose bound is greater than it (the last value
        beyond the end, which is what a clip schedule wants).

        Args:
            step: the optimizer step, 0-based.
        """
        for value, bound in self.pairs:
            if bound is None or bound > step:
                return value
        return self.pairs[-1][0]

    def segments(self, first: int, last: int) -> list[tuple[int, int, float]]:
        """``[(first step, last step, value), ...]``: runs of equal value over steps ``first..last`` inclusive.

        Args:
            first: the first step, 0-based.
            last: the last step, included.
        """
        out: list[tuple[int, int, float]] = []
        for step in range(first, last + 1):
            value = self.value_at(step)
            if out and out[-1][2] == value:
                out[-1] = (out[-1][0], step, value)
            else:
                out.append((step, step, value))
        return out

    def __str__(self) -> str:
        return self.text or ", ".join(f"{v:g}" if b is None else f"{v:g}:{b}" for v, b in self.pairs)


def _value(text: str, what: str, whole: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise ScheduleError(f"{what} schedule {whole!r}: {text!r} is not a number")
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ScheduleError(f"{what} schedule {whole!r}: {text!r} must be a positive number")
    return value


def parse_schedule(spec, what: str = "learning rate") -> Schedule:
    """Read a schedule in AUTOMATIC1111's syntax (or a plain number, as JSON clients send).

    Args:
        spec: ``"5e-5:100, 5e-6:1500"``, ``"0.001"``, or a number.
        what: how messages name it (``"learning rate"``, ``"gradient clip"``).

    Returns:
        The :class:`Schedule`; a number gives one open-ended pair.

    Raises:
        ScheduleError: with a message naming the problem.
    """
    if isinstance(spec, bool):
        raise ScheduleError(f"{what} schedule must be a number or a string like '5e-5:100, 5e-6', got {spec!r}")
    if isinstance(spec, (int, float)):
        if not math.isfinite(spec) or spec <= 0:
            raise ScheduleError(f"{what} must be a positive number, got {spec!r}")
        return Schedule(((float(spec), None),), f"{spec:g}")
    if not isinstance(spec, str):
        raise ScheduleError(f"{what} schedule must be a number or a string like '5e-5:100, 5e-6', got {spec!r}")
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ScheduleError(f"{what} schedule is empty: give a rate such as 5e-5, or pairs such as 5e-5:100, 5e-6")
    pairs: list[tuple[float, int | None]] = []
    ended = False
    for item in items:
        if not item:
            continue
        if re.search(r"\s", re.sub(r"\s*:\s*", ":", item)):
            raise ScheduleError(f"{what} schedule {spec!r}: {item!r} holds a space; separate pairs with commas")
        parts = [part.strip() for part in item.split(":")]
        if len(parts) > 2:
            raise ScheduleError(f"{what} schedule {spec!r}: {item!r} has more than one ':' (write rate:step)")
        value = _value(parts[0], what, spec)
        bound = None
        if len(parts) == 2:
            if not _INTEGER.fullmatch(parts[1]):
                raise ScheduleError(f"{what} schedule {spec!r}: the step in {item!r} must be a whole number")
            number = int(parts[1])
            if number == 0 or number < -1:
                raise ScheduleError(f"{what} schedule {spec!r}: the step in {item!r} must be positive (or -1 for "
                                    "'until max steps')")
            bound = None if number == -1 else number
        if ended:
            continue  # AUTOMATIC1111 stops at a bare rate or -1; later pairs are checked but have no effect
        if bound is not None and pairs and bound <= pairs[-1][1]:
            raise ScheduleError(f"{what} schedule {spec!r}: steps must increase ({bound} after {pairs[-1][1]})")
        pairs.append((value, bound))
        ended = bound is None
    return Schedule(tuple(pairs), spec.strip())
