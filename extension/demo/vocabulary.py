"""The words the trained demo model knows, the colours they mean, and the captions it was trained on.

The demo model learned only these words. A prompt is ``"a {colour} {shape} on a {background} background"``
(or ``"a {colour} {shape}"``, then the background is the model's choice); any other word is ignored
or confuses it.
"""
from __future__ import annotations

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (40, 70, 230),
    "yellow": (245, 220, 30),
    "orange": (250, 140, 10),
    "purple": (150, 40, 190),
}
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "blue": (40, 70, 230),
}
VOCABULARY = {
    "colours": tuple(COLOURS),
    "shapes": SHAPES,
    "backgrounds": tuple(BACKGROUNDS),
}
# Colour-shape pairs never shown to the model together (on any background): does it compose words?
HELD_OUT_PAIRS = (("purple", "triangle"), ("green", "star"), ("orange", "circle"), ("yellow", "square"))

EXAMPLE_PROMPTS = (
    "a red circle on a white background",
    "a yellow star on a black background",
    "a green triangle on a gray background",
    "an orange square on a blue background",
    "a purple star on a white background",
    "a blue circle on a black background",
)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(colour: str, shape: str, background: str | None = None) -> str:
    """The training caption for a picture (``background=None`` leaves the background unsaid)."""
    text = f"{article(colour)} {colour} {shape}"
    return text if background is None else f"{text} on {article(background)} {background} background"


def combinations(held_out: bool | None = None) -> list[tuple[str, str, str]]:
    """Every ``(colour, shape, background)`` with a shape colour unlike its background.

    ``held_out=True`` gives only the held-out colour-shape pairs, ``False`` only the trained ones,
    ``None`` all of them.
    """
    found = []
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                if COLOURS[colour] == BACKGROUNDS[background]:
                    continue
                is_held_out = (colour, shape) in HELD_OUT_PAIRS
                if held_out is None or held_out == is_held_out:
                    found.append((colour, shape, background))
    return found
