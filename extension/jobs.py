"""The one job runner: what runs on the device now, who waits, its progress, and how to stop it.

Everything that uses the model goes through one :class:`JobRunner`: the txt2img tab, scripts, the REST API,
training and checkpoint loads. It is AUTOMATIC1111's ``shared.state`` made explicit, an object the host
owns and hands to each layer, instead of module-level state:

- :meth:`JobRunner.job` waits for the device in arrival order (first come, first served), then runs a
  :class:`Job` until the ``with`` block ends; a nested ``job()`` on the thread that holds the device joins
  the running job (a script's several generations are one job);
- :meth:`JobRunner.device` takes the device without starting a job (a checkpoint load);
- :meth:`JobRunner.interrupt` and :meth:`JobRunner.skip` reach the running job, whoever started it;
- :meth:`JobRunner.progress` is a snapshot for progress displays (AUTOMATIC1111's ``/sdapi/v1/progress``).

A job's code reads ``job.interrupted`` / ``job.skipped`` (events) between steps and reports with
:meth:`Job.update`. Nothing here knows what a generation or a training step is.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import itertools
import threading
import time
from typing import Any, Callable, Iterator


class Job:
    """One job on the device: its name, progress and stop requests. Made by :meth:`JobRunner.job`.

    Args:
        name: what displays call it.
        job_count: how many units (images, steps) it has, at least 1.
        source: who started it (``"ui"``, ``"api"``, ``"cli"``...).
    """

    def __init__(self, name: str, job_count: int = 1, source: str = ""):
        self.name = name
        self.source = source                  # who started it: "ui", "api", "cli", ... (for displays)
        self.job_count = max(1, int(job_count))
        self.job_no = 0                       # which of ``job_count`` images (or units) is running
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo: str | None = None
        self.started = time.monotonic()
        self.timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.interrupted = threading.Event()  # stop the whole job at the next step (results so far are kept)
        self.skipped = threading.Event()      # stop the current image/batch and go on with the next
        self._preview: Callable[[], Any] | None = None
        self._lock = threading.Lock()

    def update(self, step: int, steps: int, job_no: int | None = None, textinfo: str | None = None) -> None:
        """Report progress: ``step`` of ``steps`` within unit ``job_no`` (of :attr:`job_count`).

        Args:
            step: sampling steps done in the current unit.
            steps: sampling steps in the current unit (0 when a unit has no steps, e.g. a training step).
            job_no: the current unit, 0-based, or None to keep it.
            textinfo: a line for displays, or None to keep it.
        """
        with self._lock:
            self.sampling_step, self.sampling_steps = int(step), int(steps)
            if job_no is not None:
                self.job_no = int(job_no)
            if textinfo is not None:
                self.textinfo = textinfo

    def set_preview(self, make: Callable[[], Any] | None) -> None:
        """``make()`` returns the current picture (a PIL image) when a display asks for it; it is called lazily,
        on the asking thread, and must be cheap and safe to call while the job runs.

        Args:
            make: the picture maker, or None for no preview.
        """
        with self._lock:
            self._preview = make

    def preview(self):
        """The current picture (a PIL image) from the maker :meth:`set_preview` gave, or None (also when it
        fails)."""
        with self._lock:
            make = self._preview
        try:
            return make() if make is not None else None
        except Exception:  # noqa: BLE001 - a preview must never fail the job or the display
            return None

    def progress(self) -> float:
        """Fraction done, 0..1, over all units."""
        with self._lock:
            if not self.sampling_steps:
                return min(1.0, self.job_no / self.job_count)
            return min(1.0, (self.job_no + self.sampling_step / self.sampling_steps) / self.job_count)

    def eta(self) -> float:
        """Seconds left, from the time so far (0 until something is done)."""
        done = self.progress()
        if done <= 0:
            return 0.0
        elapsed = time.monotonic() - self.started
        return max(0.0, elapsed / done - elapsed)


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a progress display shows (AUTOMATIC1111's ``/sdapi/v1/progress`` fields).

    Args:
        active: whether a job runs.
        job: its name.
        source: who started it.
        job_count: its units.
        job_no: the current unit, 0-based.
        job_timestamp: when it started, ``YYYYmmddHHMMSS``.
        sampling_step: steps done in the current unit.
        sampling_steps: steps in the current unit.
        progress: fraction done over all units, 0..1.
        eta: seconds left, estimated.
        interrupted: whether an interrupt was asked for.
        skipped: whether a skip was asked for.
        textinfo: the job's line for displays.
        waiting: how many wait for the device.
    """

    active: bool
    job: str = ""
    source: str = ""
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    progress: float = 0.0
    eta: float = 0.0
    interrupted: bool = False
    skipped: bool = False
    textinfo: str | None = None
    waiting: int = 0


