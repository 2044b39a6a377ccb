"""Saving generated pictures: PNGs with their infotext, numbered AUTOMATIC1111's way, never overwritten.

A picture is written under a temporary name, then linked to ``NNNNN-<suffix>.png`` with the first free number
(a hard link fails when the name exists, and the folder is locked while a number is chosen, so two writers
never take the same number), then the temporary name goes. A crash at any moment leaves no half-written picture
under a numbered name. Used for generations, grids and training previews.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .fileio import TEMP_PREFIX, TEMP_SUFFIX, new_file_mode


def next_sequence_number(directory: Path) -> int:
    """A1111's ``get_next_sequence_number``: one more than the largest leading number of a file name.

    Args:
        directory: the folder (missing: 0).

    Returns:
        The number the next picture takes, 0 in an empty folder.
    """
    result = -1
    if Path(directory).is_dir():
        for name in os.listdir(directory):
            try:
                result = max(int(os.path.splitext(name)[0].split("-")[0]), result)
            except ValueError:
                pass
    return result + 1


def png_info(infotext: str | None):
    """A PNG text chunk ``parameters`` holding ``infotext`` (what AUTOMATIC1111 reads back), or None.

    Args:
        infotext: the text, or None / empty for no chunk.

    Returns:
        A ``PIL.PngImagePlugin.PngInfo`` for ``Image.save(pnginfo=...)``, or None.
    """
    from PIL.PngImagePlugin import PngInfo

    if not infotext:
        return None
    info = PngInfo()
    info.add_text("parameters", infotext)
    return info


# What AUTOMATIC1111's read_info_from_image leaves out of the "items" it reports: format details, not text.
IGNORED_INFO_KEYS = frozenset({"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop",
                               "background", "timestamp", "duration", "progressive", "progression", "icc_profile",
                               "chromaticity", "photoshop"})
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def read_infotext(image) -> tuple[str | None, dict]:
    """AUTOMATIC1111's ``read_info_from_image``: ``(infotext or None, the image's other text fields)``.

    The infotext is a PNG's ``parameters`` chunk, a JPEG/WebP's EXIF UserComment, or a GIF's comment. Values of
    the other fields that are not text (bytes, tuples) are given as text, so the answer is JSON.
    """
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if geninfo is None and "exif" in items:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
        if isinstance(comment, bytes):  # an 8-byte character-code prefix, then the text
            code, body = comment[:8], comment[8:]
            geninfo = body.decode("utf-16-be" if code.startswith(b"UNICODE") else "utf-8", errors="ignore")
        elif isinstance(comment, str):
            geninfo = comment
    elif geninfo is None and isinstance(items.get("comment"), bytes):
        geninfo = items["comment"].decode("utf-8", errors="ignore")
    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)
    safe = {}
    for key, value in items.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            value = str(value)
        safe[str(key)] = value
    return (geninfo.strip("\x00") if isinstance(geninfo, str) else geninfo), safe


def save_png(image, directory, suffix: str, infotext: str | None = None) -> Path:
    """Save ``image`` as ``directory/NNNNN-<suffix>.png`` (the next free number), with ``infotext``.

    Args:
        image: a PIL image.
        directory: created when missing.
        suffix: what follows the number, e.g. the seed (``00012-1234.png``).
        infotext: written into the ``parameters`` chunk.

    Returns:
        The path written. Never overwrites a file, even with other writers in the same folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}image.", suffix=TEMP_SUFFIX, dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=png_info(infotext))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, new_file_mode())  # as a plain open() would make it, not mkstemp's 0o600
        with _folder_lock(directory):  # numbers are unique per folder, whatever follows them
            number = next_sequence_number(directory)
            while True:
                path = directory / f"{number:05}-{suffix}.png"
                try:
                    os.link(tmp, path)
                    return path
                except FileExistsError:  # a writer that does not lock took the name meanwhile
                    number += 1
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_lock(directory: Path):
    """An exclusive lock on ``directory`` (``flock``: between threads and processes alike), held while a number is
    chosen and taken. Where ``flock`` does not exist, the exclusive link alone prevents overwriting."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_png_as(image, path, infotext: str | None = None) -> Path:
    """Save ``image`` at exactly ``path`` (replacing it), atomically, with ``infotext``.

    Args:
        image: a PIL image.
        path: the file; its folder is created when missing.
        infotext: written into the ``parameters`` chunk, or None.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    from .fileio import atomic_write

    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(infotext)))
