"""What a running training shows its watchers: losses, learning rates, previews, its state. Thread-safe.

The loop writes here; the Train tab's timer, the REST API's progress route and the command line's progress
bar read from here. Nothing here changes the run.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float
    learn_rate: float


class TrainingMonitor:
    """The record of one run (made by whoever starts it, filled by the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self._losses: list[LossPoint] = []
        self._previews: list[tuple[int, Path]] = []
        self._files: list[Path] = []
        self.state = "starting"     # starting | preparing | training | finished | interrupted | stopped | error
        self.message = ""
        self.first_step = 0
        self.last_step = 0

    def begin(self, first_step: int, last_step: int) -> None:
        with self._lock:
            self.first_step, self.last_step, self.state, self.message = first_step, last_step, "training", ""
            self.started = time.monotonic()

    def set_state(self, state: str, message: str = "") -> None:
        with self._lock:
            self.state, self.message = state, message

    def add_loss(self, step: int, loss: float, learn_rate: float) -> None:
        with self._lock:
            self._losses.append(LossPoint(step, loss, learn_rate))

    def add_preview(self, step: int, path: Path) -> None:
        with self._lock:
            self._previews.append((step, Path(path)))

    def add_file(self, path: Path) -> None:
        with self._lock:
            self._files.append(Path(path))

    def losses(self) -> list[LossPoint]:
        with self._lock:
            return list(self._losses)

    def previews(self) -> list[tuple[int, Path]]:
        with self._lock:
            return list(self._previews)

    def files(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    @property
    def step(self) -> int:
        """The number of optimizer steps the network holds now."""
        with self._lock:
            return self._losses[-1].step if self._losses else self.first_step

    def eta(self) -> float:
        """Seconds left at the pace so far."""
        with self._lock:
            done = (self._losses[-1].step if self._losses else self.first_step) - self.first_step
            total = self.last_step - self.first_step
        if done <= 0 or total <= 0:
            return 0.0
        elapsed = time.monotonic() - self.started
        return max(0.0, elapsed / done * (total - done))

    def summary(self) -> str:
        """One line: state, step, loss, learning rate, time left."""
        losses = self.losses()
        parts = [self.state]
        if losses:
            recent = losses[-20:]
            mean = sum(p.loss for p in recent) / len(recent)
            parts.append(f"step {losses[-1].step}/{self.last_step}")
            parts.append(f"loss {mean:.5f}")
            parts.append(f"lr {losses[-1].learn_rate:g}")
            if self.state == "training":
                parts.append(f"ETA {self.eta():.0f} s")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)
