"""Extra-network cards for hypernetworks, as AUTOMATIC1111 draws them: what each card says, search, sort, HTML.

Pure functions of the models folder and the loaded model's attention widths; the Gradio panel that shows
them is in ``extension/ui/hypernetworks_script.py``. Clicking a card is handled in ``javascript/hypernetworks.js``
from the ``data-*`` attributes written here.
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import re
from typing import Callable, Iterable

from ..library import EntryDetails, HypernetworkLibrary, LibraryEntry

SORT_KEYS = ("Name", "Date modified", "Size")


@dataclasses.dataclass(frozen=True)
class Card:
    """What a card shows about one file."""

    name: str
    rel_path: str
    description: str
    size: int
    mtime: float
    sha256: str | None
    sizes: tuple[int, ...]
    structure: str
    activation: str
    step: int | None
    base_model: str
    error: str | None
    fit: str  # "ok", "partial", "none" or "unknown" (no model loaded / file broken)
    fit_note: str
    preview: str | None  # URL or data URI

    @property
    def search_terms(self) -> str:
        return "\n".join(t for t in (self.name, self.rel_path, self.description, self.sha256 or "") if t).lower()

    def metadata_line(self) -> str:
        parts = []
        if self.sizes:
            parts.append("sizes " + ", ".join(str(s) for s in self.sizes))
        if self.structure:
            parts.append(self.structure)
        if self.activation:
            parts.append(self.activation)
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.base_model:
            parts.append(self.base_model)
        parts.append(human_size(self.size))
        if self.sha256:
            parts.append(f"[{self.sha256[:10]}]")
        return " · ".join(parts)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _structure(layer_structure: Iterable[float]) -> str:
    return "-".join(f"{float(x):g}" for x in layer_structure)


def fit_of(sizes: Iterable[int], widths: set[int] | None) -> tuple[str, str]:
    """How a network's widths fit a model's attention widths: (``ok``|``partial``|``none``|``unknown``, note)."""
    sizes = sorted(set(sizes))
    if widths is None or not sizes:
        return "unknown", ""
    unused = [s for s in sizes if s not in widths]
    if not unused:
        return "ok", ""
    have = ", ".join(str(w) for w in sorted(widths))
    if len(unused) == len(sizes):
        return "none", (f"none of its widths ({', '.join(map(str, sizes))}) exist in the loaded model "
                        f"(attention widths {have}): it would change nothing")
    return "partial", (f"widths {', '.join(map(str, unused))} do not exist in the loaded model "
                       f"(attention widths {have}); only {', '.join(str(s) for s in sizes if s in widths)} apply")


# A preview is decoded whole before it is shrunk: one of more pixels (a PNG of zeros compresses a thousandfold)
# is not shown. 16 Mpx (4096 x 4096) decode to at most ~112 MB, briefly; real previews are under 1 Mpx.
MAX_PREVIEW_PIXELS = 16 << 20


def preview_fits(path) -> bool:
    """Whether the image at ``path`` is small enough to decode for a card, read from its header alone."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by a lower limit
            with Image.open(path) as image:
                width, height = image.size
    except Exception:  # noqa: BLE001 - not an image PIL reads (or a bomb PIL refuses): no preview
        return False
    return width * height <= MAX_PREVIEW_PIXELS


def make_card(library: HypernetworkLibrary, entry: LibraryEntry, widths: set[int] | None,
              preview_uri: Callable | None = None, hash_now: bool = False) -> Card:
    """The card for ``entry``. The file is hashed only with ``hash_now`` (a search by hash); otherwise the
    hash shows once known (loaded, or hashed by the library's background hasher)."""
    details: EntryDetails = library.details(entry)
    info = details.info
    sha = library.known_sha256(entry) or (info.sha256 if info else None)
    if sha is None and details.error is None and hash_now:
        try:
            sha = library.sha256(entry)
        except OSError:
            sha = None
    fit, note = fit_of(info.sizes, widths) if info else ("unknown", "")
    base = ""
    if info and (info.sd_checkpoint_name or info.sd_checkpoint):
        base = f"base {info.sd_checkpoint_name or ''}" + (f" [{info.sd_checkpoint[:10]}]" if info.sd_checkpoint else "")
    preview = None
    if entry.preview is not None and preview_fits(entry.preview):
        preview = preview_uri(entry.preview) if preview_uri else str(entry.preview)
    return Card(
        name=entry.name, rel_path=entry.rel_path, description=entry.description(), size=entry.size,
        mtime=entry.mtime, sha256=sha,
        sizes=tuple(info.sizes) if info else (), structure=_structure(info.layer_structure) if info else "",
        activation=(info.activation_func or "linear") + (", layer norm" if info.add_layer_norm else "")
        + (", dropout" if info.use_dropout else "") if info else "",
        step=info.step if info else None, base_model=base.strip(), error=details.error, fit=fit, fit_note=note,
        preview=preview)


