"""The learning-rate schedule against the 54 cases run through AUTOMATIC1111's own code (its behaviour where
we keep it, the fix where it has a bug), and the clip schedule's differences."""
from __future__ import annotations

import json

import pytest

from conftest import A1111_FIXTURES
from extension.training.schedule import ScheduleError, parse_schedule

CASES = json.loads((A1111_FIXTURES / "learn_schedule.json").read_text())["cases"]


def ours(case) -> dict:
    """What this project does with a case: refuse, complete, or the steps trained at each rate."""
    try:
        schedule = parse_schedule(case["learn_rate"])
    except ScheduleError:
        return {"refuse": True}
    end = schedule.end(case["max_steps"])
    if case["initial_step"] >= end:
        return {"complete": True, "steps_trained": 0}
    return {"final_step": end, "segments": [list(s) for s in schedule.segments(case["initial_step"], end - 1)]}


def expected(case) -> dict:
    if case["ours"] != "same":
        return case["ours"]
    return {"final_step": case["a1111"]["final_step"], "segments": case["a1111"]["segments"]}


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_schedule_case(case):
    assert ours(case) == expected(case)


def test_messages_name_the_problem():
    for spec, words in [("1e-3:10:5", "more than one ':'"), ("1e-3:10 1e-4:20", "space"),
                        ("1e-3:10, 1e-4:5", "must increase"), ("nan", "not a number"), ("0", "positive"),
                        ("1e-3:1.5", "whole number"), ("", "empty"), ("1e-3:0", "positive")]:
        with pytest.raises(ScheduleError, match=words):
            parse_schedule(spec)


def test_clip_schedule_keeps_its_last_value_beyond_the_end():
    clip = parse_schedule("0.1:10, 0.05:20", "gradient clip")
    assert clip.value_at(5) == 0.1 and clip.value_at(15) == 0.05 and clip.value_at(1000) == 0.05
    assert parse_schedule(0.5).value_at(0) == 0.5
