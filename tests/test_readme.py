"""The README's Python examples run as written, and each checks what it shows with ``assert`` lines."""
from __future__ import annotations

import ast
import re

from conftest import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_every_readme_example_checks_its_result():
    blocks = python_blocks()
    assert blocks, "the README has Python examples"
    for block in blocks:
        asserts = [node for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Assert)]
        assert asserts, f"this README example shows no result it checks:\n{block}"


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for block in python_blocks():
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "mystyle.safetensors").is_file()  # the first example saves where it says
