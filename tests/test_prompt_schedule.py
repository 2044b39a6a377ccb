"""Prompt editing: AUTOMATIC1111's schedules, text by text (its own doctest cases, steps=10)."""
from __future__ import annotations

import pytest

from extension.prompt.schedule import index_at, is_edited, prompt_schedule, text_at
from extension.samplers import resolve_sampler


@pytest.mark.parametrize("prompt,expected", [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    # A1111's docstring marks this one "not handling this right now" and lists an output its grammar cannot
    # give: "|" may not stand in a scheduled text, so the prompt does not parse and is used as written.
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
    ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
    ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
])
def test_a1111_schedules(prompt, expected):
    assert prompt_schedule(prompt, 10) == expected


@pytest.mark.parametrize("prompt,expected", [
    ("a [cat:dog:0.5] on a sofa", [(5, "a cat on a sofa"), (10, "a dog on a sofa")]),
    ("[cat:dog:1.0]", [(10, "cat")]),  # a fraction of 1: the switch is at the very end
    ("[cat:dog:25]", [(10, "cat")]),  # capped at the step count
    ("[cat:dog:0]", [(10, "dog")]),  # step 0: "dog" from the first step
    ("[cat:dog:-2]", [(10, "dog")]),
    ("(emphasis:1.2) [less] stays", [(10, "(emphasis:1.2) [less] stays")]),
    ("", [(10, "")]),
])
def test_switch_points(prompt, expected):
    assert prompt_schedule(prompt, 10) == expected


def test_a1111s_comment_example_at_100_steps():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert prompt_schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_lookup_by_denoiser_call_as_a1111():
    schedule = prompt_schedule("[a:b:0.5]", 4)  # [(2, "a"), (4, "b")]
    assert [text_at(schedule, step) for step in range(6)] == ["a", "a", "a", "b", "b", "a"]  # past the end: first
    assert index_at(schedule, 3) == 1 and is_edited(schedule) and not is_edited(prompt_schedule("a", 4))


def test_second_order_samplers_schedule_over_twice_the_steps():
    assert resolve_sampler("Heun", "Automatic").sampler.total_steps(10) == 20
    assert resolve_sampler("DPM++ SDE", "Automatic").sampler.total_steps(10) == 20
    assert resolve_sampler("Euler a", "Automatic").sampler.total_steps(10) == 10


@pytest.mark.parametrize("prompt", ["(a:1.2) b, c\\(d\\)", "a|b", "((a) (b:0.5)) :", "x ) ( :", "((a:1.2)) [b] c",
                                    "[a:b] [c:0.5", "[(x:1.5)] [y] :3]", "((" * 40 + "[a:b]" + "))" * 40])
def test_text_that_cannot_schedule_is_kept_whole_as_the_parser_keeps_it(prompt):
    from extension.prompt.schedule import _parse, _render

    tree = _parse(prompt)
    assert prompt_schedule(prompt, 10) == [(10, prompt)]
    assert tree is None or _render(tree, 1, 10) == prompt  # the shortcut gives what a parse would


def test_extreme_input_does_not_crash():
    assert prompt_schedule("[a:b:1e999]", 10) == [(10, "a")]  # a switch past the end
    assert prompt_schedule("[a:b:-1e999]", 10) == [(10, "b")]
    deep = "((" * 15 + "[a:b:3]" + "))" * 15  # 62 brackets in one group: parsed
    assert prompt_schedule(deep, 10) == [(3, "((" * 15 + "a" + "))" * 15), (10, "((" * 15 + "b" + "))" * 15)]
    # 480 brackets in one group took A1111's grammar 8 s and more (a server's CPU, per prompt): refused, said so
    with pytest.raises(ValueError, match="too many brackets"):
        prompt_schedule("((" * 120 + "[a:b:3]" + "))" * 120, 10)


def test_bad_step_count():
    with pytest.raises(ValueError):
        prompt_schedule("a", 0)
