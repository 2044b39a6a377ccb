"""Named sections of a results file: one script rewrites its own section and leaves the others as they are.

A section is the text between ``<!-- BEGIN NAME -->`` and ``<!-- END NAME -->``. ``bench/RESULTS.md`` holds the
inference and training benchmarks' sections; ``docs/RELIABILITY.md`` the reliability parts' (``reliability:PART``).
Writers take an exclusive lock (kept outside the repository) and replace the file atomically, so two scripts
writing different sections of one file at once both land.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The ``(begin, end)`` comment lines around section ``name``."""
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


@contextlib.contextmanager
def _locked(path: Path):
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"sections-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_section(path: Path, name: str, text: str, header: str = "") -> None:
    """Put ``text`` between the markers of section ``name`` in ``path``.

    Args:
        path: the results file; created with ``header`` when missing.
        name: letters, digits and ``._:-``.
        text: markdown; a new section goes after the others.
        header: the file's opening text, used only when the file does not exist yet.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise ValueError(f"section name {name!r}: letters, digits and ._:- only")
    begin, end = markers(name)
    block = f"{begin}\n{text.strip()}\n{end}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        current = path.read_text(encoding="utf-8") if path.exists() else header
        if begin in current and end in current:
            current = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda _: block, current,
                             count=1, flags=re.S)
        else:
            current = current.rstrip() + ("\n\n" if current.strip() else "") + block
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(current, encoding="utf-8")
        os.replace(temporary, path)
