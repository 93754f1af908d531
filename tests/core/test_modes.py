"""The modes and think tags: splitting a completion into thinking and answer, resolving `auto`."""

import pytest

from core.modes import (ENABLE_THINKING, FIXED_MODES, MODES, THINK_CLOSE, THINK_OPEN, check_mode, resolve_mode,
                        split_completion)


def test_one_order_and_one_switch_per_mode():
    assert MODES == ("short", "long", "auto") and FIXED_MODES == ("short", "long")
    assert (THINK_OPEN, THINK_CLOSE) == ("<think>", "</think>")
    assert list(ENABLE_THINKING) == list(MODES) and ENABLE_THINKING == {"short": False, "long": True, "auto": None}


@pytest.mark.parametrize("completion, mode, thinking, answer", [
    ("reasoning</think>\n\nfinal", "long", "reasoning", "\n\nfinal"),
    ("<think>\nreasoning</think>final", "long", "\nreasoning", "final"),
    ("  <think>r</think>a", "long", "r", "a"),
    ("a</think>b</think>c", "long", "a</think>b", "c"),  # the final answer follows the LAST </think>
    ("no closing tag, truncated", "long", "no closing tag, truncated", ""),
    ("just the answer", "short", None, "just the answer"),
    ("<think>x</think>y", "short", None, "<think>x</think>y"),  # short mode: the whole completion
    ("r</think>a", "auto", "r", "a"),
    ("plain answer", "auto", None, "plain answer"),
])
def test_split_completion(completion, mode, thinking, answer):
    assert split_completion(completion, mode) == (thinking, answer)


def test_split_completion_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        split_completion("x", "medium")


@pytest.mark.parametrize("completion, mode, resolved", [
    ("r</think>a", "auto", "long"),
    ("<think>unclosed", "auto", "short"),  # only a closing tag makes an auto completion long
    ("plain", "auto", "short"),
    ("plain", "long", "long"),  # a fixed mode stays as it is, whatever the text
    ("r</think>a", "short", "short"),
])
def test_resolve_mode(completion, mode, resolved):
    assert resolve_mode(completion, mode) == resolved


def test_check_mode_names_the_field():
    assert check_mode("long") == "long"
    with pytest.raises(ValueError, match=r"request\.mode='fast': expected one of short, long, auto"):
        check_mode("fast", "request.mode")
