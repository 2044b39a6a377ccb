"""The Hypernetworks page among the host's extra-network tabs: one card per file of the folder.

The cards say what the standalone cards say (:func:`extension.ui.cards.make_card`): preview, description, the
metadata line (widths, structure, activation, step, base model, size, hash), a warning when the network does not
fit the loaded model, and the error of a file that does not load. A click inserts ``<hypernet:NAME:M>`` with the
host's "Default multiplier for extra networks"; search matches the path, the description and the sha256 (hashed in
the background, as the standalone library does); the metadata button shows everything stored in the file.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

from modules import shared, ui_extra_networks
from modules.ui_extra_networks import quote_js

from ...ui.cards import make_card
from . import folder, model

TITLE = "Hypernetworks"


def card_description(card) -> str:
    lines = []
    if card.error:
        lines.append(f"⚠ cannot be used: {card.error}")
    elif card.fit in ("none", "partial"):
        lines.append(f"⚠ {card.fit_note}")
    if card.description:
        lines.append(card.description)
    lines.append(card.metadata_line())
    return "\n".join(lines)


RAW_NAME = "hn_raw_name"  # a tree entry's unescaped name, for the card fields the host escapes itself
MAX_USER_METADATA = 1 << 20  # the host reads NAME.json whole, into memory


def host_may_read(sidecar: Path, root: Path) -> bool:
    """Whether the host's own reader may open ``sidecar`` (NAME.json, read whole by the host): absent, or a small
    regular file inside the folder. A link out of the folder or a huge file is left alone (the card's own text reads
    the description safely: :mod:`extension.ui.cards`)."""
    try:
        if not os.path.lexists(sidecar):
            return True
        if sidecar.is_symlink() or not sidecar.resolve().is_relative_to(root.resolve()):
            return False
        return sidecar.is_file() and sidecar.stat().st_size <= MAX_USER_METADATA
    except OSError:
        return False


# AUTOMATIC1111 1.8 and Forge Classic put the name and path into the card buttons' onclick as JavaScript strings
# ('{name}'): HTML-escaping does not protect those (the browser decodes &#x27; back to ' before the script runs).
# The same buttons, with the values read from data attributes instead (as Forge's own templates do).
SAFE_BUTTONS = {
    "btn_copy_path_tpl": ("'{filename}'", '<div class="copy-path-button card-button" title="Copy path to clipboard" '
                          'onclick="extraNetworksCopyCardPath(event, this.dataset.clipboardText)" '
                          'data-clipboard-text="{filename}"></div>'),
    "btn_metadata_tpl": ("'{name}'", '<div class="metadata-button card-button" title="Show internal metadata" '
                         'onclick="extraNetworksRequestMetadata(event, \'{extra_networks_tabname}\', '
                         'this.dataset.name)" data-name="{name}"></div>'),
    "btn_edit_item_tpl": ("'{name}'", '<div class="edit-button card-button" title="Edit metadata" '
                          'onclick="extraNetworksEditUserMetadata(event, \'{tabname}\', '
                          '\'{extra_networks_tabname}\', this.dataset.name)" data-name="{name}"></div>'),
}


class HypernetworksPage(ui_extra_networks.ExtraNetworksPage):
    def __init__(self):
        super().__init__(TITLE)
        for attribute, (unsafe, safe) in SAFE_BUTTONS.items():
            if unsafe in getattr(self, attribute, ""):
                setattr(self, attribute, safe)

    def refresh(self):
        folder.library().refresh()

    def create_item(self, name, index=None, enable_filter=True):
        library = folder.library()
        entry = library.get(name)
        if entry is None:
            return None
        card = make_card(library, entry, model.attention_widths(shared.sd_model),
                         preview_uri=lambda path: self.link_preview(str(path)))
        details = library.details(entry)
        stem = str(entry.path.with_suffix(""))
        item = {
            "name": entry.name,
            "filename": str(entry.path),
            "shorthash": card.sha256[:10] if card.sha256 else None,
            "preview": card.preview,
            "search_terms": [self.search_terms_from_path(str(entry.path)), *([card.sha256] if card.sha256 else [])],
            "local_preview": f"{stem}.preview.{shared.opts.samples_format}",
            "metadata": {"file": entry.rel_path, "format": entry.path.suffix.lstrip("."),
                         **({"error": details.error} if details.error else {}),
                         **(details.info.as_dict() if details.info else {})},
            "sort_keys": {"default": index, **self.get_sort_keys(str(entry.path))},
            "prompt": quote_js(f"<hypernet:{entry.name}:") + " + opts.extra_networks_default_multiplier + "
            + quote_js(">"),
        }
        if host_may_read(entry.path.with_suffix(".json"), library.root):
            self.read_user_metadata(item)  # the host's user metadata (NAME.json), as on its other pages
        else:
            item["user_metadata"] = {}
        item["description"] = card_description(card)  # the card's own text (which reads NAME.json's too)
        return item

    def create_item_html(self, tabname, item, template=None):
        """The host's card, given escaped copies of what it inserts into the page unescaped.

        The hosts (Forge Classic, AUTOMATIC1111 1.8) put each search term into the HTML as it is and the file path
        into an attribute, so a file named ``<img src=x onerror=...>.pt`` would run script in the page and one with a
        ``"`` would break the card; the description is raw too when "description is HTML" is on. The item the host
        keeps (its metadata, previews, user metadata) is unchanged."""
        shown = dict(item)
        if RAW_NAME in item:  # from the tree view below: the host escapes the name here itself
            shown["name"] = shown.pop(RAW_NAME)
        shown["search_terms"] = [html.escape(str(term)) for term in item.get("search_terms", [])]
        shown["filename"] = html.escape(str(item.get("filename", "")))
        if getattr(shared.opts, "extra_networks_card_description_is_html", False):
            shown["description"] = html.escape(str(item.get("description") or ""))
        return super().create_item_html(tabname, shown, template)

    def create_tree_file_item_html(self, tabname, file_path, item):
        """The host's tree entry of a file, which shows the name and its path as they are: given escaped."""
        shown = {**item, "name": html.escape(str(item.get("name", ""))), RAW_NAME: item.get("name", "")}
        return super().create_tree_file_item_html(tabname, html.escape(str(file_path)), shown)

    def create_tree_dir_item_html(self, tabname, dir_path, content=None):
        """The host's tree entry of a subfolder, which shows its name and path as they are: given escaped."""
        return super().create_tree_dir_item_html(tabname, html.escape(str(dir_path)), content)

    def list_items(self):
        library = folder.library()
        library.refresh()  # a new file shows on the next render, as the host's own pages rescan
        entries = library.entries()
        library.hash_in_background()
        for index, entry in enumerate(entries):
            item = self.create_item(entry.name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self):
        return [str(folder.library().root)]


def replace_page(extra_pages: list, page) -> None:
    """Put ``page`` in the host's list of pages, in place of any Hypernetworks page already there (the host's own,
    reForge's, or ours from before a "Reload UI")."""
    extra_pages[:] = [p for p in extra_pages if getattr(p, "title", None) != TITLE]
    ui_extra_networks.register_page(page)
