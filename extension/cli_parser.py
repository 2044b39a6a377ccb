"""The command line's shared parser pieces: :class:`ModeParser` and the server mode's flags.

Every front end that builds a parser (``extension/cli.py``, ``extension/generate_cli.py``,
``extension/training/cli.py``, the API's ``/sdapi/v1/cmd-flags``) imports them from here, so none of them
imports ``extension/cli.py``, which imports them all.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from . import paths

# Every mode flag of launch.py (``extension.cli.MODES``; a test keeps the two equal): a close one is suggested
# for a mistyped flag.
MODE_FLAGS = ("--test", "--generate", "--create-hypernetwork", "--train-hypernetwork", "--train-demo-model")


class ModeParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors point at ``launch.py --help`` and suggest a close flag name."""

    def error(self, message: str):
        hint = ""
        match = re.search(r"unrecognized arguments: (.*)", message)
        if match:
            known = [*self._option_string_actions, *MODE_FLAGS]
            for arg in match.group(1).split():
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1) if arg.startswith("--") else []
                if close:
                    hint += f"\n{self.prog}: did you mean {close[0]}?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n(launch.py --help lists every mode and its flags)\n")


def server_parser() -> argparse.ArgumentParser:
    parser = ModeParser(prog="launch.py", description="Serve the web UI (the default mode: no mode flag).")
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on (default 7860; 7861 with --nowebui, as AUTOMATIC1111)")
    parser.add_argument("--listen", action="store_true",
                        help="serve on 0.0.0.0 instead of 127.0.0.1 (a warning is printed without --gradio-auth, "
                             "and with the API without --api-auth)")
    parser.add_argument("--server-name", default=None, metavar="NAME",
                        help="the address (or host name) to serve on, and a host name the server answers to "
                             "(default 127.0.0.1; 0.0.0.0 with --listen)")
    parser.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                        help="host names the server answers to besides localhost, IP addresses and --server-name "
                             "(comma-separated; '*' for any): other Host headers get a 403, against DNS rebinding")
    parser.add_argument("--hypernetwork-dir", type=Path, default=paths.HYPERNETWORK_DIR,
                        help="folder of hypernetwork files (default models/hypernetworks)")
    parser.add_argument("--ckpt-dir", type=Path, default=paths.CKPT_DIR,
                        help="folder of checkpoints (default models/Stable-diffusion)")
    parser.add_argument("--ckpt", default=None, help="checkpoint to load at start (default: the demo model)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when present)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="weights precision (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--gradio-auth", default=None, help='"user:password" (several separated by commas)')
    parser.add_argument("--gradio-auth-path", type=Path, default=None,
                        help="file with user:password lines (or comma-separated pairs)")
    parser.add_argument("--outdir", type=Path, default=paths.OUTPUT_DIR,
                        help="where images are saved (default outputs/)")
    parser.add_argument("--train-data-dir", type=Path, action="append", default=None, metavar="DIR",
                        help="a folder training may read datasets from and write logs to (repeat for several; "
                             "default: the project folder); relative training paths are relative to the first")
    api = parser.add_argument_group("REST API (AUTOMATIC1111's /sdapi/v1, schema at /docs)")
    api.add_argument("--api", action="store_true", help="serve the API on the same server as the UI")
    api.add_argument("--nowebui", action="store_true", help="serve the API alone, without the UI")
    api.add_argument("--api-auth", default=None,
                     help='HTTP Basic for every /sdapi route: "user:password" (several separated by commas)')
    api.add_argument("--api-auth-path", type=Path, default=None,
                     help="file with user:password lines (or comma-separated pairs) for the API")
    api.add_argument("--api-log", action="store_true", help="print a line for every API request")
    return parser
