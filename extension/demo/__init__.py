"""The built-in demo model: a small SD 1.x-shaped pipeline that runs anywhere without a download.

A trained copy ships in ``extension/demo/model`` (a diffusers folder, see ``docs/demo-model.md``); it
knows only the words in :data:`VOCABULARY` and draws one coloured shape on a plain background, e.g.
the :data:`EXAMPLE_PROMPTS`. The random-weight copy (:func:`architecture.build_random_pipeline`) is the
fast fixture for tests.
"""
from .vocabulary import BACKGROUNDS, COLOURS, EXAMPLE_PROMPTS, HELD_OUT_PAIRS, SHAPES, VOCABULARY

__all__ = ["BACKGROUNDS", "COLOURS", "EXAMPLE_PROMPTS", "HELD_OUT_PAIRS", "SHAPES", "VOCABULARY"]
