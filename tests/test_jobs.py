"""The job runner: one holder of the device at a time, in arrival order; nested jobs; interrupt, skip, progress."""
from __future__ import annotations

import threading
import time

from extension.jobs import JobRunner


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_jobs_run_one_at_a_time_in_arrival_order():
    runner = JobRunner()
    order, release = [], threading.Event()

    def worker(name):
        with runner.job(name):
            order.append(name)
            if name == "first":
                release.wait(10)

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    wait_until(lambda: runner.current is not None)
    threads = []
    for name in ("second", "third", "fourth"):  # each arrives once the previous one waits
        thread = threading.Thread(target=worker, args=(name,))
        thread.start()
        threads.append(thread)
        wait_until(lambda n=len(threads): len(runner.waiting()) == n)
    assert runner.waiting() == ["second", "third", "fourth"] and runner.progress().waiting == 3
    assert order == ["first"]
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert order == ["first", "second", "third", "fourth"] and runner.current is None


def test_a_nested_job_on_the_holding_thread_is_the_same_job():
    runner = JobRunner()
    with runner.job("script", job_count=4, source="ui") as outer:
        assert runner.holds_device()
        with runner.job("txt2img") as inner:
            assert inner is outer
        with runner.device("load checkpoint"):  # re-entrant
            assert runner.current is outer
        assert runner.current is outer
    assert runner.current is None and not runner.holds_device()


def test_interrupt_skip_and_progress_reach_the_running_job():
    runner = JobRunner()
    assert runner.interrupt() is False and runner.skip() is False
    assert runner.progress().active is False
    started, done = threading.Event(), threading.Event()
    seen = {}

    def work():
        with runner.job("txt2img", job_count=2, source="api") as job:
            job.update(5, 20, job_no=1, textinfo="half")
            started.set()
            seen["interrupted"] = job.interrupted.wait(10)
            seen["skipped"] = job.skipped.is_set()
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    started.wait(10)
    snapshot = runner.progress()
    assert snapshot.active and (snapshot.job, snapshot.source, snapshot.job_no, snapshot.job_count) == \
        ("txt2img", "api", 1, 2)
    assert (snapshot.sampling_step, snapshot.sampling_steps, snapshot.textinfo) == (5, 20, "half")
    assert abs(snapshot.progress - (1 + 5 / 20) / 2) < 1e-9
    assert runner.skip() is True and runner.interrupt() is True
    done.wait(10)
    thread.join(10)
    assert seen == {"interrupted": True, "skipped": True} and runner.progress().active is False


def test_a_waiter_that_gives_up_leaves_the_line():
    runner = JobRunner()
    holding, release, outcome = threading.Event(), threading.Event(), []

    def hold():
        with runner.job("first"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)

    def impatient():
        try:
            with runner.job("impatient", timeout=0.2):
                outcome.append("ran")
        except TimeoutError as exc:
            outcome.append(str(exc))

    waiter = threading.Thread(target=impatient)
    waiter.start()
    waiter.join(10)
    assert outcome == ["the device stayed busy for 0.2 s"] and runner.waiting() == []
    release.set()
    holder.join(10)
    with runner.job("after"):  # the device is free again
        assert runner.current.name == "after"
