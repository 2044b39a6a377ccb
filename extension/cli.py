"""Command-line flags, as AUTOMATIC1111 users know them, and what ``launch.py`` does with them.

- no mode flag: serve the web UI (``--listen``, ``--port``, ``--gradio-auth``, ...);
- ``--test [PYTEST ARGS]``: run the test suite in this environment;
- ``--generate PROMPT [...]``: write images from the command line (see :mod:`extension.generate_cli`);
- ``--train-demo-model OUTDIR [...]``: train the demo model from nothing (see :mod:`extension.demo.train`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description="sd-webui-hypernetworks")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 instead of 127.0.0.1")
    parser.add_argument("--hypernetwork-dir", type=Path, default=ROOT / "models" / "hypernetworks",
                        help="folder of hypernetwork files (default models/hypernetworks)")
    parser.add_argument("--ckpt-dir", type=Path, default=ROOT / "models" / "Stable-diffusion",
                        help="folder of checkpoints (default models/Stable-diffusion)")
    parser.add_argument("--ckpt", default=None, help="checkpoint to load at start (default: the demo model)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when present)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="weights precision (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--gradio-auth", default=None, help='"user:password" (several separated by commas)')
    parser.add_argument("--gradio-auth-path", type=Path, default=None,
                        help="file with user:password lines (or comma-separated pairs)")
    parser.add_argument("--outdir", type=Path, default=ROOT / "outputs", help="where images are saved")
    return parser


def run_tests(args: list[str]) -> int:
    import pytest

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return pytest.main([str(ROOT / "tests"), *args])


def serve(argv: list[str]) -> int:
    options = server_parser().parse_args(argv)
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


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if "--test" in argv:
        return run_tests([a for a in argv if a != "--test"])
    if "--generate" in argv:
        from extension.generate_cli import main as generate_main

        return generate_main(argv)
    if "--train-demo-model" in argv:
        from extension.demo.train import main as train_main

        i = argv.index("--train-demo-model")
        return train_main([*argv[i + 1:], *argv[:i]])  # OUTDIR first, then the other options
    return serve(argv)
