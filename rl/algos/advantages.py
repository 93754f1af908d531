"""Outcome-reward advantage estimators: one scalar advantage per sampled response.

Layout (all estimators): flat.
    rewards      # [N] float, N = total responses in the batch; NaN = "cannot score" (a verifier returned None)
    group_index  # [N] int, the prompt group each response belongs to. Any integer ids: they need not be
                 #   contiguous, sorted or 0-based. The usual [B, G] layout flattened row-major is
                 #   `group_index = arange(B).repeat_interleave(G)` (`group_index_for(B, G)`).
    returns      # [N] advantages, the dtype of `rewards`.

Conventions shared by every estimator (each is explicit, none is left to a library default):
- Unscorable responses (NaN reward) are excluded from their group's statistics (mean, std, leave-one-out baseline)
  and get advantage exactly 0.
- A group with fewer than two scorable responses has no baseline: advantage exactly 0 for all its members (the
  estimate would be 0/0 or, for a sample std, undefined).
- A group whose scorable rewards are all equal carries no signal: advantage exactly 0, decided by comparing the
  group's max and min reward, *not* by dividing a ~1e-8 difference by a ~0 std (which gives an arbitrary number).
- Statistics are computed in float64 and cast back to the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .registry import get_advantage, register_advantage

StdKind = Literal["sample", "population"]
ScaleKind = Literal["group", "batch", "none"]


def group_index_for(num_groups: int, group_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[num_groups * group_size]` group ids for the [B, G] layout flattened row-major: 0,0,..,0,1,1,..,1,..."""
    return torch.arange(num_groups, device=device).repeat_interleave(group_size)


@dataclass
class _GroupStats:
    inverse: torch.Tensor  # [N] dense group id 0..K-1 of each response
    valid: torch.Tensor  # [N] bool, reward is not NaN
    r: torch.Tensor  # [N] float64 rewards, 0 where invalid
    count: torch.Tensor  # [K] float64 number of scorable responses per group
    total: torch.Tensor  # [K] float64 sum of scorable rewards per group
    mean: torch.Tensor  # [K] float64 mean of scorable rewards per group (0 for an empty group)
    no_signal: torch.Tensor  # [N] bool: unscorable, or group with < 2 scorable, or group all-equal


def _group_stats(rewards: torch.Tensor, group_index: torch.Tensor) -> _GroupStats:
    if rewards.dim() != 1 or group_index.shape != rewards.shape:
        raise ValueError(f"rewards and group_index must both be [N]; got {tuple(rewards.shape)} and "
                         f"{tuple(group_index.shape)}")
    if not rewards.is_floating_point():
        raise TypeError(f"rewards must be a float tensor (NaN marks an unscorable response); got {rewards.dtype}")
    if group_index.is_floating_point() or group_index.dtype == torch.bool:
        raise TypeError(f"group_index must be an integer tensor; got {group_index.dtype}")
    _, inverse = torch.unique(group_index, return_inverse=True)
    k = int(inverse.max()) + 1 if inverse.numel() else 0
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards, 0.0).double()
    count = torch.zeros(k, dtype=torch.float64, device=r.device).index_add_(0, inverse, valid.double())
    total = torch.zeros(k, dtype=torch.float64, device=r.device).index_add_(0, inverse, r)
    mean = total / count.clamp(min=1.0)
    gmax = torch.full((k,), -torch.inf, dtype=torch.float64, device=r.device)
    gmin = torch.full((k,), torch.inf, dtype=torch.float64, device=r.device)
    gmax = gmax.scatter_reduce(0, inverse[valid], r[valid], reduce="amax")
    gmin = gmin.scatter_reduce(0, inverse[valid], r[valid], reduce="amin")
    group_no_signal = (count < 2) | (gmax == gmin)
    no_signal = ~valid | group_no_signal[inverse]
    return _GroupStats(inverse, valid, r, count, total, mean, no_signal)


