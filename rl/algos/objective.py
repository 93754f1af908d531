"""The learner's objective as one function: one micro-batch's per-token tensors in, the loss to back-propagate and
its metrics out (prime-rl's `compute_loss`). A learner backend arranges tensors and calls it; it never does RL math.

    out = compute_loss(LossInputs(logp, mask, advantages, old_logp=..., ref_logp=..., rollout_logp=...),
                       Normalisers(num_tokens, num_seqs), Objective(policy_loss="ppo_clip", kl="k3", kl_coef=1e-3))
    out.loss.backward()                       # per micro-batch: the shares sum to the global batch's loss

The pieces, in order (each a registered function of this package):
1. **Finite tokens only.** A token whose learner, old or reference log-prob is not finite is masked out of the loss
   and counted (`nonfinite_tokens`). A sampled token outside the learner's top-k/top-p set has log-prob -inf (a
   nucleus-boundary flip between the engine's kernels and the learner's), and -inf - -inf is NaN: one such token
   would make every trainable weight NaN after one step. The normalisers stay the global batch's (such a token
   weighs 0, as padding does), so the loss does not depend on which rank or micro-batch held it.
2. TIS weights against the rollout engine's log-probs (`importance.tis_weights`: `tis_cap`, `tis_level`,
   `tis_mode`).
3. The registered policy loss (`policy_loss`, with the options it declares taken from `options`).
4. The KL term, when on: `kl_coef * kl_penalty(...)` clamped to +-`kl_clamp` (verl's +-10 for k3), importance-
   weighted by pi / pi_behaviour when `kl_importance` (the samples were drawn by an older policy: one-step-off).
5. Aggregation with the global normalisers (`agg_loss`), and the metrics from the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .aggregation import agg_loss
from .importance import tis_weights
from .kl import kl_enabled, kl_penalty
from .metrics import approx_kl, clip_fractions, entropy_mean, ratio_stats, tis_stats
from .registry import get_policy_loss, options_for


@dataclass
class LossInputs:
    """One micro-batch, one completion per row (right-padded; `mask` marks the completion tokens)."""
    logp: torch.Tensor
    """[B, T] the learner's log-probs under the current weights (with gradient)."""
    mask: torch.Tensor
    """[B, T] bool: the completion tokens that count."""
    advantages: torch.Tensor
    """[B] one per sequence (or [B, T] per token)."""
    old_logp: torch.Tensor | None = None
    """[B, T] the ratio's denominator; None: logp.detach() (one update per batch: the ratio is 1)."""
    ref_logp: torch.Tensor | None = None
    """[B, T] the frozen reference's log-probs (needed when the KL term is on)."""
    rollout_logp: torch.Tensor | None = None
    """[B, T] the rollout engine's log-probs (NaN where not reported); None: no TIS."""
    entropy: torch.Tensor | None = None
    """[B, T] the policy's entropy per token (a metric only)."""
    choice_mask: torch.Tensor | None = None
    """[B, T] bool: the choice token of each auto-mode completion (its first: whether it opens `<think>`), weighed
    apart from the response when `Objective.choice_weight` is set."""


@dataclass
class Normalisers:
    """The global batch's counts (all micro-batches and ranks of one optimizer update)."""
    num_tokens: float
    num_seqs: float
    norm_length: int | None = None
    """Dr. GRPO's constant (seq-mean-token-sum-norm)."""


@dataclass
class Objective:
    """What the loss is: the names and knobs of `AlgoConfig` that act on one micro-batch (`AlgoConfig.objective()`)."""
    policy_loss: str = "ppo_clip"
    loss_agg: str = "token-mean"
    kl: str = "off"
    kl_coef: float = 0.0
    kl_clamp: float | None = 10.0
    kl_importance: bool = False
    tis_cap: float | None = 2.0
    tis_level: str = "token"
    tis_mode: str = "truncate"
    choice_weight: float | None = None
    """None: an auto-mode completion's choice token is one response token like the others. A weight: decoupled, as
    Thinkless's GRPO: the response is aggregated without it, and the choice tokens' loss is added as `choice_weight`
    x their sum over the batch's sequences (per sequence, not per token: one token does not drown in a long
    response, nor does the choice collapse to one mode for want of gradient)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Every knob by name; the policy loss takes those it declares (`registry.options_for`)."""


