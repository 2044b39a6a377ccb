"""Training in a process of its own, with the project's pinned packages, watched as if it ran in this one.

Inside a host the extension runs on the host's packages (its torch, diffusers, transformers), and never installs
over them. The trainer is built and tested on the project's own stack, so a host runs it as ``launch.py
--train-hypernetwork NAME --request-json FILE --progress-json`` with the project's ``venv/`` (``launch.py`` makes it
on first use, from the host's Python, and installs only what is missing). That process:

- reads the run's parameters, AUTOMATIC1111's names, from the JSON file (what the Train tab or the API sent);
- writes its progress as JSON lines (:mod:`extension.training.progress_stream`), read here into a
  :class:`~extension.training.monitor.TrainingMonitor`;
- on SIGINT saves the network and stops (the host's Interrupt);
- reports a refused run (a bad parameter, a missing dataset) on stderr with exit code 2.

Nothing here imports a host.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Callable, Mapping

from .. import paths
from ..training.monitor import TrainingMonitor
from ..training.progress_stream import MonitorMirror
from ..training.result import TrainingResult

# The host's variables that must not reach the project's environment: its venv would otherwise be the one
# launch.py installs into (VENV_DIR is also the AUTOMATIC1111 launchers' name), its packages would shadow ours.
HOST_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "VENV_DIR", "SD_WEBUI_LAUNCH_REEXEC", "SKIP_VENV",
                  "SKIP_INSTALL", "TORCH_COMMAND", "COMMANDLINE_ARGS")
VENV_VARIABLE = "SD_HYPERNETWORKS_VENV"  # where the training environment lives (default: venv/ beside launch.py)


def training_venv() -> Path:
    return Path(os.environ.get(VENV_VARIABLE) or paths.ROOT / "venv")


class TrainingProcess:
    """One run in its own process.

    Args:
        values: the run's parameters (AUTOMATIC1111's names; ``hypernetwork_name`` and ``data_root`` at least).
        checkpoint: the checkpoint file to train on (the host's loaded model).
        hypernetwork_dir: the hypernetworks folder.
        roots: the folders datasets and logs may be in (``--train-data-dir``); the first is what relative
            paths are relative to.
        python: the interpreter that starts ``launch.py`` (the host's own: launch.py switches to the venv).
        threads: ``OMP_NUM_THREADS`` for the process (None: torch's default).
    """

    def __init__(self, values: Mapping, checkpoint: Path, hypernetwork_dir: Path, roots: list[Path],
                 python: str | None = None, threads: int | None = None):
        self.values = dict(values)
        self.checkpoint, self.hypernetwork_dir, self.roots = Path(checkpoint), Path(hypernetwork_dir), roots
        self.python = python or sys.executable
        self.threads = threads
        self.monitor = TrainingMonitor()
        self.mirror = MonitorMirror(self.monitor)
        self.process: subprocess.Popen | None = None
        self.output: deque[str] = deque(maxlen=200)  # what the process said besides its progress lines
        self._lines: queue.Queue = queue.Queue()
        self._interrupted = False
        self._request_file: Path | None = None

    def command(self) -> list[str]:
        name = str(self.values.get("hypernetwork_name") or "")
        command = [self.python, str(paths.ROOT / "launch.py"), "--train-hypernetwork", name,
                   "--request-json", str(self._request_file), "--progress-json",
                   "--hypernetwork-dir", str(self.hypernetwork_dir),
                   "--ckpt-dir", str(self.checkpoint.parent), "--ckpt", str(self.checkpoint)]
        for root in self.roots:
            command += ["--train-data-dir", str(root)]
        return command

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in HOST_VARIABLES}
        env.update(VENV_DIR=str(training_venv()), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def start(self) -> "TrainingProcess":
        handle, name = tempfile.mkstemp(prefix="hypernetwork-train-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({k: v for k, v in self.values.items() if k != "hypernetwork_name"}, out)
        self._request_file = Path(name)
        self.monitor.set_state("preparing", "starting the training process (its environment is made on first use)")
        self.process = subprocess.Popen(self.command(), cwd=paths.ROOT, env=self.environment(), text=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        bufsize=1, start_new_session=True)
        threading.Thread(target=self._read, name="training-process-output", daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def interrupt(self) -> None:
        """Ask the run to save and stop (SIGINT, as Ctrl+C on the command line); once is enough."""
        if self.process is not None and self.process.poll() is None and not self._interrupted:
            self._interrupted = True
            self.monitor.set_state(self.monitor.state, "interrupting: the network is saved, then the run stops")
            os.kill(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, on_update: Callable[[], None] | None = None, should_stop: Callable[[], bool] | None = None,
             interval: float = 0.5) -> tuple[TrainingResult, str]:
        """Follow the run to its end: ``on_update`` after each batch of lines, ``should_stop`` polled (True:
        interrupt). Returns the result and AUTOMATIC1111's answer text."""
        try:
            finished = False
            while not finished:
                try:
                    line = self._lines.get(timeout=interval)
                except queue.Empty:
                    line = ""
                while line is not None:
                    if line and not self.mirror.feed(line):
                        self.output.append(line)
                    try:
                        line = self._lines.get_nowait()
                    except queue.Empty:
                        break
                if line is None:
                    finished = True
                if should_stop is not None and should_stop():
                    self.interrupt()
                if on_update is not None:
                    on_update()
            code = self.process.wait()
        finally:
            if self._request_file is not None:
                self._request_file.unlink(missing_ok=True)
        if self.mirror.result is not None:
            result, info = self.mirror.result, self.mirror.info or self.mirror.result.info()
        else:
            said = [line[len("error: "):] for line in self.output if line.startswith("error: ")]
            message = said[-1] if said else (f"the training process ended with exit code {code}:\n"
                                             + "\n".join(list(self.output)[-15:]))
            result = TrainingResult("error", message)
            info = result.info()
        self.monitor.set_state(result.status, result.message)
        return result, info