@register_advantage("grpo")
def grpo_advantages(
    rewards: torch.Tensor,  # [N] float, NaN = unscorable
    group_index: torch.Tensor,  # [N] int
    *,
    std: StdKind = "sample",
    scale: ScaleKind = "group",
    eps: float = 1e-6,
) -> torch.Tensor:  # [N]
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, sec. 4.1.2): A_i = (r_i - mean_g) / (std + eps).

    Knobs (every one a named convention):
    - `std`: "sample" = Bessel-corrected, divides by n-1 (torch.std's default; what TRL's `nanstd` and verl use);
      "population" = divides by n. n counts the scorable responses only.
    - `scale`: which std divides the group-centred reward.
        "group": the std of the response's own group (the paper).
        "batch": the std of all scorable rewards of the batch around the batch mean, while the baseline stays the
                 group mean (Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning",
                 arXiv:2508.08221; TRL `scale_rewards="batch"`).
        "none": no division (Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783:
                the std term biases towards questions that are too easy or too hard). Same as `dr_grpo_advantages`.
    - `eps`: added to the std *outside* the square root: (r - mean) / (std + eps). verl's default is 1e-6,
      TRL's is 1e-4 (pass eps=1e-4 to reproduce TRL). Ignored when scale="none".
    Zero-advantage cases (unscorable, group < 2 scorable, group all-equal) are in the module docstring.
    """
    if std not in ("sample", "population"):
        raise ValueError(f"std must be 'sample' or 'population', got {std!r}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    s = _group_stats(rewards, group_index)
    ddof = 1.0 if std == "sample" else 0.0
    centered = torch.where(s.valid, s.r - s.mean[s.inverse], 0.0)  # [N]
    if scale == "group":
        sq = torch.zeros_like(s.count).index_add_(0, s.inverse, centered.square())  # [K]
        group_std = (sq / (s.count - ddof).clamp(min=1.0)).sqrt()
        denom = group_std[s.inverse] + eps
    elif scale == "batch":
        n = s.valid.sum().double()
        batch_mean = s.r.sum() / n.clamp(min=1.0)
        sq = torch.where(s.valid, s.r - batch_mean, 0.0).square().sum()
        denom = (sq / (n - ddof).clamp(min=1.0)).sqrt() + eps
    else:
        denom = torch.ones((), dtype=torch.float64, device=s.r.device)
    adv = torch.where(s.no_signal, 0.0, centered / denom)
    return adv.to(rewards.dtype)


@register_advantage("dr_grpo")
def dr_grpo_advantages(
    rewards: torch.Tensor,  # [N] float, NaN = unscorable
    group_index: torch.Tensor,  # [N] int
) -> torch.Tensor:  # [N]
    """Dr. GRPO (Liu et al. 2025, arXiv:2503.20783): A_i = r_i - mean_g, no std division (no eps either).

    Pair it with the constant-normaliser aggregation "seq-mean-token-sum-norm" to get the full Dr. GRPO objective.
    """
    return grpo_advantages(rewards, group_index, scale="none")


@register_advantage("rloo")
def rloo_advantages(
    rewards: torch.Tensor,  # [N] float, NaN = unscorable
    group_index: torch.Tensor,  # [N] int
) -> torch.Tensor:  # [N]
    """REINFORCE leave-one-out (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!";
    Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740): A_i = r_i - mean_{j != i, j scorable} r_j.

    Equivalently n/(n-1) * (r_i - mean_g) with n the number of scorable responses in the group. No std scaling.
    """
    s = _group_stats(rewards, group_index)
    n = s.count[s.inverse]
    baseline = (s.total[s.inverse] - s.r) / (n - 1.0).clamp(min=1.0)
    adv = torch.where(s.no_signal, 0.0, s.r - baseline)
    return adv.to(rewards.dtype)


def compute_advantages(name: str, rewards: torch.Tensor, group_index: torch.Tensor, **kwargs) -> torch.Tensor:
    """Dispatch by registered name: `compute_advantages("grpo", rewards, group_index, std="sample", eps=1e-6)`."""
    return get_advantage(name)(rewards, group_index, **kwargs)
