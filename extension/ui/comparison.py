"""Strength comparison: the same seed at several multipliers of several hypernetworks, as one labelled grid.

What users do by hand to judge a hypernetwork. The plan is pure (:func:`plan_prompts`), the drawing is pure
(:func:`draw_grid`); ``extension/ui/comparison_script.py`` runs the generations and saves the grid.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..prompt.tags import format_tag

MIN_CELL = 128  # small images (the demo model draws 32x32) are enlarged, pixel for pixel, to stay readable


def parse_multipliers(text: str) -> list[float]:
    """``"0, 0.5, 1, 1.5"`` (commas or spaces) or a range ``"0-2 (+0.5)"`` / ``"0-2 [5]"`` as in X/Y/Z plot."""
    text = (text or "").strip()
    if not text:
        raise ValueError("give at least one multiplier, e.g. 0, 0.5, 1, 1.5")
    range_match = re.fullmatch(r"\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*(?:\(\s*\+?\s*([\d.]+)\s*\)|\[\s*(\d+)\s*\])\s*", text)
    if range_match:
        start, end = float(range_match.group(1)), float(range_match.group(2))
        if range_match.group(3):
            step = float(range_match.group(3))
            if step <= 0:
                raise ValueError("the step of a multiplier range must be positive")
            values, value = [], start
            while value <= end + 1e-9 and len(values) < 64:
                values.append(round(value, 6))
                value += step
            return values
        count = int(range_match.group(4))
        if count < 1:
            raise ValueError("a multiplier range needs at least one value")
        if count == 1:
            return [start]
        return [round(start + (end - start) * i / (count - 1), 6) for i in range(count)]
    values = []
    for item in re.split(r"[,\s]+", text):
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"multiplier {item!r} is not a number (write them like 0, 0.5, 1, 1.5)") from None
    if len(values) > 64:
        raise ValueError("at most 64 multipliers")
    return values


def without_tag(prompt: str, name: str) -> str:
    """``prompt`` without any ``<hypernet:NAME...>`` tag (and the space before it)."""
    return re.sub(r"\s?<hypernet:" + re.escape(name) + r"(?::[^>]*)?>", "", prompt or "").strip()


def with_tag(prompt: str, name: str, multiplier: float) -> str:
    base = without_tag(prompt, name)
    return f"{base} {format_tag(name, multiplier)}".strip()


@dataclasses.dataclass(frozen=True)
class Cell:
    row: int
    column: int
    name: str
    multiplier: float
    prompt: str


def plan_prompts(prompt: str, names: Sequence[str], multipliers: Sequence[float]) -> list[Cell]:
    """One cell per (network, multiplier): the prompt with that network's tag set to that multiplier."""
    return [Cell(r, c, name, m, with_tag(prompt, name, m))
            for r, name in enumerate(names) for c, m in enumerate(multipliers)]


def _font(size: int):
    """DejaVu Sans when the system has it (it has "×"), else Pillow's own font."""
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _has_glyph(font, char: str) -> bool:
    """Whether ``font`` draws ``char`` differently from a character it surely lacks."""
    try:
        return font.getmask(char).getbbox() != font.getmask("\uffff").getbbox() or char.isascii()
    except Exception:  # noqa: BLE001
        return char.isascii()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for char in text:
        if draw.textlength(line + char, font=font) > width and line:
            lines.append(line)
            line = char
        else:
            line += char
    return lines + ([line] if line else [])


def draw_grid(images: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
              column_labels: Sequence[str], title: str = "") -> Image.Image:
    """``images[row][column]`` in a grid with a label above each column and left of each row.

    A missing image (``None``, e.g. after an interrupt) leaves its cell grey.
    """
    first = next((im for row in images for im in row if im is not None), None)
    cw, ch = first.size if first is not None else (MIN_CELL, MIN_CELL)
    scale = max(1, -(-MIN_CELL // min(cw, ch)))
    cw, ch = cw * scale, ch * scale
    font = _font(max(12, min(24, cw // 8)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(96, min(320, max((int(probe.textlength(t, font=font)) for t in row_labels), default=0) + 16))
    line_h = font.size + 4 if hasattr(font, "size") else 16
    title_h = line_h + 8 if title else 0
    header_h = line_h + 12
    width = label_w + cw * len(column_labels)
    height = title_h + header_h + ch * len(row_labels)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((8, 4), title, fill="black", font=font)
    for c, label in enumerate(column_labels):
        if not all(_has_glyph(font, ch) for ch in label):
            label = "".join(ch if _has_glyph(font, ch) else "x" for ch in label)
        x = label_w + c * cw
        tw = draw.textlength(label, font=font)
        draw.text((x + (cw - tw) / 2, title_h + 6), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        y = title_h + header_h + r * ch
        lines = _wrap(draw, label, font, label_w - 12)[: max(1, ch // line_h)]
        top = y + (ch - line_h * len(lines)) / 2
        for i, line in enumerate(lines):
            draw.text((6, top + i * line_h), line, fill="black", font=font)
        for c in range(len(column_labels)):
            x = label_w + c * cw
            image = images[r][c] if r < len(images) and c < len(images[r]) else None
            if image is None:
                draw.rectangle([x, y, x + cw - 1, y + ch - 1], fill=(200, 200, 200))
                continue
            image = image.convert("RGB")
            if image.size != (cw, ch):
                image = image.resize((cw, ch), Image.NEAREST)
            grid.paste(image, (x, y))
    return grid


def multiplier_label(multiplier: float) -> str:
    return f"{multiplier:g}"
