"""Clipped-surrogate policy losses, per token. Aggregation to a scalar is a separate step (`aggregation.py`).

Every policy loss has the same signature:
    logp         # [B, T] learner log-probs of the sampled tokens under the current weights (requires grad)
    old_logp     # [B, T] log-probs of the same tokens under the weights that the ratio is taken against (the
                 #   "behaviour" policy of PPO; = logp.detach() on the first, fully on-policy step)
    advantages   # [B] one per sequence, or [B, T] one per token
    mask         # [B, T] bool/0-1: 1 on response tokens that count, 0 on prompt/padding
    **knobs      # keyword-only, loss-specific
    is_weights   # optional [B, T] detached per-token importance weights (e.g. `importance.tis_weights`), multiplied
                 #   into the per-token loss after clipping (verl `rollout_is_weights`, TRL
                 #   `vllm_importance_sampling_correction`)
returns (loss [B, T], aux): `loss` is 0 where mask is 0; `aux` holds detached per-token tensors for metrics:
    "log_ratio" [B, T], "ratio" [B, T], "clipped_low" / "clipped_high" / "dual_clipped" [B, T] bool (False off-mask).

Numerical guard (named, verl's): the log-ratio is clamped to [-max_log_ratio, max_log_ratio] (default 20) before exp.
It only changes tokens whose ratio is already astronomically far outside the clip range.
"""

from __future__ import annotations

import torch

from .registry import get_policy_loss, register_policy_loss


def _check(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> None:
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(f"logp, old_logp and mask must all be [B, T]; got {tuple(logp.shape)}, "
                         f"{tuple(old_logp.shape)}, {tuple(mask.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must be [B] or [B, T] = {tuple(logp.shape)}; got {tuple(advantages.shape)}")


def _token_advantages(advantages: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:  # [B, T]
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    return adv.to(logp.dtype).expand_as(logp)


def _clipped_surrogate(
    ratio: torch.Tensor,  # [B, T] (with grad)
    adv: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T] bool
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None,
    is_weights: torch.Tensor | None,  # [B, T]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0; got {clip_low}, {clip_high}")
    surr = -adv * ratio  # [B, T]
    surr_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T]
    loss = torch.maximum(surr, surr_clipped)  # = -min(r A, clip(r) A)
    r = ratio.detach()
    aux = {
        "clipped_low": (r < 1.0 - clip_low) & (adv < 0) & mask,
        "clipped_high": (r > 1.0 + clip_high) & (adv > 0) & mask,
    }
    if dual_clip_c is not None:
        if dual_clip_c <= 1.0:
            raise ValueError(f"dual_clip_c must be > 1 (Ye et al. 2020); got {dual_clip_c}")
        # For A < 0 the loss is capped at -c * A = c * |A|: a token whose ratio exploded cannot dominate the update.
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip_c), loss)
        aux["dual_clipped"] = (r > dual_clip_c) & (adv < 0) & mask
    else:
        aux["dual_clipped"] = torch.zeros_like(mask)
    if is_weights is not None:
        if is_weights.shape != loss.shape:
            raise ValueError(f"is_weights must be [B, T] = {tuple(loss.shape)}; got {tuple(is_weights.shape)}")
        loss = loss * is_weights.detach().to(loss.dtype)
    loss = torch.where(mask, loss, 0.0)
    aux["ratio"] = torch.where(mask, r, 1.0)
    return loss, aux


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,  # [B, T]
    max_log_ratio: float = 20.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # loss [B, T], aux {name: [B, T]}
    """PPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) with a per-token ratio r = exp(logp - old_logp):

        loss_t = -min(r_t A_t, clip(r_t, 1 - clip_low, 1 + clip_high) A_t)

    Knobs:
    - `clip_low`, `clip_high`: separate lower/upper clip ranges. Equal (0.2, 0.2) is plain PPO/GRPO; DAPO's
      "clip-higher" (Yu et al. 2025, arXiv:2503.14476) raises the upper one (clip_low=0.2, clip_high=0.28) so that
      low-probability tokens can still be pushed up, against entropy collapse.
    - `dual_clip_c`: dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep Reinforcement
      Learning", arXiv:1912.09729), c > 1, for negative advantages only: loss_t = min(loss_t, -c A_t), i.e. a token
      with A < 0 and a huge ratio contributes at most c |A| and no gradient. None = off (verl's default c is 3).
      TRL's `delta` (INTELLECT-2's two-sided clipping, clamping r at delta before the min) gives the same loss and
      gradient whenever delta > 1 + clip_high.
    - `is_weights`: see module docstring (truncated importance sampling).
    - `max_log_ratio`: numerical guard, see module docstring.
    """
    _check(logp, old_logp, advantages, mask)
    mask = mask.bool()
    log_ratio = torch.where(mask, logp - old_logp, 0.0).clamp(-max_log_ratio, max_log_ratio)  # [B, T]
    ratio = torch.exp(log_ratio)
    adv = _token_advantages(advantages, logp)
    loss, aux = _clipped_surrogate(ratio, adv, mask, clip_low, clip_high, dual_clip_c, is_weights)
    aux["log_ratio"] = log_ratio.detach()
    return loss, aux


