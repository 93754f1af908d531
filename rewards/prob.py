"""`prob`: RLPR's probability reward for free-form reference answers (Yu et al. 2025, "RLPR", arXiv 2506.18254).

    r = clip( mean_t p(ref_t | prompt, own reasoning, ref_<t)  -  mean_t p(ref_t | prompt, no reasoning, ref_<t),  0 )

Each term is the mean per-token probability (exp of the log-prob, averaged over the reference's tokens, RLPR's
`mean_exp_log_softmax`) the policy gives the reference answer when it replaces the model's own final answer. The
second term debiases: it is what the policy would give the reference with no reasoning at all, so that only the
gain due to the reasoning is rewarded; gains below 0 are clipped to 0.

The reward is a pure function of log-probs that the trainer supplies; this module runs no model. Interface:
1. `prob_query(sample)` says what to score: the text that precedes the reference after the prompt, with reasoning
   (`with_reasoning`: the completion up to and including `</think>`, then a blank line; the prompt is rendered in the
   row's mode) and without (`without_reasoning`: empty, after the prompt rendered in short mode, i.e. after the
   pre-filled empty think block), and the `target` (the reference).
2. The trainer runs the policy on both, in batch, and takes the log-probs of the target's tokens: two ragged lists
   (or padded [B, T] tensors with masks).
3. Either call `prob_rewards(with_lp, without_lp)` directly (batched), or put the two lists in each row's meta as
   `ref_logprobs` and `ref_logprobs_no_reasoning` and use the registered per-row reward `prob`.
In short mode there is no reasoning: both terms are the same and the reward is 0 (no learning signal), so route
short-mode free-form rows to another verifier or the reward model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from core.modes import THINK_CLOSE

from .api import RewardInput, register_reward


@dataclass(frozen=True)
class ProbConfig:
    """Options of the `prob` reward."""

    with_key: str = "ref_logprobs"
    """Meta key: log-probs of the reference's tokens after the model's own reasoning."""
    without_key: str = "ref_logprobs_no_reasoning"
    """Meta key: log-probs of the reference's tokens with no reasoning (the debiasing term)."""
    debias: bool = True
    """Subtract the no-reasoning term (RLPR). False: the raw mean probability with reasoning."""
    clip_min: float = 0.0
    """Lower clip of the result (RLPR: 0)."""


@dataclass(frozen=True)
class ProbQuery:
    """What the trainer scores for one row: prompt(mode) + with_reasoning + target, and
    prompt(short) + without_reasoning + target, reading the log-probs of the target's tokens."""

    with_reasoning: str
    """Completion-side text before the reference, with the model's reasoning."""
    without_reasoning: str
    """Completion-side text before the reference without reasoning (after a short-mode prompt)."""
    target: str
    """The reference answer whose tokens are scored."""
    mode: str
    """The mode to render the with-reasoning prompt in (`long` or `short`)."""


def prob_query(sample: RewardInput, separator: str = "\n\n") -> ProbQuery:
    """The texts to score for a row (see the module docstring)."""
    if sample.reference is None:
        raise ValueError("prob needs a reference answer")
    mode = sample.resolved_mode
    if mode == "long" and THINK_CLOSE in sample.completion:
        head = sample.completion[: sample.completion.rindex(THINK_CLOSE) + len(THINK_CLOSE)]
        with_reasoning = head + separator
    else:
        with_reasoning, mode = "", "short"
    return ProbQuery(with_reasoning=with_reasoning, without_reasoning="", target=str(sample.reference), mode=mode)


def mean_token_prob(logprobs: Sequence[float]) -> float:
    """Mean over tokens of exp(log-prob); 0 for an empty sequence."""
    values = [float(x) for x in logprobs]
    if not values:
        return 0.0
    return sum(math.exp(x) for x in values) / len(values)


def prob_reward(with_reasoning: Sequence[float], without_reasoning: Sequence[float] | None,
                clip_min: float = 0.0, debias: bool = True) -> float:
    """RLPR's reward of one row from the two log-prob sequences."""
    score = mean_token_prob(with_reasoning)
    if debias:
        if without_reasoning is None:
            raise ValueError("the debiased reward needs the no-reasoning log-probs")
        score -= mean_token_prob(without_reasoning)
    return max(score, clip_min) if clip_min is not None else score


def _masked_mean_prob(logprobs: Any, mask: Any) -> list[float]:
    import torch

    lp = torch.as_tensor(logprobs, dtype=torch.float32)  # [B, T]
    m = torch.ones_like(lp) if mask is None else torch.as_tensor(mask, dtype=torch.float32)  # [B, T]
    probs = torch.exp(lp) * m
    count = m.sum(dim=-1)  # [B]
    return torch.where(count > 0, probs.sum(dim=-1) / count.clamp(min=1), torch.zeros_like(count)).tolist()


def prob_rewards(with_reasoning: Any, without_reasoning: Any, with_mask: Any = None, without_mask: Any = None,
                 clip_min: float = 0.0, debias: bool = True) -> list[float]:
    """Batched RLPR reward: ragged lists of log-prob lists, or padded [B, T] tensors with 0/1 masks [B, T]."""
    if hasattr(with_reasoning, "shape"):
        p_with = _masked_mean_prob(with_reasoning, with_mask)
    else:
        p_with = [mean_token_prob(x) for x in with_reasoning]
    if not debias:
        return [max(p, clip_min) for p in p_with]
    if hasattr(without_reasoning, "shape"):
        p_without = _masked_mean_prob(without_reasoning, without_mask)
    else:
        p_without = [mean_token_prob(x) for x in without_reasoning]
    if len(p_with) != len(p_without):
        raise ValueError(f"batch sizes differ: {len(p_with)} with reasoning, {len(p_without)} without")
    return [max(a - b, clip_min) for a, b in zip(p_with, p_without)]


@register_reward("prob", sandbox=False, config=ProbConfig)
def prob_reward_row(sample: RewardInput, config: ProbConfig = ProbConfig()) -> float | None:
    """The row's RLPR reward from the log-probs the trainer put in its meta (an error when they are missing)."""
    needed = [config.with_key] + ([config.without_key] if config.debias else [])
    missing = [k for k in needed if sample.meta.get(k) is None]
    if missing:
        raise KeyError(f"prob needs the trainer's log-probs in meta {missing} (see rewards.prob)")
    without = sample.meta.get(config.without_key)
    return prob_reward(sample.meta[config.with_key], without, config.clip_min, config.debias)
