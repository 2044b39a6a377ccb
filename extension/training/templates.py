"""Prompt templates and captions: what text each training picture is paired with, AUTOMATIC1111's way.

- A template is a text file of lines; each line is stripped and blank lines are kept (an empty prompt can be
  drawn). ``[name]`` becomes the hypernetwork's name and ``[filewords]`` the picture's caption.
- Templates are found by file name under the templates folder (``textual_inversion_templates/``, as in
  AUTOMATIC1111), or given as a path. A name found in two sub-folders is an error here (AUTOMATIC1111 took
  whichever came last).
- Without tag shuffling or tag dropout, each picture keeps one line for the whole run; with either, a new
  line and tag order are drawn every time. Tags are split on ``,`` and joined again with ``", "``
  (AUTOMATIC1111 joined them with no space).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .. import paths
from .config import TrainingError
from .randomness import numpy_rng


def list_templates(root=None) -> list[str]:
    """Every template file name under ``root`` (default: the project's templates folder), sorted."""
    root = Path(root or paths.TEMPLATES_DIR)
    if not root.is_dir():
        return []
    return sorted({p.name for p in root.rglob("*.txt") if p.is_file()})


def find_template(name_or_path: str, root=None, *, allow_paths: bool = True) -> Path:
    """The template file ``name_or_path`` names: a file name under ``root``, or (when ``allow_paths``) a path.

    Raises:
        TrainingError: no such template, or the same name in two sub-folders.
    """
    root = Path(root or paths.TEMPLATES_DIR)
    text = str(name_or_path or "").strip()
    if not text:
        raise TrainingError("template_filename: choose a prompt template")
    candidate = Path(text)
    if len(candidate.parts) > 1 or candidate.is_absolute():
        if not allow_paths:
            raise TrainingError(f"template_filename {text!r}: give a file name from the templates folder, not a path")
        if candidate.is_file():
            return candidate
        raise TrainingError(f"template {text!r} does not exist")
    if text in (".", ".."):
        raise TrainingError(f"template_filename {text!r} is not a file name")
    # matched by name, not as a glob pattern: "*" or "[x]" in a name is a character like any other
    found = sorted(p for p in root.rglob("*") if p.name == text and p.is_file()) if root.is_dir() else []
    if not found:
        available = ", ".join(list_templates(root)) or "none"
        raise TrainingError(f"template {text!r} is not in {root} (available: {available})")
    if len(found) > 1:
        where = ", ".join(str(p.relative_to(root)) for p in found)
        raise TrainingError(f"template {text!r} is ambiguous: {where}; give one of these paths")
    return found[0]


def read_template(path: Path) -> list[str]:
    """The lines of a template, stripped; blank lines kept. An empty file is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"template {path} cannot be read ({exc})") from exc
    lines = [line.strip() for line in text.splitlines()]
    if not lines:
        raise TrainingError(f"template {path} is empty")
    return lines


def filename_caption(stem: str, word_regex: str = "", join_string: str = " ") -> str:
    """AUTOMATIC1111's caption from a file name: the stem without leading digits and hyphens
    (``1-a red circle`` -> ``a red circle``), optionally split with ``word_regex`` and joined."""
    text = re.sub(r"^[-\d]+\s*", "", stem)
    if word_regex:
        try:
            words = re.findall(word_regex, text)
        except re.error as exc:
            raise TrainingError(f"dataset_filename_word_regex {word_regex!r} is not a regular expression "
                                f"({exc})") from None
        text = join_string.join(words)
    return text


def caption_of(image_path: Path, word_regex: str = "", join_string: str = " ") -> str:
    """The caption of a picture: ``NAME.txt`` beside it (its trailing newline is not part of it), else the
    file name's (see :func:`filename_caption`)."""
    text_file = image_path.with_suffix(".txt")
    if text_file.is_file():
        try:
            return text_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainingError(f"caption file {text_file} cannot be read ({exc})") from exc
    return filename_caption(image_path.stem, word_regex, join_string)


@dataclasses.dataclass(frozen=True)
class PromptMaker:
    """Turns a picture's caption into its training prompt."""

    lines: tuple[str, ...]
    name: str
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0

    @property
    def varies(self) -> bool:
        """Whether a picture's prompt changes from step to step (then text encodings cannot be cached)."""
        return self.shuffle_tags or self.tag_drop_out > 0

    def prompt(self, caption: str, seed: int, *keys) -> str:
        """The prompt for ``caption``, drawn from the generator keyed by ``keys`` under ``seed``."""
        rng = numpy_rng(seed, "prompt", *keys)
        line = self.lines[int(rng.integers(len(self.lines)))]
        if self.varies:
            tags = [tag.strip() for tag in caption.split(",")]
            if self.tag_drop_out > 0:
                tags = [tag for tag in tags if rng.random() > self.tag_drop_out]
            if self.shuffle_tags:
                tags = [tags[i] for i in rng.permutation(len(tags))]
            caption = ", ".join(tags)
        return line.replace("[name]", self.name).replace("[filewords]", caption)
