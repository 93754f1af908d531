"""Truncated importance sampling (TIS) between the rollout engine and the learner.

The rollout engine (vLLM: other kernels, other precision) and the learner assign slightly different probabilities
to the same sampled tokens, so the "on-policy" batch is in fact sampled from pi_rollout != pi_learner. TIS
(Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training",
https://fengyao.notion.site/off-policy-rl; verl `tis_imp_ratio_cap`, TRL `vllm_importance_sampling_correction`)
re-weights each token's policy loss by the importance weight pi_learner / pi_rollout, truncated from above by a cap
C so its variance stays bounded:
    w_t = min( exp(old_logp_t - rollout_logp_t), C )      (detached; multiplied into the per-token policy loss)
"""

from __future__ import annotations

from typing import Literal

import torch


@torch.no_grad()
def tis_weights(
    old_logp: torch.Tensor,  # [B, T] learner log-probs of the sampled tokens at the weights that generated them
    rollout_logp: torch.Tensor,  # [B, T] the rollout engine's log-probs of the same tokens; NaN = not reported
    mask: torch.Tensor,  # [B, T]
    *,
    cap: float = 2.0,
    level: Literal["token", "sequence"] = "token",
    mode: Literal["truncate", "mask"] = "truncate",
) -> torch.Tensor:  # [B, T], detached
    """Importance weights pi_learner / pi_rollout for the policy loss's `is_weights`.

    - `old_logp`: the learner's log-probs under the weights the rollout engine was synced to (the "old" policy of
      the PPO ratio; on the first step after a sync, simply the learner's logp.detach()).
    - `cap`: the truncation C (verl's default 2.0); must be > 0.
    - `level`: "token" = per-token ratio (TIS as in the blog and verl); "sequence" = the product of the sequence's
      token ratios, exp(sum_t diff_t), given to every token of the sequence.
    - `mode`: "truncate" = min(w, C) (TIS); "mask" = w where w <= C, else 0 (drop the token/sequence instead).
    A token with a NaN rollout log-prob contributes no correction (its log-difference counts as 0: weight 1 at the
    token level, no factor in the sequence product); positions outside `mask` get weight 1.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if level not in ("token", "sequence") or mode not in ("truncate", "mask"):
        raise ValueError(f"level must be 'token'|'sequence' and mode 'truncate'|'mask'; got {level!r}, {mode!r}")
    if not (old_logp.shape == rollout_logp.shape == mask.shape) or old_logp.dim() != 2:
        raise ValueError(f"old_logp, rollout_logp and mask must all be [B, T]; got {tuple(old_logp.shape)}, "
                         f"{tuple(rollout_logp.shape)}, {tuple(mask.shape)}")
    mask = mask.bool()
    diff = torch.where(mask & ~torch.isnan(rollout_logp), old_logp - rollout_logp, 0.0)  # [B, T]
    if level == "sequence":
        diff = diff.sum(-1, keepdim=True).expand_as(diff)
    w = torch.exp(diff)
    if mode == "truncate":
        w = w.clamp(max=cap)
    else:
        w = torch.where(w <= cap, w, 0.0)
    return torch.where(mask, w, 1.0)
