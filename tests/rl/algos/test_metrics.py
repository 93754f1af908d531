"""Metrics from the loss tensors: hand-computed values and micro-batch additivity."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import (
    approx_kl,
    clip_fractions,
    entropy_mean,
    masked_max,
    masked_mean,
    masked_min,
    ppo_clip_loss,
    ratio_stats,
    tis_stats,
)

LN2 = math.log(2.0)


def test_clip_fractions_from_the_policy_loss_aux():
    # the hand case of test_policy_loss: 8 response tokens, one clipped high (A=2, r=1.5), one clipped low
    # (A=-1, r=0.5), one dual-clipped (A=-1, r=4 > c=3)
    ratios = torch.tensor([[0.5, 1.0, 1.2, 1.5, 1.0], [0.5, 1.0, 1.5, 4.0, 1.0]])
    logp = torch.zeros(2, 5)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    _, aux = ppo_clip_loss(logp, -ratios.log(), torch.tensor([2.0, -1.0]), mask, clip_high=0.28, dual_clip_c=3.0)
    fr = clip_fractions(aux, mask)
    assert fr["clip_frac_low"].item() == pytest.approx(1 / 8)
    assert fr["clip_frac_high"].item() == pytest.approx(1 / 8)
    assert fr["clip_frac"].item() == pytest.approx(2 / 8)
    assert fr["dual_clip_frac"].item() == pytest.approx(1 / 8)
    rs = ratio_stats(aux["ratio"], mask)
    # (0.5 + 1 + 1.2 + 1.5 + 0.5 + 1 + 1.5 + 4) / 8 = 11.2 / 8 = 1.4; min 0.5; max 4 (padding's ratio ignored)
    assert rs["ratio_mean"].item() == pytest.approx(1.4, abs=1e-6)
    assert rs["ratio_min"].item() == pytest.approx(0.5) and rs["ratio_max"].item() == pytest.approx(4.0)


def test_approx_kl():
    logp = torch.tensor([[0.0, 0.0, 3.0]])
    old_logp = torch.tensor([[-LN2, 0.0, -9.0]])  # log r = ln 2, 0, (padding)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    kl = approx_kl(logp, old_logp, mask)
    # k1 = mean(-log r) = (-ln 2 + 0) / 2 = -0.3465736;  k3 = mean(r - 1 - log r) = ((1 - ln 2) + 0) / 2 = 0.1534264
    assert kl["approx_kl_k1"].item() == pytest.approx(-0.3465736, abs=1e-6)
    assert kl["approx_kl_k3"].item() == pytest.approx(0.1534264, abs=1e-6)


def test_tis_stats():
    old_logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    rollout_logp = torch.tensor([[-1.1, -2.0, -0.5, math.nan, 5.0]])  # diffs 0.1, 1.0, -0.5, NaN, (padding)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    st = tis_stats(old_logp, rollout_logp, mask, cap=2.0)
    # weights 1.1051709, 2 (from e), 0.6065307, 1 -> mean 4.7117016 / 4 = 1.1779254
    assert st["tis_weight_mean"].item() == pytest.approx(1.1779254, abs=1e-6)
    assert st["tis_ratio_max"].item() == pytest.approx(math.e, abs=1e-6)
    assert st["tis_truncated_frac"].item() == pytest.approx(1 / 4)
    # |diff| = 0.1, 1.0, 0.5, (NaN -> 0): mean 1.6 / 4 = 0.4, max 1.0
    assert st["rollout_learner_logp_abs_diff_mean"].item() == pytest.approx(0.4, abs=1e-6)
    assert st["rollout_learner_logp_abs_diff_max"].item() == pytest.approx(1.0, abs=1e-6)


def test_masked_reductions_and_micro_batch_additivity():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    # (1 + 2 + 3 + 4 + 5) / 5 = 3
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_max(x, mask).item() == 5.0 and masked_min(x, mask).item() == 1.0
    assert math.isnan(masked_max(x, torch.zeros_like(mask)).item())
    # micro-batches of rows 0 and 1 with the global count 5: shares 3/5 and 12/5 sum to the global mean
    shares = [entropy_mean(x[i:i + 1], mask[i:i + 1], num_tokens=5)["entropy"] for i in range(2)]
    assert sum(s.item() for s in shares) == pytest.approx(3.0)
