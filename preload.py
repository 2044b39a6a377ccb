"""Command-line flags a host web UI (Forge, AUTOMATIC1111) learns from this extension before it parses its own.

The host calls ``preload(parser)`` with its argparse parser. A flag the host already has is left as it is:
Forge and AUTOMATIC1111 define ``--hypernetwork-dir`` themselves; Forge Classic and Neo removed it, and get it here,
with the same default (``MODELS/hypernetworks``).

- ``--hypernetwork-dir DIR``: the hypernetworks folder (over the setting "Hypernetworks folder"; default
  ``MODELS/hypernetworks``);
- ``--train-data-dir DIR`` (repeatable): a folder that training, started from the page or the API, may read
  datasets from and write logs to (as in the standalone host); the host's data folder is always one.
"""
import os


def _has(parser, flag: str) -> bool:
    return any(flag in action.option_strings for action in parser._actions)  # noqa: SLF001


def preload(parser):
    from modules import paths_internal

    if not _has(parser, "--hypernetwork-dir"):
        parser.add_argument("--hypernetwork-dir", type=str,
                            default=os.path.join(paths_internal.models_path, "hypernetworks"),
                            help="hypernetwork directory (sd-webui-hypernetworks)")
    if not _has(parser, "--train-data-dir"):
        parser.add_argument("--train-data-dir", action="append", default=None, metavar="DIR",
                            help="a folder hypernetwork training may read datasets from and write logs to, besides "
                                 "the data folder (repeat for several; sd-webui-hypernetworks)")
