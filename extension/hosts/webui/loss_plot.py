"""The training's progress line and loss plot as one piece of HTML, for the host's progress text.

The Train tab's progress script (``javascript/hypernetworks_host_training.js``) puts the job's text into the page
as HTML at every poll, so the plot needs no widget of its own (and works in every host's Gradio): an inline SVG
polyline of the mean loss of each step.

The host's own progress bar also shows a job's text, as plain text, unless it has a line break (AUTOMATIC1111's
textual-inversion training relies on the same rule): the HTML here always has one, so the bar shows only the
percentage and ETA and never raw markup.
"""
from __future__ import annotations

import html

from ...training.monitor import TrainingMonitor

WIDTH, HEIGHT = 360, 90


def loss_svg(points: list[tuple[int, float]]) -> str:
    """A polyline of ``(step, loss)`` scaled into the box, with the range as labels; empty for < 2 points."""
    points = [(s, v) for s, v in points if v == v and abs(v) != float("inf")]
    if len(points) < 2:
        return ""
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    s0, s1 = min(steps), max(steps)
    v0, v1 = min(losses), max(losses)
    span_s, span_v = (s1 - s0) or 1, (v1 - v0) or 1.0

    def xy(step: int, value: float) -> str:
        return f"{(step - s0) / span_s * (WIDTH - 2) + 1:.1f},{(1 - (value - v0) / span_v) * (HEIGHT - 14) + 2:.1f}"

    line = " ".join(xy(s, v) for s, v in points)
    return (f'<svg class="hn-loss-plot" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="training loss">'
            f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{line}"/>'
            f'<text x="2" y="{HEIGHT - 1}" font-size="10" fill="currentColor">loss {v0:.4g} to {v1:.4g}, '
            f'steps {s0} to {s1}</text></svg>')


def progress_html(monitor: TrainingMonitor) -> str:
    """The monitor's one-line summary, then the loss plot (the mean of each step's losses)."""
    by_step: dict[int, list[float]] = {}
    for point in monitor.losses():
        by_step.setdefault(point.step, []).append(point.loss)
    points = [(step, sum(values) / len(values)) for step, values in sorted(by_step.items())]
    return f'<div class="hn-train-progress">{html.escape(monitor.summary())}</div>\n{loss_svg(points)}'
