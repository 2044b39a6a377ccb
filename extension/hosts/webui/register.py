"""What ``scripts/hypernetworks.py`` does in a host, on every load of the scripts ("Reload UI" included).

Each registration replaces what it would otherwise add twice: the host's callbacks of this file are taken out
first, the ``hypernet`` handler replaces whatever has that name (the built-in one, which applies nothing in
Forge), the page replaces any page titled Hypernetworks, and the routes replace the host's and ours.
"""
from __future__ import annotations

from modules import extra_networks, script_callbacks, ui_extra_networks

from . import routes, settings, training
from .network import HypernetworkExtraNetwork
from .page import HypernetworksPage, replace_page


def before_ui() -> None:
    extra_networks.register_extra_network(HypernetworkExtraNetwork())
    replace_page(ui_extra_networks.extra_pages, HypernetworksPage())


def app_started(_demo, app) -> None:
    routes.install_routes(app, train_route=training.train_route)


CALLBACKS = ((script_callbacks.on_before_ui, before_ui), (script_callbacks.on_app_started, app_started),
             (script_callbacks.on_after_component, training.remember_component),
             (script_callbacks.on_ui_tabs, training.ui_tabs))


def register_with_host() -> None:
    settings.register_settings()
    for add, callback in CALLBACKS:
        script_callbacks.remove_callbacks_for_function(callback)
        add(callback)
