"""`reward_model`: the slot for a model-based scorer of the final answer, and the group z-normalisation.

The scorer sees the final answer only, never the reasoning: it receives the answer texts and copies of the rows whose
`completion` is the answer and whose `thinking` is None. A scorer is any callable
`scorer(answers: list[str], samples: list[RewardInput]) -> list[float | None]`, named by `module:attr` or
`file.py:attr` (a class is instantiated with `scorer_options`). The paper uses a multimodal reward model; the
built-in `OverlapScorer` is a small deterministic stand-in (no download) so the slot is tested end to end.

`reward_model` returns raw scores; the z-normalisation within each group (the samples of one prompt) is the
separate pure function `group_znorm`, applied by `combine` to the parts it lists in `group_normalize`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence

from .api import RewardInput, _load_path, register_reward


class Scorer(Protocol):
    """A batched scorer of final answers."""

    def __call__(self, answers: list[str], samples: list[RewardInput]) -> list[float | None]: ...


class OverlapScorer:
    """Example scorer: the word-level F1 between the answer and the reference (0 without a reference), minus
    `length_penalty` per word beyond `max_words`. Deterministic, no model, for tests and as a template."""

    def __init__(self, max_words: int = 200, length_penalty: float = 0.001) -> None:
        self.max_words = max_words
        self.length_penalty = length_penalty

    @staticmethod
    def _words(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def __call__(self, answers: list[str], samples: list[RewardInput]) -> list[float | None]:
        out: list[float | None] = []
        for answer, sample in zip(answers, samples):
            words = self._words(answer)
            ref = self._words(str(sample.reference)) if sample.reference is not None else []
            common = sum((Counter(words) & Counter(ref)).values())  # linear (list.count per word was quadratic)
            f1 = 0.0 if not common else 2 * common / (len(words) + len(ref))
            out.append(f1 - self.length_penalty * max(0, len(words) - self.max_words))
        return out


@dataclass(frozen=True)
class RewardModelConfig:
    """Options of the `reward_model` slot."""

    scorer: str = "rewards.reward_model:OverlapScorer"
    """The scorer: `module:attr` or `file.py:attr`, a class (instantiated with `scorer_options`) or a function."""
    scorer_options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the scorer class."""


_SCORERS: dict[str, Callable[..., Any]] = {}


def load_scorer(config: RewardModelConfig) -> Callable[..., Any]:
    """The configured scorer (instances are cached per process)."""
    key = f"{config.scorer}|{sorted(config.scorer_options.items())!r}"
    if key not in _SCORERS:
        obj = _load_path(config.scorer)
        _SCORERS[key] = obj(**config.scorer_options) if isinstance(obj, type) else obj
    return _SCORERS[key]


def answer_only(sample: RewardInput) -> RewardInput:
    """A copy of the row that holds the final answer only (what a reward model may see)."""
    return dataclasses.replace(sample, completion=sample.answer_text, thinking=None)


@register_reward("reward_model", batched=True, sandbox=False, config=RewardModelConfig)
def reward_model(samples: list[RewardInput], config: RewardModelConfig = RewardModelConfig()) -> list[float | None]:
    """Raw scores of the final answers by the configured scorer (z-normalise them with `group_znorm`)."""
    scorer = load_scorer(config)
    visible = [answer_only(s) for s in samples]
    scores = list(scorer([s.answer_text for s in visible], visible))
    if len(scores) != len(samples):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(samples)} answers")
    return scores


def group_znorm(scores: Sequence[float | None], groups: Sequence[Hashable], eps: float = 1e-6,
                ddof: int = 0) -> list[float | None]:
    """(x - mean) / std within each group (the population std with ddof=0), over the rows that are not None.

    None stays None and is left out of the mean and std. A group with one scored row, or whose std is <= eps,
    gives 0 for each of its rows (no signal rather than a division by ~0)."""
    if len(scores) != len(groups):
        raise ValueError(f"{len(scores)} scores but {len(groups)} group ids")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, (score, group) in enumerate(zip(scores, groups)):
        if score is not None:
            members[group].append(i)
    out: list[float | None] = [None] * len(scores)
    for rows in members.values():
        values = [float(scores[i]) for i in rows]  # type: ignore[arg-type]
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - ddof)) if n - ddof > 0 else 0.0
        for i, v in zip(rows, values):
            out[i] = 0.0 if n < 2 or std <= eps else (v - mean) / std
    return out
