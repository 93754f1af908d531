"""Policy losses: hand-computed per-token values, gradients and clip indicators."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import agg_loss, compute_policy_loss, gspo_loss, ppo_clip_loss


def _ppo_case():
    """Row 0: A = +2, ratios 0.5, 1.0, 1.2, 1.5; row 1: A = -1, ratios 0.5, 1.0, 1.5, 4.0; column 4 is padding whose
    old log-prob is NaN (must not leak)."""
    ratios = torch.tensor([[0.5, 1.0, 1.2, 1.5, 1.0], [0.5, 1.0, 1.5, 4.0, 1.0]])
    logp = torch.full((2, 5), -1.0)
    old_logp = logp - ratios.log()  # logp - old_logp = log ratio
    old_logp[:, 4] = math.nan
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    return logp.requires_grad_(True), old_logp, adv, mask


def test_ppo_clip_hand_values_and_gradient():
    logp, old_logp, adv, mask = _ppo_case()
    loss, aux = ppo_clip_loss(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.28)
    # loss = -min(r A, clip(r, 0.8, 1.28) A)
    # row 0, A = 2:  r=0.5: -min(1.0, 1.6) = -1.0 | r=1: -2 | r=1.2: -min(2.4, 2.4) = -2.4
    #                r=1.5: -min(3, 2.56) = -2.56
    # row 1, A = -1: r=0.5: -min(-0.5, -0.8) = 0.8 | r=1: 1 | r=1.5: -min(-1.5, -1.28) = 1.5 | r=4: 4
    expected = torch.tensor([[-1.0, -2.0, -2.4, -2.56, 0.0], [0.8, 1.0, 1.5, 4.0, 0.0]])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    # d loss / d logp = -A r where the unclipped term is active, 0 where the clipped (constant) one is
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    torch.testing.assert_close(grad, torch.tensor([[-1.0, -2.0, -2.4, 0.0, 0.0], [0.0, 1.0, 1.5, 4.0, 0.0]]),
                               rtol=0, atol=1e-6)
    assert aux["clipped_high"].tolist() == [[False, False, False, True, False], [False] * 5]
    assert aux["clipped_low"].tolist() == [[False] * 5, [True, False, False, False, False]]
    assert not aux["dual_clipped"].any()
    torch.testing.assert_close(aux["ratio"][:, :4], torch.tensor([[0.5, 1.0, 1.2, 1.5], [0.5, 1.0, 1.5, 4.0]]))
    assert not aux["ratio"].requires_grad and not aux["log_ratio"].requires_grad


def test_ppo_clip_symmetric_default():
    logp, old_logp, adv, mask = _ppo_case()
    loss, aux = ppo_clip_loss(logp, old_logp, adv, mask)  # clip 0.2 both sides
    # row 0, r=1.2 is now exactly at the bound (1.2): -2.4 either way; r=1.5 -> -min(3, 2.4) = -2.4
    assert loss[0, 3].item() == pytest.approx(-2.4)
    assert aux["clipped_high"][0, 3]


def test_dual_clip_caps_negative_advantage_tokens():
    logp, old_logp, adv, mask = _ppo_case()
    loss, aux = ppo_clip_loss(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip_c=3.0)
    # row 1, r=4: min(4, -c A = 3) = 3 and no gradient; everything else unchanged (r=1.5 < 3; row 0 has A > 0)
    expected = torch.tensor([[-1.0, -2.0, -2.4, -2.56, 0.0], [0.8, 1.0, 1.5, 3.0, 0.0]])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[1, 3] == 0 and grad[1, 2] == pytest.approx(1.5)
    assert aux["dual_clipped"].tolist() == [[False] * 5, [False, False, False, True, False]]
    with pytest.raises(ValueError, match="dual_clip_c"):
        ppo_clip_loss(logp, old_logp, adv, mask, dual_clip_c=1.0)


def test_is_weights_scale_loss_and_gradient():
    logp, old_logp, adv, mask = _ppo_case()
    w = torch.tensor([[0.5] * 5, [2.0] * 5])
    loss, _ = ppo_clip_loss(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.28, is_weights=w)
    expected = torch.tensor([[-0.5, -1.0, -1.2, -1.28, 0.0], [1.6, 2.0, 3.0, 8.0, 0.0]])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_token_level_advantages_equal_broadcast_sequence_advantages():
    logp, old_logp, adv, mask = _ppo_case()
    a, _ = ppo_clip_loss(logp, old_logp, adv, mask)
    b, _ = ppo_clip_loss(logp, old_logp, adv[:, None].expand(2, 5).clone(), mask)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(logp, old_logp, adv[:1], mask)


def test_gspo_hand_values_and_gradient():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    logp = torch.full((2, 3), -2.0, requires_grad=True)
    old_logp = (logp - torch.tensor([[0.1, 0.3, 9.0], [0.5, 0.5, 0.5]])).detach()  # column 2 of row 0 is padding
    adv = torch.tensor([1.0, 1.0])
    loss, aux = gspo_loss(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.28)
    # seq 0: s = exp((0.1 + 0.3) / 2) = exp(0.2) = 1.2214028 (inside [0.8, 1.28]) -> -1.2214028 on each token
    # seq 1: s = exp(0.5) = 1.6487213 > 1.28 with A > 0 -> clipped: -1.28 on each token
    torch.testing.assert_close(loss, torch.tensor([[-1.2214028, -1.2214028, 0.0], [-1.28, -1.28, -1.28]]),
                               rtol=0, atol=1e-6)
    assert aux["clipped_high"].tolist() == [[False, False, False], [True, True, True]]
    # seq-mean-token-mean = (-1.2214028 + -1.28) / 2 = -1.2507014
    total = agg_loss(loss, mask, "seq-mean-token-mean")
    assert total.item() == pytest.approx(-1.2507014, abs=1e-6)
    # gradient: 1/2 (sequences) * d(-s_0)/d logp_t = 1/2 * (-s_0 / |y_0|) = -1.2214028 / 4 = -0.3053507; seq 1 clipped
    (grad,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(grad, torch.tensor([[-0.3053507, -0.3053507, 0.0], [0.0, 0.0, 0.0]]),
                               rtol=0, atol=1e-6)


def test_gspo_negative_advantage_low_clip():
    mask = torch.ones(1, 2, dtype=torch.bool)
    logp = torch.zeros(1, 2, requires_grad=True)
    old_logp = torch.tensor([[0.4, 0.2]])  # mean log ratio -0.3 -> s = exp(-0.3) = 0.7408182 < 1 - 0.2
    loss, aux = gspo_loss(logp, old_logp, torch.tensor([-2.0]), mask, clip_low=0.2, clip_high=0.2)
    # -min(s A, clip(s) A) = -min(-1.4816364, -1.6) = 1.6 on each token
    torch.testing.assert_close(loss, torch.tensor([[1.6, 1.6]]), rtol=0, atol=1e-6)
    assert aux["clipped_low"].all()


def test_gspo_defaults_are_the_papers_ranges():
    logp = torch.zeros(1, 2)
    # s = exp(3.5e-4): inside [1 - 3e-4, 1 + 4e-4] -> not clipped; exp(5e-4) -> clipped high
    _, aux = gspo_loss(logp, logp - 3.5e-4, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    assert not aux["clipped_high"].any()
    _, aux = gspo_loss(logp, logp - 5e-4, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    assert aux["clipped_high"].all()


def test_on_policy_first_step_gradient_is_reinforce():
    """With old_logp = logp.detach() every ratio is 1: the gradient of the summed loss is -A per token."""
    logp = torch.randn(3, 4).requires_grad_(True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.ones(3, 4, dtype=torch.bool)
    for name in ("ppo_clip", "gspo"):
        loss, aux = compute_policy_loss(name, logp, logp.detach(), adv, mask)
        (grad,) = torch.autograd.grad(loss.sum(), logp)
        torch.testing.assert_close(grad, -adv[:, None].expand(3, 4), rtol=0, atol=1e-6)
        assert not (aux["clipped_low"] | aux["clipped_high"]).any()


def test_max_log_ratio_guard():
    logp = torch.zeros(1, 1, requires_grad=True)
    loss, aux = ppo_clip_loss(logp, torch.tensor([[-1000.0]]), torch.tensor([-1.0]), torch.ones(1, 1, dtype=bool))
    assert torch.isfinite(loss).all() and aux["ratio"].item() == pytest.approx(math.exp(20.0), rel=1e-5)
