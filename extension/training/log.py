"""What a run writes beside its copies: ``hypernetwork_loss.csv`` and ``settings-<time>.json``.

The CSV has AUTOMATIC1111's header ``step,epoch,epoch_step,loss,learn_rate``, gets a row every N steps
(``training_write_csv_every``), and is appended to across the runs of one day in one log folder. ``loss``
is the mean over the last steps (up to one epoch), with 7 decimals.
"""
from __future__ import annotations

import csv
import datetime
import json
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

CSV_NAME = "hypernetwork_loss.csv"
CSV_HEADER = ("step", "epoch", "epoch_step", "loss", "learn_rate")


def append_loss_row(folder: Path, step: int, steps_per_epoch: int, loss: float, learn_rate: float) -> Path:
    """Add one row to ``folder/hypernetwork_loss.csv`` (writing the header when the file is new)."""
    path = Path(folder) / CSV_NAME
    new = not path.exists()
    epoch, epoch_step = (step - 1) // steps_per_epoch, (step - 1) % steps_per_epoch + 1
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(CSV_HEADER)
        writer.writerow([step, epoch, epoch_step, f"{loss:.7f}", f"{learn_rate:g}"])
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_settings(folder: Path, settings: dict[str, Any], when: datetime.datetime | None = None) -> Path:
    """``folder/settings-YYYY-MM-DD-HH-MM-SS.json``: the run's parameters (atomically)."""
    stamp = (when or datetime.datetime.now()).strftime("%Y-%m-%d-%H-%M-%S")
    path = Path(folder) / f"settings-{stamp}.json"
    return atomic_write_text(path, json.dumps(settings, indent=4, default=str) + "\n")
