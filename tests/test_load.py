"""Concurrency and load on a real server: simultaneous API and UI generations with different networks,
multipliers and seeds equal the images made alone, the queue drains with bounded memory, and training and
generations interleave without corrupting each other (``bench/reliability_load.py``; 100 requests there)."""
from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.reliability_load import measure  # noqa: E402


def test_simultaneous_generations_equal_alone_the_queue_drains_and_training_interleaves(tmp_path):
    record = measure(quick=True, workdir=tmp_path)
    assert record.statuses == {200: record.requests}, record
    assert record.api_equal_alone == record.requests and record.ui_equal_alone == record.ui_requests, record
    assert record.drained and record.rss_peak_mb <= record.rss_limit_mb, record
    assert record.training_status == "finished" and record.training_step == 6, record
    assert record.generations_during_training_equal == record.generations_during_training, record
