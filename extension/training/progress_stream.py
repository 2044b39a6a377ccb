"""A training run's progress as JSON lines, so that a run in a process of its own can be watched as if it were in
this one.

A host (Forge) runs the training in a process with the project's own packages (``launch.py --train-hypernetwork
... --progress-json``). That process writes, on stdout, one JSON object per line whenever its
:class:`~extension.training.monitor.TrainingMonitor` changes (:class:`ProgressWriter`), and a last one with the
result. The host reads them into a monitor of its own (:class:`MonitorMirror`), which its Train tab and progress
bar read exactly as they would read a run in the same process.

Lines (only what changed since the line before):
``{"event": "progress", "state", "message", "first_step", "last_step", "losses": [[step, loss, lr], ...],
"previews": [[step, path], ...], "files": [path, ...]}`` and ``{"event": "result", "status", "message",
"filename", "step", "log_dir", "files", "info"}``.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import TextIO

from .monitor import TrainingMonitor
from .result import TrainingResult

MARK = "@@training "  # every line of the stream starts with this: the reader ignores anything else on stdout


class ProgressWriter:
    """Writes ``monitor``'s changes to ``stream`` every ``interval`` seconds, in a daemon thread.

    Args:
        monitor: the run's monitor.
        stream: where the lines go (stdout by default).
        interval: seconds between checks for changes.
    """

    def __init__(self, monitor: TrainingMonitor, stream: TextIO | None = None, interval: float = 0.5):
        self.monitor, self.stream, self.interval = monitor, stream or sys.stdout, interval
        self._sent = {"losses": 0, "previews": 0, "files": 0, "head": None}
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="training-progress-json", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what changed since its last line."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            monitor, sent = self.monitor, self._sent
            losses, previews, files = monitor.losses(), monitor.previews(), monitor.files()
            head = (monitor.state, monitor.message, monitor.first_step, monitor.last_step)
            if head == sent["head"] and len(losses) == sent["losses"] and len(previews) == sent["previews"] \
                    and len(files) == sent["files"]:
                return
            line = {"event": "progress", "state": head[0], "message": head[1], "first_step": head[2],
                    "last_step": head[3],
                    "losses": [[p.step, p.loss, p.learn_rate] for p in losses[sent["losses"]:]],
                    "previews": [[step, str(path)] for step, path in previews[sent["previews"]:]],
                    "files": [str(path) for path in files[sent["files"]:]]}
            sent.update(head=head, losses=len(losses), previews=len(previews), files=len(files))
            self._write(line)

    def result(self, result: TrainingResult) -> None:
        """The last line: how the run ended."""
        with self._lock:
            self._write({"event": "result", "status": result.status, "message": result.message,
                         "filename": result.filename, "step": result.step, "log_dir": result.log_dir,
                         "files": [str(f) for f in result.files], "info": result.info()})

    def _write(self, line: dict) -> None:
        self.stream.write(MARK + json.dumps(line, allow_nan=True) + "\n")
        self.stream.flush()


class MonitorMirror:
    """Reads the lines of :class:`ProgressWriter` into ``monitor``; keeps the result line.

    Args:
        monitor: a fresh monitor that the host's watchers read.
    """

    def __init__(self, monitor: TrainingMonitor):
        self.monitor = monitor
        self.result: TrainingResult | None = None
        self.info: str | None = None

    def feed(self, raw: str) -> bool:
        """Apply one line of the stream; False for a line that is not one (other output of the process)."""
        if not raw.startswith(MARK):
            return False
        try:
            line = json.loads(raw[len(MARK):])
        except ValueError:
            return False
        monitor = self.monitor
        if line.get("event") == "progress":
            if line["state"] == "training" and monitor.state != "training":
                monitor.begin(int(line["first_step"]), int(line["last_step"]))
            monitor.set_state(str(line["state"]), str(line.get("message") or ""))
            monitor.first_step, monitor.last_step = int(line["first_step"]), int(line["last_step"])
            for step, loss, learn_rate in line.get("losses", []):
                monitor.add_loss(int(step), float(loss), float(learn_rate))
            for step, path in line.get("previews", []):
                monitor.add_preview(int(step), Path(path))
            for path in line.get("files", []):
                monitor.add_file(Path(path))
        elif line.get("event") == "result":
            self.result = TrainingResult(str(line["status"]), str(line["message"]), line.get("filename"),
                                         int(line.get("step") or 0), line.get("log_dir"),
                                         [str(f) for f in line.get("files", [])])
            self.info = line.get("info")
        else:
            return False
        return True