def is_hash_query(query: str) -> bool:
    """Whether ``query`` contains a word that could be (part of) a sha256."""
    return any(re.fullmatch(r"[0-9a-f]{6,64}", word) for word in (query or "").lower().split())


def filter_cards(cards: Iterable[Card], query: str) -> list[Card]:
    """Cards whose name, path, description or hash contain every word of ``query`` (case-insensitive)."""
    words = (query or "").lower().split()
    return [card for card in cards if all(word in card.search_terms for word in words)]


def sort_cards(cards: Iterable[Card], key: str = "Name", descending: bool = False) -> list[Card]:
    if key == "Date modified":
        sort_key = lambda c: (c.mtime, c.name.lower())  # noqa: E731
    elif key == "Size":
        sort_key = lambda c: (c.size, c.name.lower())  # noqa: E731
    else:
        sort_key = lambda c: (c.name.lower(), c.rel_path.lower())  # noqa: E731
    return sorted(cards, key=sort_key, reverse=descending)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def card_html(card: Card, multiplier: float) -> str:
    classes = ["hn-card"]
    if card.error:
        classes.append("hn-card-error")
    if card.fit in ("none", "partial"):
        classes.append(f"hn-fit-{card.fit}")
    modified = datetime.datetime.fromtimestamp(card.mtime).strftime("%Y-%m-%d %H:%M")
    if card.preview:
        preview = f'<img class="hn-preview" src="{_e(card.preview)}" alt="" loading="lazy">'
    else:
        preview = '<div class="hn-preview hn-no-preview"><span>no preview</span></div>'
    badge = ""
    if card.fit == "none":
        badge = f'<span class="hn-badge hn-badge-none" title="{_e(card.fit_note)}">incompatible</span>'
    elif card.fit == "partial":
        badge = f'<span class="hn-badge hn-badge-partial" title="{_e(card.fit_note)}">partly fits</span>'
    if card.error:
        badge = '<span class="hn-badge hn-badge-error">failed to load</span>'
    body = (f'<div class="hn-error">{_e(card.error)}</div>' if card.error
            else f'<div class="hn-meta">{_e(card.metadata_line())}</div>')
    description = f'<div class="hn-description">{_e(card.description)}</div>' if card.description else ""
    note = f'<div class="hn-fit-note">{_e(card.fit_note)}</div>' if card.fit_note else ""
    return (
        f'<div class="{" ".join(classes)}" data-name="{_e(card.name)}" data-multiplier="{multiplier:g}" '
        f'data-path="{_e(card.rel_path)}" data-sha256="{_e(card.sha256 or "")}" data-size="{card.size}" '
        f'data-mtime="{card.mtime:.0f}" title="{_e(card.rel_path)} · modified {modified}" tabindex="0">'
        f'{preview}{badge}'
        f'<button class="hn-meta-button" type="button" title="show everything stored in the file" '
        f'aria-label="metadata of {_e(card.name)}">i</button>'
        f'<div class="hn-card-text"><div class="hn-name">{_e(card.name)}</div>{description}{body}{note}</div>'
        f'</div>')


def skipped_html(skipped: list[tuple[str, str]]) -> str:
    """A line naming the files the folder scan left out, and why (links out of the folder, undecodable names)."""
    if not skipped:
        return ""
    shown = "; ".join(f"{_e(path)} ({_e(why)})" for path, why in skipped[:20])
    more = f"; and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    return (f'<div class="hn-skipped">{len(skipped)} file{"s" if len(skipped) != 1 else ""} not listed, never '
            f'read: {shown}{more}</div>')


def cards_html(cards: list[Card], multiplier: float, total: int, query: str = "", folder: str = "",
               report: str = "", skipped: list[tuple[str, str]] | None = None) -> str:
    """The whole panel body: a count line, the files left out (if any) and the cards (or a line saying why
    there are none)."""
    if cards:
        shown = f"{len(cards)} of {total}" if len(cards) != total else f"{total}"
        head = f'<div class="hn-count">{shown} hypernetwork{"s" if total != 1 else ""}</div>'
        items = "".join(card_html(card, multiplier) for card in cards)
    elif total:
        head = f'<div class="hn-count">no hypernetwork matches {_e(query)!s} ({total} in the folder)</div>'
        items = ""
    else:
        head = (f'<div class="hn-count">no hypernetworks in {_e(folder)}: put .pt or .safetensors files '
                f'there and press refresh</div>')
        items = ""
    if report:
        head = head.replace("</div>", f' <span class="hn-refresh-report">· {_e(report)}</span></div>', 1)
    return (f'<div class="hn-cards" data-prompt="txt2img_prompt" data-default-multiplier="{multiplier:g}">'
            f'{head}{skipped_html(skipped or [])}<div class="hn-card-grid">{items}</div></div>')
