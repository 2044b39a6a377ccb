"""Times listing a models folder of 1000 hypernetwork files (scan, then metadata of every .safetensors).

Run: ``venv/bin/python bench/library.py`` -> writes bench/RESULTS-library.md.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extension.hypernetwork import Hypernetwork  # noqa: E402
from extension.library import HypernetworkLibrary  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pt, st = root / "seed.pt", root / "seed.safetensors"
        net = Hypernetwork(name="seed", enable_sizes=[768, 320, 640, 1280])  # a full-size SD1 network, 88 MB
        net.save(pt)
        net.save(st)
        for i in range(500):
            sub = root / f"folder{i % 10}"
            sub.mkdir(exist_ok=True)
            os.link(pt, sub / f"net_{i:04d}.pt")
            os.link(st, sub / f"net_{i:04d}_st.safetensors")
        pt.unlink()
        st.unlink()
        library = HypernetworkLibrary(root)
        t0 = time.perf_counter()
        entries = library.entries()
        t_scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        library.refresh()
        t_refresh = time.perf_counter() - t0
        safetensors = [e for e in entries if e.path.suffix == ".safetensors"]
        t0 = time.perf_counter()
        for entry in safetensors:
            library.details(entry)
        t_meta = time.perf_counter() - t0
        t0 = time.perf_counter()
        for entry in safetensors:
            library.details(entry)
        t_cached = time.perf_counter() - t0
    lines = [
        "# Models folder listing",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. 1000 files (500 `.pt` + 500 `.safetensors`, each a full-size SD1 "
        "`[1, 2, 1]` network of 88 MB, in 10 subfolders).",
        "",
        "| what | time |",
        "|---|---|",
        f"| first listing (scan, names, previews, descriptions) of {len(entries)} files | {t_scan * 1000:.1f} ms |",
        f"| refresh (rescan, diff) | {t_refresh * 1000:.1f} ms |",
        f"| metadata of all {len(safetensors)} `.safetensors` (headers only) | {t_meta * 1000:.1f} ms |",
        f"| the same again (cached by path, size, mtime) | {t_cached * 1000:.2f} ms |",
        "",
        "`.pt` metadata needs the whole pickle read (about the time to read 88 MB per file); it is read lazily,",
        "when a card is shown, and cached.",
    ]
    (ROOT / "bench" / "RESULTS-library.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