@register_policy_loss("gspo")
def gspo_loss(
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,  # [B, T]
    max_log_ratio: float = 20.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # loss [B, T], aux {name: [B, T]}
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071): the importance ratio is
    taken per *sequence*, as the geometric mean of the token ratios (length-normalised),

        s_i = exp( (1/|y_i|) sum_t (logp_it - old_logp_it) ),   loss_it = -min(s_i A_it, clip(s_i) A_it),

    on every response token of sequence i: the sequence loss is broadcast over the sequence's tokens, with its
    gradient flowing through s_i (d s_i / d logp_it = s_i / |y_i|). Use it with "seq-mean-token-mean" for the paper's
    objective (the mean over sequences of the sequence loss). This is the literal sequence-level form (TRL's
    `importance_sampling_level="sequence"`). verl implements the paper's "GSPO-token" form,
    s_it = sg[s_i] * exp(logp_it - sg[logp_it]): same value everywhere and the same gradient for a per-sequence
    advantage and per-sequence `is_weights`, but with per-token `is_weights` (or [B, T] advantages) GSPO-token weights
    token t's gradient by its own w_t, this form by the sequence's mean w.

    Knobs: `clip_low`, `clip_high` default to the paper's 3e-4 and 4e-4 (a sequence ratio moves far less than a
    token ratio, hence ranges ~1000x smaller than PPO's); `dual_clip_c`, `is_weights`, `max_log_ratio` as in
    `ppo_clip_loss` (the guard is applied to the sequence log-ratio). The clip indicators in `aux` are per sequence,
    broadcast over its response tokens.
    """
    _check(logp, old_logp, advantages, mask)
    mask = mask.bool()
    token_log_ratio = torch.where(mask, logp - old_logp, 0.0)  # [B, T]
    lengths = mask.sum(-1).clamp(min=1).to(logp.dtype)  # [B]
    seq_log_ratio = (token_log_ratio.sum(-1) / lengths).clamp(-max_log_ratio, max_log_ratio)  # [B]
    log_ratio = seq_log_ratio.unsqueeze(1).expand_as(logp)  # [B, T], s_i on every token
    ratio = torch.exp(log_ratio)
    adv = _token_advantages(advantages, logp)
    loss, aux = _clipped_surrogate(ratio, adv, mask, clip_low, clip_high, dual_clip_c, is_weights)
    aux["log_ratio"] = torch.where(mask, log_ratio.detach(), 0.0)
    return loss, aux


def compute_policy_loss(
    name: str,
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    **kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dispatch by registered name: `compute_policy_loss("ppo_clip", logp, old_logp, adv, mask, clip_high=0.28)`."""
    return get_policy_loss(name)(logp, old_logp, advantages, mask, **kwargs)
