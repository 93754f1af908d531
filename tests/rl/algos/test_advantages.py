"""Advantage estimators: hand-computed values, the special cases, the layout."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import compute_advantages, dr_grpo_advantages, grpo_advantages, group_index_for, rloo_advantages

NAN = math.nan


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def gi(*xs):
    return torch.tensor(xs)


def close(a, b, atol=1e-6):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=atol)


def test_grpo_sample_vs_population_std():
    r, g = t(1, 0, 0, 1), gi(0, 0, 0, 0)
    # mean 0.5, deviations +-0.5, sum of squares 4 * 0.25 = 1
    # sample std     = sqrt(1 / 3) = 0.5773503  -> A = 0.5 / 0.5773503 = 0.8660254
    # population std = sqrt(1 / 4) = 0.5        -> A = 0.5 / 0.5       = 1
    close(grpo_advantages(r, g, std="sample", eps=0.0), [0.8660254, -0.8660254, -0.8660254, 0.8660254])
    close(grpo_advantages(r, g, std="population", eps=0.0), [1.0, -1.0, -1.0, 1.0])
    # eps is added to the std, outside the sqrt: 0.5 / (0.5 + 0.5) = 0.5
    close(grpo_advantages(r, g, std="population", eps=0.5), [0.5, -0.5, -0.5, 0.5])
    # default: sample std, eps = 1e-6: 0.5 / (0.5773503 + 1e-6) = 0.8660239
    close(grpo_advantages(r, g), [0.8660239, -0.8660239, -0.8660239, 0.8660239])


def test_grpo_two_groups_are_independent():
    r, g = t(1, 0, 0, 1, 10, 30), gi(0, 0, 0, 0, 1, 1)
    # group 1: mean 20, deviations +-10, population std 10 -> A = -1, +1
    close(grpo_advantages(r, g, std="population", eps=0.0), [1, -1, -1, 1, -1, 1])


def test_none_reward_is_excluded_from_the_baseline_and_gets_zero():
    r, g = t(2, NAN, 0, 4), gi(0, 0, 0, 0)
    # scorable: 2, 0, 4 -> mean 2, deviations 0, -2, +2; sample std sqrt(8 / 2) = 2 -> A = 0, -1, +1
    # (had None counted as 0: mean 1.5, and the unscorable response would get a spurious negative advantage)
    close(grpo_advantages(r, g, eps=0.0), [0, 0, -1, 1])
    close(dr_grpo_advantages(r, g), [0, 0, -2, 2])
    # RLOO: baselines over the *other scorable* responses: 2 - (0+4)/2 = 0; 0 - (2+4)/2 = -3; 4 - (2+0)/2 = 3
    close(rloo_advantages(r, g), [0, 0, -3, 3])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_of_one_gets_zero(name):
    # group 0: a single response; group 1: one scorable among three; group 2: none scorable; group 3: normal
    r, g = t(5, 1, NAN, NAN, NAN, NAN, 0, 2), gi(0, 1, 1, 1, 2, 2, 3, 3)
    adv = compute_advantages(name, r, g)
    assert (adv[:6] == 0).all()  # exactly zero, not NaN, not 0/eps
    assert (adv[6:] != 0).all()
    assert not torch.isnan(adv).any()


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("value", [0.1, 1 / 3, 7.3])
def test_all_equal_group_gets_exactly_zero(name, value):
    # values whose float mean may differ from them by one ulp: (r - mean) / (0 + eps) would be ~1e-8 / 1e-6 = 0.01
    r = torch.tensor([value] * 7 + [0.0, 1.0], dtype=torch.float32)
    g = gi(0, 0, 0, 0, 0, 0, 0, 1, 1)
    adv = compute_advantages(name, r, g, **({"eps": 1e-6} if name == "grpo" else {}))
    assert (adv[:7] == 0).all()
    assert adv[7] < 0 < adv[8]


def test_batch_scale_uses_batch_std_and_group_mean():
    r, g = t(0, 2, 1, 1), gi(0, 0, 1, 1)
    # group means 1 and 1; batch mean 1; batch sample std = sqrt((1 + 1 + 0 + 0) / 3) = 0.8164966
    # group 0: (0 - 1) / 0.8164966 = -1.2247449, (2 - 1) / 0.8164966 = 1.2247449; group 1: all equal -> 0
    close(grpo_advantages(r, g, scale="batch", eps=0.0), [-1.2247449, 1.2247449, 0, 0])
    # population: sqrt(2 / 4) = 0.7071068 -> 1 / 0.7071068 = 1.4142135
    close(grpo_advantages(r, g, scale="batch", std="population", eps=0.0), [-1.4142135, 1.4142135, 0, 0])
    # unscorable rewards are left out of the batch std as well: same batch plus a NaN
    close(grpo_advantages(t(0, 2, 1, 1, NAN), gi(0, 0, 1, 1, 1), scale="batch", eps=0.0),
          [-1.2247449, 1.2247449, 0, 0, 0])


def test_dr_grpo_is_grpo_without_std():
    r, g = t(0, 1, 1, 1), gi(0, 0, 0, 0)
    # mean 0.75 -> r - mean
    close(dr_grpo_advantages(r, g), [-0.75, 0.25, 0.25, 0.25])
    close(grpo_advantages(r, g, scale="none"), [-0.75, 0.25, 0.25, 0.25])


def test_rloo_leave_one_out():
    r, g = t(0, 1, 1, 1), gi(0, 0, 0, 0)
    # A_0 = 0 - mean(1, 1, 1) = -1;  A_1 = 1 - mean(0, 1, 1) = 1/3  (= 4/3 * (r - 0.75))
    close(rloo_advantages(r, g), [-1, 1 / 3, 1 / 3, 1 / 3])


def test_group_ids_need_not_be_contiguous_or_sorted():
    r, g = t(1, 0, 3, 2), gi(7, -3, 7, -3)
    # group 7: 1, 3 (mean 2) -> -1, +1; group -3: 0, 2 (mean 1) -> -1, +1
    close(dr_grpo_advantages(r, g), [-1, -1, 1, 1])


def test_group_index_for_the_b_by_g_layout():
    assert group_index_for(2, 3).tolist() == [0, 0, 0, 1, 1, 1]
    rewards_bg = torch.tensor([[1.0, 0.0, 0.0], [2.0, 2.0, 5.0]])
    adv = dr_grpo_advantages(rewards_bg.flatten(), group_index_for(2, 3)).view(2, 3)
    close(adv, [[2 / 3, -1 / 3, -1 / 3], [-1, -1, 2]])


def test_dtype_is_preserved_and_empty_batch():
    r = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert grpo_advantages(r, gi(0, 0)).dtype == torch.float64
    assert grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="std"):
        grpo_advantages(t(0, 1), gi(0, 0), std="unbiased")
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(t(0, 1), gi(0, 0), scale="global")
    with pytest.raises(TypeError):
        grpo_advantages(torch.tensor([0, 1]), gi(0, 0))
    with pytest.raises(TypeError):
        grpo_advantages(t(0, 1), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError):
        grpo_advantages(t(0, 1), gi(0, 0, 0))
