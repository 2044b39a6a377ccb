"""Warnings that tell a user of this project nothing, filtered where they are emitted."""
from __future__ import annotations

import logging
import re


class _ImageProcessorFallbackFilter(logging.Filter):
    """Drops transformers' "`XImageProcessor` requires torchvision (not installed); falling back to
    `XImageProcessorPil`" warnings, and nothing else.

    Where they come from: diffusers' ``pipeline_stable_diffusion.py`` does ``from transformers import
    CLIPImageProcessor`` (the safety checker's feature extractor) and ``diffusers/loaders/ip_adapter.py`` does
    ``from transformers import SiglipImageProcessor``, at import. Since transformers 5 those names need
    torchvision, which this project does not install; transformers' lazy module then hands out the PIL class
    it always used before and warns once per name. This project never runs an image processor (no safety
    checker, no IP-Adapter), so the warning tells a user nothing. Binding the names to the PIL classes
    ourselves does not work: with transformers 5.23 ``sys.modules["transformers"]`` is replaced by a fresh
    lazy module while its submodules load, and diffusers then imports from the fresh one. So the message is
    filtered, on the one logger that emits it; other transformers warnings still show.
    """

    PATTERN = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+Pil`")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.PATTERN.search(record.getMessage())


def quiet_image_processor_fallback() -> None:
    """Install :class:`_ImageProcessorFallbackFilter` (once; importing transformers is not needed)."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _ImageProcessorFallbackFilter) for f in logger.filters):
        logger.addFilter(_ImageProcessorFallbackFilter())
