"""Prompt tags: AUTOMATIC1111's grammar, multipliers, and clear messages for what cannot be honoured."""
from __future__ import annotations

from extension.prompt.tags import (HypernetworkRequest, format_tag, hypernetwork_requests, parse_hypernetworks,
                              parse_prompt)


def test_tags_are_removed_and_applied_in_order():
    cleaned, requests, messages = parse_hypernetworks("a castle <hypernet:oil:0.8>, night <hypernet:ink>")
    assert cleaned == "a castle , night "
    assert requests == [HypernetworkRequest("oil", 0.8), HypernetworkRequest("ink", 1.0)]
    assert messages == []


def test_negative_and_extra_items():
    _, requests, messages = parse_hypernetworks("<hypernet:a:-0.5> <hypernet:b:1.5:extra> <hypernet:c:2e-1>")
    assert [r.multiplier for r in requests] == [-0.5, 1.5, 0.2] and messages == []


def test_other_networks_are_removed_and_reported():
    cleaned, requests, messages = parse_hypernetworks("photo <lora:detail:0.7> <embedding:x>")
    assert cleaned.strip() == "photo" and requests == []
    assert len(messages) == 2 and "<lora:detail:0.7>" in messages[0] and "not supported" in messages[0]


def test_bad_multiplier_and_empty_name_give_messages_not_crashes():
    for prompt, needle in [("<hypernet:x:abc>", "'abc' is not a number"), ("<hypernet:x:nan>", "not a finite"),
                           ("<hypernet:x:inf>", "not a finite"), ("<hypernet: :1>", "name is empty"),
                           ("<hypernet::1>", "name is empty")]:
        cleaned, tags = parse_prompt(prompt)
        requests, messages = hypernetwork_requests(tags)
        assert requests == [] and len(messages) == 1 and needle in messages[0], prompt
        assert cleaned == ""


def test_text_that_only_looks_like_a_tag_is_left_alone():
    cleaned, requests, messages = parse_hypernetworks("a <b> c <no colon> (word:1.2)")
    assert cleaned == "a <b> c <no colon> (word:1.2)" and requests == [] and messages == []


def test_format_tag():
    assert format_tag("oil", 1.0) == "<hypernet:oil:1>" and format_tag("oil", 0.75) == "<hypernet:oil:0.75>"
