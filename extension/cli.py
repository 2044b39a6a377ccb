"""Command-line modes, as AUTOMATIC1111 users know the flags, and what ``launch.py`` does with them.

Every mode is one :class:`Mode` in :data:`MODES`: the flag that selects it, a builder for its argparse parser
(used for ``launch.py --help`` and ``launch.py FLAG --help``) and the function that runs it. To add a mode,
add one entry there; nothing else dispatches on flags. With no mode flag, ``launch.py`` serves the web UI.

The runners and parser builders import what they need when called, so ``--help`` and ``--test`` do not load
diffusers.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable

from . import paths
from .cli_parser import ModeParser, server_parser
from .quiet_warnings import quiet_image_processor_fallback

ROOT = paths.ROOT

LAUNCH_OPTIONS = """\
launch options (any mode):
  --skip-install        do not check the requirements before starting (also: SKIP_INSTALL=1)
  environment: VENV_DIR (the virtual environment, default venv/ beside launch.py), TORCH_COMMAND (how to
  install torch, as in AUTOMATIC1111), SKIP_VENV=1 (run in the current interpreter)"""


# -- the modes ----------------------------------------------------------------------------------------------------
def serve(argv: list[str]) -> int:
    options = server_parser().parse_args(argv)
    quiet_image_processor_fallback()
    try:
        from extension.ui.app import serve as serve_ui
    except ImportError:
        return report_found(options)
    serve_ui(options)
    return 0


def report_found(options) -> int:
    """What a start finds, for when the UI is not installed."""
    from extension.library import HypernetworkLibrary

    library = HypernetworkLibrary(options.hypernetwork_dir)
    print(f"hypernetworks in {library.root}:")
    for entry in library.entries():
        details = library.details(entry)
        print(f"  {entry.name}: " + (f"sizes {list(details.info.sizes)}" if details.info else details.error))
    return 0


def test_parser() -> argparse.ArgumentParser:
    parser = ModeParser(prog="launch.py --test", usage="launch.py --test [PYTEST ARGS]", add_help=False,
                        description="Run the test suite in this environment. Every argument after --test goes to "
                                    "pytest (launch.py --test --help shows pytest's own help). The summary lists "
                                    "skipped tests and why (-rfEs) unless you pass your own -r option.")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="PYTEST ARGS",
                        help="e.g. -q, -k generate, tests/test_launch.py")
    return parser


# pytest's short options that take no value, so "-qrs" is "-q -rs" ("-p" and the like take a value).
_PYTEST_FLAG_LETTERS = "qvsxlV"


def has_report_option(args: list[str]) -> bool:
    """Whether pytest ``args`` choose their own summary (``-r CHARS``, ``-qra``, ``--report-chars``)."""
    return any(re.match(rf"-[{_PYTEST_FLAG_LETTERS}]*r", a) or a.startswith("--report-chars") for a in args)


def names_a_path(args: list[str]) -> bool:
    """Whether ``args`` name a test file or folder (then the whole ``tests/`` folder is not added)."""
    return any(not a.startswith("-") and os.path.exists(a.split("::", 1)[0]) for a in args)


def run_tests(argv: list[str]) -> int:
    import pytest

    args = [a for a in argv if a != "--test"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_image_processor_fallback()
    defaults = [] if names_a_path(args) else [str(ROOT / "tests")]
    if not has_report_option(args):
        defaults.append("-rfEs")  # pytest's default summary (failures, errors) plus skips with their reasons
    return int(pytest.main([*defaults, *args]))


def generate_parser() -> argparse.ArgumentParser:
    from extension.generate_cli import parser

    return parser()


def generate(argv: list[str]) -> int:
    quiet_image_processor_fallback()
    from extension.generate_cli import main as generate_main

    return generate_main(argv)


def train_demo_parser() -> argparse.ArgumentParser:
    from extension.demo.train import build_parser

    return build_parser()


def train_demo(argv: list[str]) -> int:
    quiet_image_processor_fallback()
    from extension.demo.train import main as train_main

    i = argv.index("--train-demo-model")
    return train_main([*argv[i + 1:], *argv[:i]])  # OUTDIR first, then the other options


def create_hypernetwork_parser() -> argparse.ArgumentParser:
    from extension.training.cli import create_parser

    return create_parser()


def create_hypernetwork(argv: list[str]) -> int:
    quiet_image_processor_fallback()
    from extension.training.cli import create

    return create(argv)


def train_hypernetwork_parser() -> argparse.ArgumentParser:
    from extension.training.cli import train_parser

    return train_parser()


def train_hypernetwork(argv: list[str]) -> int:
    quiet_image_processor_fallback()
    from extension.training.cli import train

    return train(argv)


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way to run ``launch.py``: ``flag`` selects it (``None``: the default mode, the server)."""

    flag: str | None
    usage: str  # one line for the mode list: "--generate PROMPT [options]"
    summary: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[list[str]], int]  # gets the whole argv, the mode flag included; returns the exit status


SERVER = Mode(None, "[options]", "serve the web UI on http://127.0.0.1:7860", server_parser, serve)
MODES: list[Mode] = [
    Mode("--test", "--test [PYTEST ARGS]", "run the test suite", test_parser, run_tests),
    Mode("--generate", "--generate PROMPT [options]", "write images from a prompt", generate_parser, generate),
    Mode("--create-hypernetwork", "--create-hypernetwork NAME [options]", "create a new hypernetwork file",
         create_hypernetwork_parser, create_hypernetwork),
    Mode("--train-hypernetwork", "--train-hypernetwork NAME --dataset DIR [options]",
         "train a hypernetwork (headless; also under accelerate launch)", train_hypernetwork_parser,
         train_hypernetwork),
    Mode("--train-demo-model", "--train-demo-model OUTDIR [options]", "train the demo model from nothing",
         train_demo_parser, train_demo),
]


def mode_of(argv: list[str]) -> Mode:
    """The mode ``argv`` selects; two mode flags are an error."""
    def selects(arg: str, mode: Mode) -> bool:
        return arg == mode.flag or arg.startswith(mode.flag + "=")

    found = [mode for arg in argv for mode in MODES if selects(arg, mode)]
    if found and found[0].flag == "--test":
        return found[0]  # everything after --test belongs to pytest
    found = list(dict.fromkeys(found))
    if len(found) > 1:
        raise SystemExit(f"launch.py: error: {' and '.join(m.flag for m in found)} are separate modes; use one "
                         "(launch.py --help lists them)")
    return found[0] if found else SERVER


def full_help() -> str:
    """``launch.py --help``: the list of modes, then every mode's own help (its usage and flags)."""
    width = max(len(m.usage) for m in [SERVER, *MODES]) + 12
    lines = ["usage: python launch.py [--skip-install] [MODE] [options]", "",
             "sd-webui-hypernetworks: AUTOMATIC1111 hypernetworks on diffusers.", "", "modes:"]
    lines += [f"  {'launch.py ' + m.usage:<{width}}{m.summary}" for m in [SERVER, *MODES]]
    lines += ["", LAUNCH_OPTIONS]
    for mode in [SERVER, *MODES]:
        lines += ["", "-" * 100, mode.parser().format_help().rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    mode = mode_of(argv)
    if mode.flag != "--test" and any(a in ("-h", "--help") for a in argv):
        # launch.py --help: every mode; launch.py --generate --help: that mode (its parser alone would first
        # complain that --generate has no value)
        sys.stdout.write(full_help() if mode is SERVER else mode.parser().format_help())
        return 0
    return mode.run(argv)
