"""How a training run ended: :class:`TrainingResult`, what the loop returns and every front end reports."""
from __future__ import annotations

import dataclasses

from ..hypernetwork import Hypernetwork


@dataclasses.dataclass
class TrainingResult:
    """How a run ended. ``status``: ``finished``, ``interrupted``, ``complete`` (nothing left to train),
    ``stopped`` (a NaN or inf loss).

    Args:
        status: ``"finished"``, ``"interrupted"``, ``"complete"`` or ``"stopped"``.
        message: what to tell the user.
        filename: the network's file in the models folder.
        step: the step the file holds now.
        log_dir: the run's log folder, or None when the run did not start.
        files: the log copies and previews written, in order.
        network: the trained network in memory, or None when the run did not start.
    """

    status: str
    message: str
    filename: str | None = None
    step: int = 0
    log_dir: str | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    network: Hypernetwork | None = dataclasses.field(default=None, repr=False)  # the trained object, in memory

    def info(self) -> str:
        """AUTOMATIC1111's answer text (``train embedding complete: filename: ... error: ...``, sic), so scripts
        that grep it still work; our status follows."""
        error = None if self.status in ("finished", "complete", "interrupted") else self.message
        return f"train embedding complete: filename: {self.filename} error: {error} ({self.message})"
