"""`overlong`: DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13), with a length budget per mode.

With L the completion length, L_max the limit and B the buffer before it:
  0 if L <= L_max - B;   (L_max - B - L) / B  if L_max - B < L <= L_max (a linear ramp from 0 to -1);   -1 beyond.
The length is read from `meta[length_key]` (the trainer's token count of the completion); a row without it is an
error (the reward does not guess a tokenisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from core.modes import FIXED_MODES

from .api import RewardInput, register_reward


@dataclass(frozen=True)
class OverlongConfig:
    """Options of the `overlong` penalty."""

    max_tokens: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(FIXED_MODES, 8192))
    """L_max per mode (the paper's rollouts: 8192 tokens for both)."""
    buffer_tokens: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(FIXED_MODES, 1024))
    """B per mode: the ramp's length before L_max."""
    length_key: str = "completion_tokens"
    """The meta key holding the completion's length in tokens."""
    scale: float = 1.0
    """The penalty's size: the ramp goes from 0 to -scale."""


def soft_overlong(length: float, max_len: int, buffer: int, scale: float = 1.0) -> float:
    """DAPO's soft overlong penalty of one length (pure)."""
    if buffer <= 0:
        return 0.0 if length <= max_len else -scale
    start = max_len - buffer
    if length <= start:
        return 0.0
    if length <= max_len:
        return scale * (start - length) / buffer
    return -scale


@register_reward("overlong", config=OverlongConfig)
def overlong_reward(sample: RewardInput, config: OverlongConfig = OverlongConfig()) -> float:
    """The soft overlong penalty of the row's length, with its mode's budget (auto: resolved by `</think>`)."""
    if config.length_key not in sample.meta:
        raise KeyError(f"overlong needs meta[{config.length_key!r}] (the completion's token count)")
    mode = sample.resolved_mode
    return soft_overlong(float(sample.meta[config.length_key]), config.max_tokens[mode], config.buffer_tokens[mode],
                         config.scale)
