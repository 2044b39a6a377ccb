"""The prompt parsers fuzzed with hypothesis: ``<hypernet:...>`` tags, emphasis, prompt editing, tokenizing.

What must hold for any text up to :data:`fuzzing.MAX_PROMPT` characters: no exception but the documented
``ValueError`` (prompt editing refuses prompts with more brackets than it can parse in a few seconds), and no
hang (a call that has not returned after :data:`fuzzing.PROMPT_CALL_LIMIT` seconds, on a watchdog thread, is a
failure; not a timing figure). Prompt editing parses a prompt group by group; it must give what A1111's grammar
gives on the whole prompt, checked here on drawn prompts small enough to parse whole. ``python
bench/reliability.py --part fuzz-prompts`` runs the same at volume.
"""
from __future__ import annotations

import concurrent.futures

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import MAX_PROMPT, PROMPT_CALL_LIMIT, prompt_parsers, prompt_strategy, whole_prompt_schedule

PARSERS = prompt_parsers()
WATCHDOG = concurrent.futures.ThreadPoolExecutor(1)


def call(fn, text):
    """``fn(text)`` on the watchdog thread: its result, or the ``ValueError`` it raised."""
    future = WATCHDOG.submit(fn, text)
    try:
        return future.result(timeout=PROMPT_CALL_LIMIT * 6)  # a hang, not a slow call (see the module docstring)
    except ValueError as exc:
        return exc
    except concurrent.futures.TimeoutError:
        pytest.fail(f"{fn} did not return on a {len(text)}-character prompt: {text[:200]!r}")


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=prompt_strategy())
def test_parsers_raise_only_value_error(text):
    assert len(text) <= MAX_PROMPT
    for name, parser in PARSERS.items():
        call(parser, text)  # anything but a ValueError propagates and fails


TOKENS = st.sampled_from(["[a:b:1]", "[a|b]", "(", ")", "[", "]", ":", "|", "a", " ", "\\", "1", ".5", "(a:1.2)",
                          "[b:2]", "[::1]", "\\(", "\n", ","])


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(st.lists(TOKENS, max_size=12).map("".join), st.text(alphabet="[]():|ab 15.\\\n", max_size=20)))
def test_editing_parsed_by_groups_equals_the_whole_parse(text):
    from extension.prompt.schedule import prompt_schedule

    got = call(lambda t: prompt_schedule(t, 6), text)
    if not isinstance(got, ValueError):
        assert got == whole_prompt_schedule(text, 6)


@pytest.mark.parametrize("text", [
    "(x) " * 200 + "[a:b:1]",  # 152 s in A1111's grammar parsed whole
    "[x] " * 100 + "[a:b:1]",
    "[a:b:1] " * 100,
    "[a|b] " * 50,
    "(masterpiece:1.2), (best quality:1.1), " * 60 + "[cat:dog:0.5]",
    "a " * 5000 + "[a:b:0.5]",
])
def test_long_prompts_are_parsed_group_by_group(text):
    from extension.prompt.schedule import prompt_schedule

    schedule = call(lambda t: prompt_schedule(t, 10), text)
    assert not isinstance(schedule, ValueError) and len(schedule) >= 2


@pytest.mark.parametrize("text", [
    "((" * 120 + "[a:b:3]" + "))" * 120,  # one group of 480 brackets
    "[" * 200 + "a:b:0.5" + "]" * 200,
    "[" + "(x) " * 100 + "[a:b:1]]",  # 100 groups inside one
    "[x]" * 300 + "[a:b:1]",  # no cut between adjacent groups: one piece of 600 brackets
    "(a [b:c:1] " * 100,  # unbalanced, 300 brackets
])
def test_prompts_beyond_the_bracket_budget_are_refused(text):
    from extension.prompt.schedule import prompt_schedule

    refused = call(lambda t: prompt_schedule(t, 10), text)
    assert isinstance(refused, ValueError) and "prompt editing" in str(refused)


def test_tag_multipliers_refused_with_value_error():
    from extension.prompt.tags import parse_multiplier

    for text in ("nan", "inf", "-inf", "1e999", "x", ""):
        with pytest.raises(ValueError, match="multiplier"):
            parse_multiplier(text)
