"""AUTOMATIC1111's own list of hypernetwork files, without the names a page cannot show: the one patch of the host.

AUTOMATIC1111 keeps ``shared.hypernetworks`` (``.pt`` files, by ``list_hypernetworks``) for its own Train tab and
its refresh buttons. A file whose name is not valid UTF-8 goes into that list as it is, and Gradio then cannot
serialise the page's config: the whole UI answers 500 (AUTOMATIC1111's bug; the standalone library hides such
files). No extension point reaches that list, so :func:`install` wraps ``list_hypernetworks`` once: the same result
with those names left out, and the host's own result whenever the filter fails. Everything else of the host's own
hypernetwork code is left as it is.
"""
from __future__ import annotations


def showable(text) -> bool:
    """Whether ``text`` can go into a page (JSON, UTF-8): False for file names with undecodable bytes."""
    try:
        str(text).encode("utf-8")
    except UnicodeError:
        return False
    return True


def install() -> bool:
    """Wrap AUTOMATIC1111's ``list_hypernetworks`` (idempotent: "Reload UI" wraps the original again); False where
    the host has no such function."""
    try:
        from modules.hypernetworks import hypernetwork
    except ImportError:
        return False
    listing = getattr(hypernetwork, "list_hypernetworks", None)
    if listing is None:
        return False
    original = getattr(listing, "hn_original", listing)

    def list_hypernetworks(path):
        found = original(path)
        try:
            return {name: file for name, file in found.items() if showable(name) and showable(file)}
        except Exception:  # noqa: BLE001 - the host's own result, unfiltered, rather than none
            return found

    list_hypernetworks.hn_original = original
    hypernetwork.list_hypernetworks = list_hypernetworks
    return True
