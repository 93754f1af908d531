"""`format`: the shape of a completion for its mode.

long: exactly one well-formed `<think>...</think>` with non-empty reasoning, followed by a non-empty answer. The
prompt pre-fills `<think>\\n`, so the completion normally holds only `</think>`; an opening `<think>` at the start of
the completion is accepted too (once). short: the prompt pre-fills an empty think block, so the completion must hold
no `<think>`/`</think>` tag at all and a non-empty answer. auto: long rules if the completion holds `</think>`, else
short rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.modes import THINK_CLOSE, THINK_OPEN, resolve_mode

from .api import RewardInput, register_reward


@dataclass(frozen=True)
class FormatConfig:
    """Options of the `format` reward."""

    ok: float = 1.0
    """Score of a well-formed completion."""
    bad: float = 0.0
    """Score of a malformed one."""
    require_thinking: bool = True
    """Long mode: the reasoning between the tags must be non-empty (not only white space)."""


def format_ok(completion: str, mode: str, config: FormatConfig = FormatConfig()) -> bool:
    """Whether the completion has the shape its mode asks for."""
    if resolve_mode(completion, mode) == "short":
        return THINK_OPEN not in completion and THINK_CLOSE not in completion and bool(completion.strip())
    text = completion.lstrip()
    if text.startswith(THINK_OPEN):
        text = text[len(THINK_OPEN):]
    if THINK_OPEN in text or text.count(THINK_CLOSE) != 1:
        return False
    thinking, _, answer = text.partition(THINK_CLOSE)
    if config.require_thinking and not thinking.strip():
        return False
    return bool(answer.strip())


@register_reward("format", config=FormatConfig)
def format_reward(sample: RewardInput, config: FormatConfig = FormatConfig()) -> float:
    """`ok` for a well-formed completion of its mode, else `bad`."""
    return config.ok if format_ok(sample.completion, sample.mode, config) else config.bad
