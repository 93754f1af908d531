"""`repetition`: a penalty when the same window of consecutive words occurs too often (RLPR's check).

Words are the completion split on white space and on `_` (as RLPR's code does). A window is `window` consecutive
words; when any one window occurs `max_repeats` times or more, the reward is `penalty`, else 0. RLPR's defaults:
10-word windows, 6 occurrences, -1. It looks at the whole completion (reasoning loops are the usual failure) unless
`scope="answer"`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .api import RewardInput, register_reward


@dataclass(frozen=True)
class RepetitionConfig:
    """Options of the `repetition` penalty."""

    window: int = 10
    """Words per window."""
    max_repeats: int = 6
    """A window occurring this many times or more triggers the penalty."""
    penalty: float = -1.0
    """The reward when triggered (0 otherwise)."""
    scope: str = "completion"
    """`completion` (reasoning and answer) or `answer` (the final answer only)."""
    split_underscore: bool = True
    """Split words on `_` too (RLPR), so that `a_a_a_a` counts as repeated words."""


def words_of(text: str, split_underscore: bool = True) -> list[str]:
    """The word list the check runs on."""
    pieces = re.split(r"[\s_]+" if split_underscore else r"\s+", text)
    return [w for w in pieces if w]


def max_window_count(words: list[str], window: int) -> int:
    """How often the most frequent window of `window` consecutive words occurs (0 if the text is shorter)."""
    if window < 1:
        raise ValueError("window must be >= 1")
    if len(words) < window:
        return 0
    counts = Counter(tuple(words[i:i + window]) for i in range(len(words) - window + 1))
    return max(counts.values())


@register_reward("repetition", config=RepetitionConfig)
def repetition_reward(sample: RewardInput, config: RepetitionConfig = RepetitionConfig()) -> float:
    """`penalty` if a window of words repeats `max_repeats` times or more, else 0."""
    if config.scope not in ("completion", "answer"):
        raise ValueError(f"scope must be completion or answer, got {config.scope!r}")
    text = sample.completion if config.scope == "completion" else sample.answer_text
    count = max_window_count(words_of(text, config.split_underscore), config.window)
    return config.penalty if count >= config.max_repeats else 0.0
