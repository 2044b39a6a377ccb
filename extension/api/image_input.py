"""Images that arrive in a request: base64 text, as AUTOMATIC1111's clients send them.

AUTOMATIC1111 accepts plain base64 and ``data:image/...;base64,`` URLs (its ``decode_base64_to_image``); so
does :func:`decode_image`. What cannot be an image is a :class:`BadImage` naming the field, never a 500, and a
decompression bomb is refused by Pillow's own pixel limit before it is decoded.
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

DATA_URL = "data:"


class BadImage(ValueError):
    """A field that does not hold a decodable image; the message names the field."""


def decode_image(text, field: str) -> Image.Image:
    """The image ``text`` holds (base64, or a ``data:`` URL), loaded.

    Raises:
        BadImage: empty, not base64, not an image format Pillow reads, or too many pixels.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadImage(f"{field}: no image given (a base64 PNG or JPEG)")
    text = text.strip()
    if text.startswith(DATA_URL):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise BadImage(f"{field}: a data: URL must be base64 ({header[:40]!r})")
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"{field}: not base64 ({exc})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"{field}: the image is too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad data
        raise BadImage(f"{field}: not an image Pillow can read ({type(exc).__name__}: {exc})") from None
    return image


__all__ = ["BadImage", "decode_image"]
