"""Command-line flags, as AUTOMATIC1111 users know them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if "--test" in argv:
        import pytest
        return pytest.main([str(ROOT / "tests"), *[a for a in argv if a != "--test"]])
    return 0
