"""Per-token KL estimators between the learner policy and a frozen reference policy, used as a loss term.

Schulman, "Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html). With tokens sampled from the
policy pi and log r = ref_logp - logp (= log pi_ref/pi), KL(pi || pi_ref) = E[-log r] is estimated per token by
    "k1": -log r = logp - ref_logp                (unbiased, high variance, can be negative)
    "k2": (log r)^2 / 2                           (biased, low variance, >= 0)
    "k3": (r - 1) - log r                         (unbiased, low variance, >= 0; GRPO paper eq. 4, TRL's `beta` term)
The learner adds `kl_coef * kl_penalty(...)` to the per-token policy loss *before* aggregation, so the KL term is
averaged with the same aggregation mode as the policy loss (GRPO's and TRL's convention).

Off: `kind="off"` (or kl_coef == 0) is the default of DAPO / Dr. GRPO-style recipes and of this toolkit: no
reference model is loaded and no reference forward is run; `kl_enabled` is the one test of that.
Note (Tang & Munos 2025, "On a Few Pitfalls in KL Divergence Gradient Estimation for RL"): the
gradient of an estimator used as a loss is not in general the gradient of the KL; the estimators are given as
defined, without correction.
"""

from __future__ import annotations

import torch

from .registry import get_kl, register_kl

KL_OFF = "off"


def kl_enabled(kind: str | None, kl_coef: float) -> bool:
    """True iff a KL loss term is in use (and therefore a reference model must be loaded)."""
    return kind not in (None, KL_OFF) and kl_coef != 0.0


@register_kl("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> [B, T]
    """k1 = logp - ref_logp."""
    return logp - ref_logp


@register_kl("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> [B, T]
    """k2 = (logp - ref_logp)^2 / 2."""
    return 0.5 * (logp - ref_logp).square()


@register_kl("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> [B, T]
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1."""
    log_r = ref_logp - logp
    return torch.exp(log_r) - log_r - 1.0


def kl_penalty(
    logp: torch.Tensor,  # [B, T]
    ref_logp: torch.Tensor,  # [B, T]
    kind: str,
    mask: torch.Tensor | None = None,  # [B, T]; the result is 0 where mask is 0
    clamp: float | None = None,  # None = as defined; verl's "low_var_kl" clamps k3 to [-10, 10]
    old_logp: torch.Tensor | None = None,  # [B, T]; given: importance-corrected KL (below)
) -> torch.Tensor:  # [B, T]
    """The registered estimator `kind` ("k1", "k2", "k3"), optionally masked and clamped.

    `old_logp` (None = off): the importance-corrected KL of DeepSeek-V3.2 (DeepSeek-AI 2025, arXiv:2512.02556; TRL's
    `use_bias_correction_kl`): the estimate is multiplied by the token ratio exp(logp - old_logp), *with* gradient
    through the ratio, so that for tokens sampled from pi_old the k3 term's gradient is the unbiased gradient of
    KL(pi || pi_ref). Off by default (the GRPO paper's plain k3).
    """
    if kind in (None, KL_OFF):
        raise ValueError("kl_penalty called with the KL term off; test kl_enabled(kind, kl_coef) first")
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp and ref_logp must have the same shape; got {tuple(logp.shape)}, "
                         f"{tuple(ref_logp.shape)}")
    if mask is not None:
        mask = mask.bool()
        ref_logp = torch.where(mask, ref_logp, logp.detach())  # padding: log r = 0, so no inf/NaN can leak
    kl = get_kl(kind)(logp, ref_logp)
    if clamp is not None:
        kl = kl.clamp(-clamp, clamp)
    if old_logp is not None:
        log_ratio = logp - old_logp if mask is None else torch.where(mask, logp - old_logp, 0.0)
        kl = kl * torch.exp(log_ratio)
    if mask is not None:
        kl = torch.where(mask, kl, 0.0)
    return kl
