"""Training hypernetworks: AUTOMATIC1111's Create and Train, on a modern loop (accelerate).

Rooms:

- :mod:`.config`: :class:`TrainingConfig`, every parameter with AUTOMATIC1111's defaults, and its checks;
- :mod:`.schedule`: the learning-rate / clip schedule syntax (``5e-5:100, 5e-6``);
- :mod:`.templates`, :mod:`.dataset`, :mod:`.latents`: prompts and captions, pictures, VAE latents;
- :mod:`.loss`: the diffusion loss (epsilon or v);
- :mod:`.loop`: the optimization loop; :mod:`.randomness`: every random draw, keyed by the seed;
- :mod:`.checkpoints`, :mod:`.log`, :mod:`.preview`, :mod:`.monitor`: what a run writes and shows;
- :mod:`.create`: a new network file; :mod:`.train`: the entry point every caller uses;
- :mod:`.cli`: ``launch.py --create-hypernetwork`` / ``--train-hypernetwork``.
"""
from .config import TrainingConfig, TrainingError, optimizer_names
from .create import create_hypernetwork
from .monitor import TrainingMonitor
from .schedule import ScheduleError, parse_schedule
from .train import TrainingResult, train_hypernetwork

__all__ = ["ScheduleError", "TrainingConfig", "TrainingError", "TrainingMonitor", "TrainingResult",
           "create_hypernetwork", "optimizer_names", "parse_schedule", "train_hypernetwork"]
