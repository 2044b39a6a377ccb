"""Kill training with SIGKILL, again and again, mid-save included; the last saved file must always load and
resume must continue from it.

    venv/bin/python bench/reliability.py --part crashes          # 12 rounds, into docs/RELIABILITY.md
    venv/bin/python bench/reliability_crashes.py --rounds 12      # the same, printed (and --json FILE)

Each round starts ``launch.py --train-hypernetwork`` (demo model, 32x32 pictures, a save every 2 steps, a
network with an extra 640-wide module pair so a save takes long enough to be caught) on the file the previous
round left, then kills the whole process group: half the rounds at a random moment, half inside a save (the
moment the network file's temporary appears in the models folder after this run wrote a sidecar: a whole save,
file and sidecar, lies before the kill). A save writes the file, then its sidecar; a kill that lands inside the
sidecar's write (or just before it began) leaves the new file with the old sidecar, which no longer matches it,
so its optimizer state is dropped (a resume starts the optimizer afresh): each round records which write the
kill cut short. After each kill the models-folder file must load, hold a
step no lower than before, and have no half-written visible file beside it; the next round must start from
that step. A last run trains to the target and must end there. :func:`run_rounds` is also what
``tests/test_crashes.py`` runs, with fewer rounds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAME = "crash"


@dataclasses.dataclass
class Round:
    number: int
    mode: str              # "random" or "mid-save"
    killed_after: float    # seconds after start
    caught_mid_save: bool  # a save's temporary file existed when the kill was sent
    cut_short: str         # the write the kill left half done: "network", "sidecar" or "none"
    step_before: int
    step_after: int
    loads: bool
    optimizer_state: bool  # the sidecar belongs to the file (resume keeps its optimizer state)
    visible_partial_files: list[str]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "SKIP_INSTALL": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1"}


def prepare(work: Path) -> tuple[Path, Path]:
    """A dataset of 8 outlined pictures and a models folder holding a fresh network; ``(data, models)``."""
    from extension.demo.dataset import write_folder

    data, models = work / "data", work / "hypernetworks"
    write_folder(data, 8, seed=3, outline=True, size=32)
    models.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "launch.py"), "--skip-install", "--create-hypernetwork", NAME,
                    "--hypernetwork-dir", str(models), "--sizes", "48,64,80,640", "--activation", "relu",
                    "--overwrite"], check=True, capture_output=True, env=_env(), timeout=600)
    return data, models


def train_command(data: Path, models: Path, work: Path, steps: int) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), "--skip-install", "--train-hypernetwork", NAME, "--dataset",
            str(data), "--hypernetwork-dir", str(models), "--steps", str(steps), "--batch-size", "2",
            "--learn-rate", "1e-3", "--template", "filewords.txt", "--save-every", "2", "--preview-every", "0",
            "--log-dir", str(work / "logs"), "--seed", "5", "--width", "32", "--height", "32",
            "--train-data-dir", str(work)]


def state_of(models: Path) -> tuple[int, bool, bool, list[str]]:
    """``(step, loads, optimizer state kept, visible files other than the network and its sidecar)``."""
    from extension.hypernetwork import Hypernetwork

    path = models / f"{NAME}.safetensors"
    try:
        network = Hypernetwork().load(path)
        loads, step, state = True, network.step, network.optimizer_state_dict is not None
    except Exception:  # noqa: BLE001 - a failure to load is what this records
        loads, step, state = False, -1, False
    visible = sorted(p.name for p in models.iterdir()
                     if not p.name.startswith(".") and p.name not in (path.name, path.name + ".optim"))
    return step, loads, state, visible


def temporaries(models: Path) -> set[str]:
    """Names of the network's temporary files (a save in progress, or one a kill cut short)."""
    return {p.name for p in models.iterdir() if p.name.startswith(f".{NAME}.") and p.name.endswith(".tmp")}