class JobRunner:
    """The device, held by one thread at a time, in arrival order; and the job that holds it. Thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._tickets = itertools.count()
        self._queue: collections.deque[int] = collections.deque()
        self._owner: int | None = None   # thread ident holding the device
        self._depth = 0
        self._job: Job | None = None
        self._waiting_jobs: dict[int, str] = {}  # ticket -> job name, for displays

    # -- the device --------------------------------------------------------------------------------------
    def _acquire(self, label: str = "", timeout: float | None = None) -> None:
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return
            ticket = next(self._tickets)
            self._queue.append(ticket)
            self._waiting_jobs[ticket] = label
            try:
                while self._owner is not None or self._queue[0] != ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"the device stayed busy for {timeout:g} s")
                    self._condition.wait(left)
            except BaseException:
                self._queue.remove(ticket)
                self._waiting_jobs.pop(ticket, None)
                self._condition.notify_all()
                raise
            self._queue.popleft()
            self._waiting_jobs.pop(ticket, None)
            self._owner, self._depth = me, 1

    def _release(self) -> None:
        with self._condition:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._condition.notify_all()

    @contextlib.contextmanager
    def device(self, label: str = "", timeout: float | None = None) -> Iterator[None]:
        """Hold the device (waiting in line) without starting a job; re-entrant on the same thread.

        Args:
            label: what :meth:`waiting` shows while this waits.
            timeout: give up after this many seconds in line, with ``TimeoutError`` (None: wait as long as it
                takes).
        """
        self._acquire(label, timeout)
        try:
            yield
        finally:
            self._release()

    def holds_device(self) -> bool:
        """Whether the calling thread holds the device."""
        with self._condition:
            return self._owner == threading.get_ident()

    # -- jobs --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def job(self, name: str, job_count: int = 1, source: str = "", timeout: float | None = None) -> Iterator[Job]:
        """Wait for the device, then run a job until the block ends.

        Args:
            name: what displays call it (``"txt2img"``, ``"train-hypernetwork"``, a script's title).
            job_count: how many units (images, steps) it has, for the overall progress.
            source: who started it (``"ui"``, ``"api"``...).
            timeout: see :meth:`device`.

        Yields:
            The :class:`Job`. Called again on the thread that runs a job, it yields that same job (the
            inner call's name and count are ignored): one press of Generate is one job however many
            generations a script makes.
        """
        with self.device(name, timeout):
            with self._condition:
                nested = self._job is not None
                if not nested:
                    self._job = Job(name, job_count, source)
                job = self._job
            try:
                yield job
            finally:
                if not nested:
                    with self._condition:
                        self._job = None

    @property
    def current(self) -> Job | None:
        """The running job, or None."""
        with self._condition:
            return self._job

    def interrupt(self) -> bool:
        """Stop the running job at its next step; False when nothing runs."""
        job = self.current
        if job is None:
            return False
        job.interrupted.set()
        return True

    def skip(self) -> bool:
        """Stop the running job's current image (or unit) and go on with the next; False when nothing runs."""
        job = self.current
        if job is None:
            return False
        job.skipped.set()
        return True

    def waiting(self) -> list[str]:
        """Names of what waits for the device, in order."""
        with self._condition:
            return [self._waiting_jobs.get(ticket, "") for ticket in self._queue]

    def progress(self) -> Progress:
        """A snapshot of the running job (or of an idle device) and the line behind it."""
        with self._condition:
            job, waiting = self._job, len(self._queue)
        if job is None:
            return Progress(active=False, waiting=waiting)
        return Progress(active=True, job=job.name, source=job.source, job_count=job.job_count, job_no=job.job_no,
                        job_timestamp=job.timestamp, sampling_step=job.sampling_step,
                        sampling_steps=job.sampling_steps, progress=job.progress(), eta=job.eta(),
                        interrupted=job.interrupted.is_set(), skipped=job.skipped.is_set(), textinfo=job.textinfo,
                        waiting=waiting)
