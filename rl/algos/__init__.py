"""The RL math of the learner: pure tensor-in/tensor-out functions, registered by name (verl `core_algos` style).

No trainer state, no Ray, no vLLM. Shapes are in every signature. One learner step composes them as:

    adv = compute_advantages("grpo", rewards, group_index, std="sample", eps=1e-6)            # [N]
    pg, aux = compute_policy_loss("ppo_clip", logp, old_logp, adv[rows], mask,                 # [B, T]
                                  clip_low=0.2, clip_high=0.28, is_weights=tis_weights(old_logp, rollout_logp, mask))
    if kl_enabled(kl_kind, kl_coef):
        pg = pg + kl_coef * kl_penalty(logp, ref_logp, kl_kind, mask)
    loss = agg_loss(pg, mask, "token-mean", **global_normalizers(all_micro_batch_masks))       # []
    loss.backward()                                                                          # per micro-batch

Registries (name -> function): ADVANTAGE_ESTIMATORS {grpo, dr_grpo, rloo}, POLICY_LOSSES {ppo_clip, gspo},
LOSS_AGGS {token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm}, KL_ESTIMATORS {k1, k2, k3}.
"""

from .registry import (  # noqa: I001  (registry first: the modules below register into it)
    ADVANTAGE_ESTIMATORS,
    ENTRY_POINT_GROUPS,
    KL_ESTIMATORS,
    LOSS_AGGS,
    POLICY_LOSSES,
    entry_point,
    get_advantage,
    get_kl,
    get_loss_agg,
    get_policy_loss,
    options_for,
    register_advantage,
    register_kl,
    register_loss_agg,
    register_policy_loss,
)
from .advantages import compute_advantages, dr_grpo_advantages, grpo_advantages, group_index_for, rloo_advantages
from .aggregation import (
    agg_loss,
    global_normalizers,
    seq_mean_token_mean,
    seq_mean_token_sum,
    seq_mean_token_sum_norm,
    token_mean,
)
from .entropy import entropy_from_logits
from .importance import tis_weights
from .kl import KL_OFF, kl_enabled, kl_k1, kl_k2, kl_k3, kl_penalty
from .metrics import (
    approx_kl,
    clip_fractions,
    entropy_mean,
    masked_max,
    masked_mean,
    masked_min,
    ratio_stats,
    tis_stats,
)
from .policy_loss import compute_policy_loss, gspo_loss, ppo_clip_loss
from .objective import LossInputs, LossOutput, Normalisers, Objective, compute_loss, finite_mask

__all__ = [
    "ADVANTAGE_ESTIMATORS", "KL_ESTIMATORS", "LOSS_AGGS", "POLICY_LOSSES", "ENTRY_POINT_GROUPS", "entry_point",
    "get_advantage", "get_kl", "get_loss_agg", "get_policy_loss", "options_for",
    "register_advantage", "register_kl", "register_loss_agg", "register_policy_loss",
    "compute_advantages", "grpo_advantages", "dr_grpo_advantages", "rloo_advantages", "group_index_for",
    "compute_policy_loss", "ppo_clip_loss", "gspo_loss",
    "agg_loss", "global_normalizers", "token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "KL_OFF", "kl_enabled", "kl_penalty", "kl_k1", "kl_k2", "kl_k3",
    "entropy_from_logits", "tis_weights",
    "masked_mean", "masked_max", "masked_min", "clip_fractions", "approx_kl", "ratio_stats", "tis_stats",
    "entropy_mean",
    "LossInputs", "LossOutput", "Normalisers", "Objective", "compute_loss", "finite_mask",
]
