"""The ``hostile-files`` part of ``docs/RELIABILITY.md``: every kind of hostile file ``tests/hostile_files.py``
writes, read as the server reads it (listing, then loading) in a fresh process, with its time, its peak memory
and what the user is told.

    python bench/reliability.py --part hostile-files

``quick`` changes nothing: the files are cheap to write (the 8 GiB zip bomb is 8.5 MB) and each is refused in
milliseconds; the whole run takes about a minute, most of it importing torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIMITS = """Limits, checked before anything is unpacked (`extension/safe_pickle.py`, `extension/safetensors_file.py`,
`extension/ui/cards.py`):

| file | tensors | pickle / header | a listing reads |
|---|---|---|---|
| hypernetwork `.pt`/`.ckpt`/`.optim` | stored zip members only, inside the file, not overlapping, at most 4 GiB | 4 MiB, 262,144 opcodes, 65,536 objects; no global but torch's | zip directory + pickle (no tensor data) |
| hypernetwork `.safetensors` | what the header's offsets span, inside the file | header at most 2 MiB, checked whole | header |
| checkpoint `.ckpt` | never more than the file holds | 64 MiB, 2,097,152 opcodes, 524,288 objects | its directory entry |
| checkpoint `.safetensors` | as above | header at most 8 MiB | its directory entry |
| diffusers folder | each weight file checked as above before diffusers reads it; no link out | config JSON at most 8 MiB | its directory entries |
| card preview | | at most 16 Mpx (read from the image header) | |

Links out of either folder (or to nothing) and names that are not UTF-8 are not listed and never opened; the
cards panel names them."""


def run(quick: bool) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    import hostile_files

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = hostile_files.write_all(Path(tmp) / "files")
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(manifest))
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "hostile_files.py"), "measure", str(path)],
                              cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=1800, check=True)
        records = json.loads(done.stdout)
        markers = hostile_files.markers_found(manifest)
    by_kind: dict[str, dict] = {}
    for record in records:
        by_kind.setdefault(record["kind"], {})[record["step"]] = record
    lines = ["## Hostile files in the models folders", "",
             f"{len(manifest['files'])} files ({sum(1 for f in manifest['files'] if f['outcome'] == 'hidden')} of "
             "them links or names that are never listed), each read alone in one process under a fresh peak-RSS "
             "mark (`/proc/self/clear_refs`): *list* is what the cards and the API do, *load* what a prompt or "
             "a model switch does. Peak: RSS above the process's RSS before the step. "
             f"Code that ran: {', '.join(markers) if markers else 'none (no payload created its marker file)'}.",
             "", "| file | what it is | list | load | what the user is told |", "|---|---|---|---|---|"]
    for item in manifest["files"]:
        steps = by_kind.get(item["kind"], {})

        def cell(step):
            record = steps.get(step)
            return f"{record['seconds'] * 1000:.0f} ms, {record['peak_mb']:.0f} MB" if record else "–"

        if item["outcome"] == "hidden":
            told = "not listed, never opened"
        else:
            last = steps.get("load") or steps.get("list")
            told = "loads" if last and last["outcome"] == "ok" else (last["outcome"] if last else "")
            told = told.split(": ", 1)[-1] if told.startswith(("HypernetworkError", "UnsafeFileError",
                                                                 "ModelError", "NotAHypernetworkError")) else told
            told = told.replace(manifest["hypernetworks"] + "/", "").replace(manifest["checkpoints"] + "/", "")
        name = item["path"].encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("|", "\\|")
        name = name.replace("\n", "\\n")
        lines.append(f"| `{item['folder']}/{name}` | {item['what'].replace('|', '/')} | {cell('list')} | "
                     f"{cell('load')} | {told.replace('|', '/')[:220]} |")
    worst = max(records, key=lambda r: r["peak_mb"])
    slowest = max(records, key=lambda r: r["seconds"])
    lines += ["", f"Worst peak: {worst['peak_mb']:.0f} MB ({worst['kind']}, {worst['step']}); slowest: "
                  f"{slowest['seconds'] * 1000:.0f} ms ({slowest['kind']}, {slowest['step']}). Before these checks "
                  "the 8 GiB zip bomb took 50 s and 16.6 GB, and a 1 MB zip with shared members or a 2 MiB pickle of "
                  "empty sets about 500 MB each.", "", LIMITS, "",
              "Tests: `tests/test_hostile_files.py` (the same files in the library, the checkpoint manager, a fresh "
              "process per file, at the limits, and a real server: cards, API, generation, checkpoint switches)."]
    return "\n".join(lines)
