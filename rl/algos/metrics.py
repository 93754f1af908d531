"""Training metrics from the same tensors as the loss, each in its own function. All results are detached 0-d tensors.

Micro-batching: the "mean" metrics take the same optional global `num_tokens` as `aggregation.token_mean`; passed,
each micro-batch returns its share and the shares *sum* to the global-batch mean. Keys ending in "_min" / "_max"
reduce across micro-batches with min / max. A min/max over zero tokens is NaN.
"""

from __future__ import annotations

import torch

from .aggregation import Number
from .importance import tis_weights


@torch.no_grad()
def masked_mean(
    x: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    num_tokens: Number | None = None,  # global token count; None = mask.sum()
) -> torch.Tensor:  # []
    mask = mask.bool()
    total = torch.where(mask, x, 0).sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    n = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, device=x.device)
    return total / n.clamp(min=1)


@torch.no_grad()
def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> []
    vals = x[mask.bool()]
    return vals.max() if vals.numel() else torch.tensor(float("nan"), device=x.device)


@torch.no_grad()
def masked_min(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> []
    vals = x[mask.bool()]
    return vals.min() if vals.numel() else torch.tensor(float("nan"), device=x.device)


@torch.no_grad()
def clip_fractions(
    aux: dict[str, torch.Tensor],  # the policy loss's aux: "clipped_low", "clipped_high", "dual_clipped" [B, T] bool
    mask: torch.Tensor,  # [B, T]
    num_tokens: Number | None = None,
) -> dict[str, torch.Tensor]:
    """Fractions of response tokens where a clip is active (its gradient is cut):
    clip_frac_low: ratio < 1 - clip_low and A < 0; clip_frac_high: ratio > 1 + clip_high and A > 0;
    clip_frac: either; dual_clip_frac: A < 0 and ratio > c. (TRL's clip_ratio/low_mean, high_mean, region_mean.)"""
    low, high = aux["clipped_low"], aux["clipped_high"]
    return {
        "clip_frac_low": masked_mean(low.float(), mask, num_tokens),
        "clip_frac_high": masked_mean(high.float(), mask, num_tokens),
        "clip_frac": masked_mean((low | high).float(), mask, num_tokens),
        "dual_clip_frac": masked_mean(aux["dual_clipped"].float(), mask, num_tokens),
    }


@torch.no_grad()
def approx_kl(
    logp: torch.Tensor,  # [B, T] current
    old_logp: torch.Tensor,  # [B, T] the ratio's denominator policy (samples were drawn from it)
    mask: torch.Tensor,  # [B, T]
    num_tokens: Number | None = None,
) -> dict[str, torch.Tensor]:
    """KL(pi_old || pi) estimated on the sampled tokens (Schulman 2020), with r = pi / pi_old:
    approx_kl_k1 = mean(-log r) (verl's `ppo_kl`), approx_kl_k3 = mean((r - 1) - log r) (>= 0, lower variance)."""
    mask = mask.bool()
    log_r = torch.where(mask, logp - old_logp, 0.0)
    return {
        "approx_kl_k1": masked_mean(-log_r, mask, num_tokens),
        "approx_kl_k3": masked_mean(torch.expm1(log_r) - log_r, mask, num_tokens),
    }


@torch.no_grad()
def ratio_stats(
    ratio: torch.Tensor,  # [B, T] the policy loss's aux["ratio"]
    mask: torch.Tensor,  # [B, T]
    num_tokens: Number | None = None,
) -> dict[str, torch.Tensor]:
    """Mean / min / max of the policy importance ratio over response tokens."""
    return {"ratio_mean": masked_mean(ratio, mask, num_tokens), "ratio_min": masked_min(ratio, mask),
            "ratio_max": masked_max(ratio, mask)}


@torch.no_grad()
def tis_stats(
    old_logp: torch.Tensor,  # [B, T]
    rollout_logp: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    cap: float = 2.0,
    level: str = "token",
    mode: str = "truncate",
    num_tokens: Number | None = None,
) -> dict[str, torch.Tensor]:
    """Rollout-vs-learner importance statistics, from the same inputs as `importance.tis_weights`:
    tis_weight_mean (after truncation), tis_ratio_max (before), tis_truncated_frac (tokens whose raw weight > cap),
    and rollout_learner_logp_abs_diff mean / max (the raw mismatch, TRL's sampling/sampling_logp_difference)."""
    mask = mask.bool()
    raw = tis_weights(old_logp, rollout_logp, mask, cap=float("inf"), level=level)  # untruncated
    w = tis_weights(old_logp, rollout_logp, mask, cap=cap, level=level, mode=mode)
    diff = torch.where(mask & ~torch.isnan(rollout_logp), (old_logp - rollout_logp).abs(), 0.0)
    return {
        "tis_weight_mean": masked_mean(w, mask, num_tokens),
        "tis_ratio_max": masked_max(raw, mask),
        "tis_truncated_frac": masked_mean((raw > cap).float(), mask, num_tokens),
        "rollout_learner_logp_abs_diff_mean": masked_mean(diff, mask, num_tokens),
        "rollout_learner_logp_abs_diff_max": masked_max(diff, mask),
    }


@torch.no_grad()
def entropy_mean(
    entropy: torch.Tensor,  # [B, T] from entropy.entropy_from_logits
    mask: torch.Tensor,  # [B, T]
    num_tokens: Number | None = None,
) -> dict[str, torch.Tensor]:
    """Mean policy entropy over response tokens (nats)."""
    return {"entropy": masked_mean(entropy, mask, num_tokens)}
