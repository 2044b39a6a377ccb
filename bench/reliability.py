"""Reliability figures: what was tried against the server and what held, written to ``docs/RELIABILITY.md``.

The file is made of sections, each between its own markers::

    <!-- BEGIN reliability:NAME -->
    ## ...
    <!-- END reliability:NAME -->

:func:`write_section` replaces one section's text and leaves every other one as it is (a new section goes at
the end), under a file lock, so parts written by different scripts, tests or people never overwrite each other.

Run every part, or some::

    python bench/reliability.py                     # every part, at volume
    python bench/reliability.py --part security     # one part (repeat --part for several)
    python bench/reliability.py --quick             # small versions (what CI's tests run)
    python bench/reliability.py --list

How to add a section (either way):

1. A module ``bench/reliability_NAME.py`` with ``def run(quick: bool) -> str`` returning the section's Markdown
   (its ``## Title`` line first). It is found by name and runs as part ``NAME``; nothing here changes.
2. From anywhere else (a test, another script): ``from reliability import write_section`` (with ``bench/`` on
   ``sys.path``) and ``write_section("NAME", markdown)``.

The parts defined in this file are registered with ``@part("NAME")``:

- ``security``: every route of the web UI walked without a login, path traversal on every parameter that
  names a file, the file routes, the listen address (:mod:`tests.security_checks`);
- ``fuzz-api``: the REST API fuzzed from its own OpenAPI schema with schemathesis (``tests/fuzzing.py``);
- ``fuzz-prompts``: the prompt parsers fuzzed with hypothesis (tags, emphasis, prompt editing).

Servers run in child processes on 127.0.0.1 with the random-weight demo model, as the tests run them.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import re
import sys
import time
from pathlib import Path

import sections  # bench/sections.py: this script's folder is on sys.path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "RELIABILITY.md"
HEADER = """# Reliability

What was tried against this project and what held, as figures. Every section is produced by a script or test
in the project and can be re-run: `python bench/reliability.py` (every part; `--list` names them, `--part NAME`
runs one, `--quick` runs the small versions CI runs). Sections are written independently
(`bench/reliability.py`'s `write_section`); each says how it was made.
"""

PARTS: dict[str, Callable[[bool], str]] = {}


def part(name: str):
    """Register ``fn(quick) -> markdown`` as the part ``name``."""

    def register(fn):
        PARTS[name] = fn
        return fn

    return register


# -- the file ----------------------------------------------------------------------------------------------------
def markers(name: str) -> tuple[str, str]:
    return sections.markers(f"reliability:{name}")


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Put ``text`` between the markers of section ``name`` in ``path`` (after the others if it is new)."""
    sections.write_section(path, f"reliability:{name}", text, header=HEADER)


def read_section(name: str, path: Path = RESULTS) -> str | None:
    """The text of section ``name`` (None when the file has none)."""
    if not path.exists():
        return None
    begin, end = markers(name)
    match = re.search(re.escape(begin) + r"\n(.*?)\n?" + re.escape(end), path.read_text(encoding="utf-8"), re.S)
    return match.group(1) if match else None


def provenance(command: str) -> str:
    """One line saying when, where and how a section was made."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"_Made by `{command}` on {when}; Python {platform.python_version()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs._")


def _tests_on_path() -> None:
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# -- this file's parts ---------------------------------------------------------------------------------------------
@part("security")
def security(quick: bool) -> str:
    _tests_on_path()
    from security_checks import security_report

    return security_report(quick=quick) + "\n\n" + provenance(
        "python bench/reliability.py --part security" + (" --quick" if quick else ""))


@part("fuzz-api")
def fuzz_api(quick: bool) -> str:
    _tests_on_path()
    from fuzzing import api_fuzz_report

    return api_fuzz_report(quick=quick) + "\n\n" + provenance(
        "python bench/reliability.py --part fuzz-api" + (" --quick" if quick else ""))


@part("fuzz-prompts")
def fuzz_prompts(quick: bool) -> str:
    _tests_on_path()
    from fuzzing import prompt_fuzz_report

    return prompt_fuzz_report(quick=quick) + "\n\n" + provenance(
        "python bench/reliability.py --part fuzz-prompts" + (" --quick" if quick else ""))


def discovered_parts() -> dict[str, Callable[[bool], str]]:
    """This file's parts and those of every ``bench/reliability_NAME.py`` (its ``run(quick)``)."""
    parts = dict(PARTS)
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    for path in sorted(Path(here).glob("reliability_*.py")):
        name = path.stem[len("reliability_"):].replace("_", "-")
        module = importlib.import_module(path.stem)
        parts[name] = module.run
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", action="append", default=None, help="a part to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="the small versions (what CI runs)")
    parser.add_argument("--list", action="store_true", help="name the parts and stop")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parts = discovered_parts()
    if args.list:
        print("\n".join(parts))
        return 0
    chosen = args.part or list(parts)
    unknown = [name for name in chosen if name not in parts]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)} (known: {', '.join(parts)})")
    for name in chosen:
        started = time.monotonic()
        print(f"[{name}] running...", flush=True)
        text = parts[name](args.quick)
        write_section(name, text)
        print(f"[{name}] written to {RESULTS.relative_to(ROOT)} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
