"""What ``scripts/hypernetworks.py`` does in a host, on every load of the scripts ("Reload UI" included).

Each registration replaces what it would otherwise add twice: the host's callbacks of this file are taken out
first, the ``hypernet`` handler replaces whatever has that name (the built-in one, which applies nothing in Forge
and reForge), the page replaces any page titled Hypernetworks, and the routes replace the host's and ours.

Hosts order extensions' callbacks their own way (by folder, by extension metadata), so another ``on_before_ui``
callback may run after ours and register a ``hypernet`` handler or a Hypernetworks page of its own. The first
component the host builds after those callbacks (before its extra-network tabs) puts ours back in place
(:func:`after_component`), with a warning naming what it replaced.
"""
from __future__ import annotations

import logging

from modules import extra_networks, script_callbacks, ui_extra_networks

from ..detect import A1111, running_host
from . import a1111_lists, routes, settings, training
from .network import HypernetworkExtraNetwork
from .page import TITLE, HypernetworksPage, replace_page

log = logging.getLogger(__name__)
_ours: dict = {}  # the handler and page this load of the scripts registered, until the UI is being built


def before_ui() -> None:
    _ours["handler"] = HypernetworkExtraNetwork()
    _ours["page"] = HypernetworksPage()
    extra_networks.register_extra_network(_ours["handler"])
    replace_page(ui_extra_networks.extra_pages, _ours["page"])


def ensure_ours() -> None:
    """Our handler and our one Hypernetworks page, whatever registered after :func:`before_ui`."""
    handler, page = _ours.get("handler"), _ours.get("page")
    if handler is None or page is None:
        return
    current = extra_networks.extra_network_registry.get(handler.name)
    if current is not handler:
        log.warning("hypernetworks: %s replaced the hypernet handler after us; ours is back in place",
                    type(current).__module__ if current is not None else "something")
        extra_networks.register_extra_network(handler)
    pages = [p for p in ui_extra_networks.extra_pages if getattr(p, "title", None) == TITLE]
    if pages != [page]:
        others = [type(p).__module__ for p in pages if p is not page]
        log.warning("hypernetworks: another Hypernetworks page was registered (%s); ours alone is kept",
                    ", ".join(others))
        replace_page(ui_extra_networks.extra_pages, page)


def after_component(component, **kwargs) -> None:
    if _ours.get("page") is not None:
        ensure_ours()
        _ours.clear()  # once per UI build
    training.remember_component(component, **kwargs)


def app_started(_demo, app) -> None:
    ensure_ours()  # with --nowebui no component is built: the check runs here
    _ours.clear()
    routes.install_routes(app, train_route=training.train_route)


CALLBACKS = ((script_callbacks.on_before_ui, before_ui), (script_callbacks.on_app_started, app_started),
             (script_callbacks.on_after_component, after_component),
             (script_callbacks.on_ui_tabs, training.ui_tabs))


def register_with_host() -> None:
    if running_host() == A1111:
        a1111_lists.install()
    settings.register_settings()
    for add, callback in CALLBACKS:
        script_callbacks.remove_callbacks_for_function(callback)
        add(callback)