def one_round(number: int, mode: str, data: Path, models: Path, work: Path, rng: random.Random) -> Round:
    before = state_of(models)[0]
    stale = temporaries(models)  # left by an earlier round's kill: the run removes them; they are no sign of a save
    process = subprocess.Popen(train_command(data, models, work, 10**6), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.monotonic()
    deadline = start + (rng.uniform(8.0, 30.0) if mode == "random" else 240.0)
    sidecar = models / f"{NAME}.safetensors.optim"
    started = time.time()
    caught = False
    while time.monotonic() < deadline and process.poll() is None:
        if mode == "mid-save":
            writing_network = any(".optim." not in n for n in temporaries(models) - stale)
            if writing_network and sidecar.exists() and sidecar.stat().st_mtime >= started:
                caught = True  # a save (file, then sidecar) done in this run; now inside the next file's write
                break
        time.sleep(0.002 if mode == "mid-save" else 0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_after = time.monotonic() - start
    left = temporaries(models) - stale
    cut_short = "sidecar" if any(".optim." in n for n in left) else "network" if left else "none"
    step, loads, state, visible = state_of(models)
    shutil.rmtree(work / "logs", ignore_errors=True)  # the log copies are not what this checks; keep the disk free
    return Round(number, mode, round(killed_after, 2), caught, cut_short, before, step, loads, state, visible)


def run_rounds(work: Path, rounds: int, seed: int = 0, final_steps: int | None = None) -> dict:
    """Kill ``rounds`` training runs (alternating random and mid-save), then resume to the end."""
    rng = random.Random(seed)
    data, models = prepare(work)
    results = [one_round(i + 1, "mid-save" if i % 2 else "random", data, models, work, rng) for i in range(rounds)]
    last = results[-1].step_after if results else 0
    target = final_steps or last + 3
    done = subprocess.run(train_command(data, models, work, target), env=_env(), capture_output=True, text=True,
                          timeout=1200)
    step, loads, state, visible = state_of(models)
    return {"rounds": [dataclasses.asdict(r) for r in results], "resume": {
        "from_step": last, "target": target, "exit_code": done.returncode, "final_step": step, "loads": loads,
        "first_line": next((line for line in done.stdout.splitlines() if line.strip()), "")}}


def summary(record: dict) -> str:
    rounds = record["rounds"]
    lines = ["## Training killed with SIGKILL (`bench/reliability_crashes.py`)", "",
             f"{len(rounds)} rounds, each resuming from what the previous one left; half killed at a random moment, "
             "half inside a save (when the network file's temporary appeared after a whole save, file and sidecar, of "
             "the same run). A save writes the file, then its sidecar: a kill after the file's rename and before the "
             "new sidecar's (write cut short: sidecar, or none if it had not begun) leaves the new file with the old "
             "sidecar, which does not match it, so its optimizer state is dropped and a resume starts the optimizer "
             "afresh.", "",
             "| round | kill | after (s) | caught mid-save | write cut short | step before | step after | loads "
             "| optimizer state | half-written visible files |", "|---:|---|---:|---|---|---:|---:|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r['number']} | {r['mode']} | {r['killed_after']} | {'yes' if r['caught_mid_save'] else 'no'} "
                     f"| {r['cut_short']} | {r['step_before']} | {r['step_after']} | {'yes' if r['loads'] else 'NO'} | "
                     f"{'yes' if r['optimizer_state'] else 'no'} | {', '.join(r['visible_partial_files']) or 'none'} |")
    resume = record["resume"]
    held = all(r["loads"] and r["step_after"] >= r["step_before"] and not r["visible_partial_files"] for r in rounds)
    lines += ["", f"Then a resume from step {resume['from_step']} to {resume['target']}: exit {resume['exit_code']}, "
                  f"the file holds step {resume['final_step']} and loads: {'yes' if resume['loads'] else 'NO'}.", "",
              f"Held: {'yes' if held and resume['final_step'] == resume['target'] else 'NO'} (every kill left a file "
              "that loads, no step went back, no half-written file where a user would load it, and resume reached "
              "the target)."]
    return "\n".join(lines)


def run(quick: bool) -> str:
    """The section of docs/RELIABILITY.md: 12 rounds (2 when ``quick``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return summary(run_rounds(Path(tmp), 2 if quick else 12))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw record here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        record = run_rounds(Path(tmp), args.rounds, args.seed)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    print(summary(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
