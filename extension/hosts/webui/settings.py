"""The host's settings the extension uses, in the host's own settings page.

- ``sd_hypernetwork`` ("Add hypernetwork to prompt", section Extra Networks): the host's option of that name,
  whose choices list every file of the folder (Forge's own lists ``.pt`` files only, Classic has none);
- ``extra_networks_default_multiplier``: the host's, added with the host's default where a host lacks it;
- ``sd_hypernetworks_dir`` ("Hypernetworks folder", section Hypernetworks): the extension's own, for hosts whose
  command line has no folder flag of their own (:mod:`.folder` has the order).
"""
from __future__ import annotations

from . import folder

ADD_TO_PROMPT = "sd_hypernetwork"
DEFAULT_MULTIPLIER = "extra_networks_default_multiplier"


def choices() -> dict:
    return {"choices": ["None", *folder.library().names()]}


def refresh_choices() -> None:
    folder.library().refresh()


def register_settings() -> None:
    import gradio as gr
    from modules import shared

    options = {
        ADD_TO_PROMPT: shared.OptionInfo("None", "Add hypernetwork to prompt", gr.Dropdown, choices,
                                         refresh=refresh_choices),
    }
    if DEFAULT_MULTIPLIER not in shared.options_templates:
        options[DEFAULT_MULTIPLIER] = shared.OptionInfo(1.0, "Default multiplier for extra networks", gr.Slider,
                                                        {"minimum": 0.0, "maximum": 2.0, "step": 0.01})
    section = ("extra_networks", "Extra Networks", "sd")
    existing = shared.options_templates.get(ADD_TO_PROMPT)
    if existing is not None and getattr(existing, "section", None):
        section = existing.section  # keep the host's section (and category) for its own option
    shared.options_templates.update(shared.options_section(section, options))
    # A folder setting, as the host's output folders are: hidden and locked with --hide-ui-dir-config.
    own = {folder.FOLDER_SETTING: shared.OptionInfo(
        "", "Hypernetworks folder (empty: models/hypernetworks; --hypernetwork-dir on the command line wins)",
        gr.Textbox, getattr(shared, "hide_dirs", None)).needs_reload_ui()}
    restricted = getattr(shared, "restricted_opts", None)
    if isinstance(restricted, set):
        restricted.add(folder.FOLDER_SETTING)
    shared.options_templates.update(shared.options_section(("hypernetworks", "Hypernetworks"), own))
