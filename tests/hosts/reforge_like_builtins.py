"""Test-only extension script: what reForge registers for hypernetworks (a ``hypernet`` handler and a Hypernetworks
page, neither of which applies anything; ``../shared/hosts/README.md``), for a host that does not have them.

``tests/test_host_forge_classic.py`` installs it as ``extensions/a-reforge-like-builtins/scripts/`` in Forge Classic,
which runs reForge's backend. reForge registers its two at start-up, before any extension's ``on_before_ui``
callback runs; here they come from a callback of the same kind, whose order against ours is the host's choice:
ours must win either way.
"""
from modules import extra_networks, script_callbacks, ui_extra_networks

MARK = "REFORGE-LIKE HYPERNET HANDLER RAN"


class DeadHypernetHandler(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("hypernet")

    def activate(self, p, params_list):
        if params_list:
            print(MARK, flush=True)

    def deactivate(self, p):
        pass


class DeadHypernetworksPage(ui_extra_networks.ExtraNetworksPage):
    def __init__(self):
        super().__init__("Hypernetworks")

    def list_items(self):
        return []

    def allowed_directories_for_previews(self):
        return []


def before_ui():
    extra_networks.register_extra_network(DeadHypernetHandler())
    ui_extra_networks.register_page(DeadHypernetworksPage())


script_callbacks.on_before_ui(before_ui)