@dataclass
class LossOutput:
    loss: torch.Tensor
    """[] this micro-batch's share of the global loss (policy loss + kl_coef * KL)."""
    metrics: dict[str, torch.Tensor]
    """Detached shares of the global means (summed over micro-batches and ranks); `_min` / `_max` keys reduce by
    min / max; `nonfinite_tokens` is a count."""


def finite_mask(mask: torch.Tensor, *logps: torch.Tensor | None) -> torch.Tensor:  # [B, T] bool
    """`mask` without the tokens where any of `logps` is not finite."""
    out = mask.bool()
    for lp in logps:
        if lp is not None:
            out = out & torch.isfinite(lp)
    return out


def _finite(value: torch.Tensor | None, keep: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor | None:
    """`value` where `keep`, else `fill`: nothing non-finite enters the loss (nor its gradient: where() sends none
    to the positions it does not take)."""
    return None if value is None else torch.where(keep, value, fill)


def compute_loss(inputs: LossInputs, norms: Normalisers, objective: Objective) -> LossOutput:
    """The objective of one micro-batch (see the module docstring)."""
    x, o = inputs, objective
    use_kl = kl_enabled(o.kl, o.kl_coef)
    if use_kl and x.ref_logp is None:
        raise ValueError(f"the KL term is on (kl={o.kl}, kl_coef={o.kl_coef}) but no reference log-probs were given")
    raw_mask = x.mask.bool()
    mask = finite_mask(raw_mask, x.logp, x.old_logp, x.ref_logp if use_kl else None)
    logp = _finite(x.logp, mask, 0.0)
    old = logp.detach() if x.old_logp is None else _finite(x.old_logp, mask, 0.0)
    num_tokens = norms.num_tokens
    metrics: dict[str, torch.Tensor] = {"nonfinite_tokens": (raw_mask & ~mask).sum().float()}
    weights = None
    if o.tis_cap is not None and x.rollout_logp is not None:
        rollout = _finite(x.rollout_logp, mask, float("nan"))
        weights = tis_weights(old, rollout, mask, cap=o.tis_cap, level=o.tis_level, mode=o.tis_mode)
        metrics.update(tis_stats(old, rollout, mask, cap=o.tis_cap, level=o.tis_level, mode=o.tis_mode,
                                 num_tokens=num_tokens))
    policy_loss = get_policy_loss(o.policy_loss)
    pg, aux = policy_loss(logp, old, x.advantages.to(logp.dtype), mask, is_weights=weights,
                          **options_for(policy_loss, o.options))
    agg = {"num_tokens": num_tokens, "num_seqs": norms.num_seqs, "norm_length": norms.norm_length}
    if o.choice_weight is not None and x.choice_mask is not None:  # Thinkless's decoupled choice token
        choice = mask & x.choice_mask.bool()
        loss = agg_loss(pg, mask & ~choice, o.loss_agg, **agg)
        choice_loss = (pg * choice).sum() / norms.num_seqs
        metrics["choice_loss"] = choice_loss.detach()
        loss = loss + o.choice_weight * choice_loss
    else:
        loss = agg_loss(pg, mask, o.loss_agg, **agg)
    metrics["pg_loss"] = loss.detach()
    if use_kl:
        behaviour = None
        if o.kl_importance:  # the sampler's log-probs: the engine's where reported, else the ratio's denominator
            behaviour = old if x.rollout_logp is None else torch.where(torch.isfinite(x.rollout_logp) & mask,
                                                                       x.rollout_logp, old)
        ref = _finite(x.ref_logp, mask, 0.0)
        kl = agg_loss(kl_penalty(logp, ref, o.kl, mask, clamp=o.kl_clamp, old_logp=behaviour), mask, o.loss_agg,
                      **agg)
        metrics["kl"] = kl.detach()
        loss = loss + o.kl_coef * kl
    metrics["loss"] = loss.detach()
    metrics.update(clip_fractions(aux, mask, num_tokens))
    metrics.update(ratio_stats(aux["ratio"], mask, num_tokens))
    metrics.update(approx_kl(logp.detach(), old, mask, num_tokens))  # to the policy the ratio compares with
    if x.entropy is not None:
        metrics.update(entropy_mean(x.entropy, mask, num_tokens))
    return LossOutput(loss, metrics)
