"""rl.algos.compute_loss: the learner's objective over one micro-batch, against the pieces composed by hand, with
non-finite tokens masked and counted, the k3 clamp, and the importance-weighted KL."""

import math

import pytest
import torch

from rl.algos import (LossInputs, Normalisers, Objective, agg_loss, compute_loss, get_policy_loss, kl_penalty,
                      tis_weights)
from rl.config import AlgoConfig


def batch(seed=0, b=3, t=6):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(b, t, generator=g) * 3).requires_grad_()
    old = logp.detach() + 0.1 * torch.randn(b, t, generator=g)
    ref = logp.detach() + 0.3 * torch.randn(b, t, generator=g)
    rollout = logp.detach() + 0.2 * torch.randn(b, t, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 4:] = False
    adv = torch.tensor([1.0, -0.5, 0.25])
    return logp, old, ref, rollout, mask, adv


def test_the_objective_is_the_policy_loss_plus_kl_composed_by_hand():
    logp, old, ref, rollout, mask, adv = batch()
    objective = AlgoConfig(kl="k3", kl_coef=0.1, mini_batches=2, clip_high=0.28).objective()
    norms = Normalisers(num_tokens=40.0, num_seqs=5.0)
    out = compute_loss(LossInputs(logp, mask, adv, old, ref, rollout), norms, objective)

    w = tis_weights(old, rollout, mask, cap=2.0)
    pg, _ = get_policy_loss("ppo_clip")(logp, old, adv, mask, is_weights=w, clip_low=0.2, clip_high=0.28)
    expected = agg_loss(pg, mask, "token-mean", num_tokens=40.0) + 0.1 * agg_loss(
        kl_penalty(logp, ref, "k3", mask, clamp=10.0), mask, "token-mean", num_tokens=40.0)
    torch.testing.assert_close(out.loss, expected)
    assert out.metrics["nonfinite_tokens"] == 0
    assert {"pg_loss", "kl", "loss", "clip_frac", "ratio_max", "tis_weight_mean"} <= out.metrics.keys()


def test_non_finite_tokens_are_masked_out_and_counted_and_the_gradient_stays_finite():
    logp, old, ref, rollout, mask, adv = batch()
    raw = logp.detach().clone()
    raw[1, 2] = -math.inf  # a sampled token outside the learner's nucleus
    raw[2, 0] = float("nan")
    leaf = raw.clone().requires_grad_()
    ref = ref.clone()
    ref[0, 1] = -math.inf  # the reference's nucleus
    old = old.clone()
    old[2, 5] = -math.inf
    objective = Objective(kl="k3", kl_coef=0.5, options={})
    out = compute_loss(LossInputs(leaf, mask, adv, old, ref, rollout), Normalisers(17.0, 3.0), objective)
    out.loss.backward()
    assert out.metrics["nonfinite_tokens"] == 4
    assert torch.isfinite(out.loss) and torch.isfinite(leaf.grad).all()
    for b, t in ((1, 2), (2, 0), (0, 1), (2, 5)):
        assert leaf.grad[b, t] == 0  # no gradient through a masked token
    # The same as masking those tokens by hand (the normalisers stay the global batch's).
    keep = mask.clone()
    for b, t in ((1, 2), (2, 0), (0, 1), (2, 5)):
        keep[b, t] = False
    clean = torch.where(keep, raw, -1.0).requires_grad_()
    fixed_old, fixed_ref = torch.where(keep, old, -1.0), torch.where(keep, ref, -1.0)
    expected = compute_loss(LossInputs(clean, keep, adv, fixed_old, fixed_ref, rollout), Normalisers(17.0, 3.0),
                            objective)
    torch.testing.assert_close(out.loss, expected.loss)


def test_k3_is_clamped_by_kl_clamp():
    logp = torch.tensor([[-30.0, -1.0]], requires_grad=True)  # the policy all but rules out a token the ref likes
    ref = torch.tensor([[-0.1, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    norms = Normalisers(2.0, 1.0)

    def kl(clamp):
        return compute_loss(LossInputs(logp, mask, torch.zeros(1), ref_logp=ref),
                            norms, Objective(kl="k3", kl_coef=1.0, kl_clamp=clamp)).metrics["kl"]

    assert kl(None) > 1e12  # exp(29.9): unbounded
    assert kl(10.0) == pytest.approx(10.0 / 2)  # clamped to 10 on the first token, 0 on the second


def test_importance_weighted_kl_uses_the_engines_log_probs_and_its_ratio_carries_the_gradient():
    logp, old, ref, rollout, mask, adv = batch(1)
    rollout = rollout.clone()
    rollout[1, 1] = float("nan")  # not reported: the ratio's denominator stands in
    objective = Objective(kl="k2", kl_coef=1.0, kl_clamp=None, kl_importance=True, tis_cap=None)
    out = compute_loss(LossInputs(logp, mask, adv, old, ref, rollout), Normalisers(16.0, 3.0), objective)
    behaviour = torch.where(torch.isnan(rollout), old, rollout)
    expected = agg_loss(kl_penalty(logp, ref, "k2", mask, old_logp=behaviour), mask, "token-mean", num_tokens=16.0)
    torch.testing.assert_close(out.metrics["kl"], expected.detach())
    plain = compute_loss(LossInputs(logp, mask, adv, old, ref, rollout), Normalisers(16.0, 3.0),
                         Objective(kl="k2", kl_coef=1.0, kl_clamp=None, tis_cap=None))
    assert not torch.allclose(plain.metrics["kl"], out.metrics["kl"])


def test_the_kl_term_without_reference_log_probs_is_an_error():
    logp, _, _, _, mask, adv = batch()
    with pytest.raises(ValueError, match="no reference log-probs"):
        compute_loss(LossInputs(logp, mask, adv), Normalisers(1.0, 1.0), Objective(kl="k3", kl_coef=0.1))


def test_tis_level_and_mode_reach_the_weights():
    logp, old, _, rollout, mask, adv = batch(2)
    rollout = old - 1.0  # every raw weight is e > cap 2
    for mode, expected in (("truncate", 2.0), ("mask", 0.0)):
        out = compute_loss(LossInputs(logp, mask, adv, old, rollout_logp=rollout), Normalisers(16.0, 3.0),
                           AlgoConfig(tis_mode=mode, tis_level="sequence").objective())
        assert out.metrics["tis_weight_mean"] == pytest.approx(expected)


def test_kl_importance_follows_the_loop_unless_set():
    assert AlgoConfig().objective(one_step_off=True).kl_importance
    assert not AlgoConfig().objective().kl_importance
    assert not AlgoConfig(kl_importance=False).objective(one_step_off=True).kl_importance


def test_the_auto_mode_choice_token_is_weighed_per_sequence_when_decoupled():
    """Thinkless's decoupled GRPO: with algo.choice_weight the choice tokens (an auto completion's first) leave the
    token-mean of the response and come back as weight x their sum / the batch's sequences; without it, nothing
    changes."""
    logp, old, ref, rollout, mask, adv = batch()
    choice = torch.zeros_like(mask)
    choice[[0, 2], 0] = True  # rows 0 and 2 are auto-mode completions
    norms = Normalisers(num_tokens=40.0, num_seqs=5.0)
    plain = AlgoConfig(mini_batches=2).objective()
    decoupled = AlgoConfig(mini_batches=2, choice_weight=2.0).objective()
    base = compute_loss(LossInputs(logp, mask, adv, old, rollout_logp=rollout), norms, plain)
    same = compute_loss(LossInputs(logp, mask, adv, old, rollout_logp=rollout, choice_mask=choice), norms, plain)
    torch.testing.assert_close(same.loss, base.loss)  # no weight: the choice token is a response token
    out = compute_loss(LossInputs(logp, mask, adv, old, rollout_logp=rollout, choice_mask=choice), norms, decoupled)
    w = tis_weights(old, rollout, mask, cap=2.0)
    pg, _ = get_policy_loss("ppo_clip")(logp, old, adv, mask, is_weights=w, clip_low=0.2, clip_high=0.28)
    expected = agg_loss(pg, mask & ~choice, "token-mean", num_tokens=40.0) + 2.0 * (pg * choice).sum() / 5.0
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["choice_loss"], ((pg * choice).sum() / 5.0).detach())
    (grad,) = torch.autograd.grad(out.loss, logp)
    (grad_plain,) = torch.autograd.grad(base.loss, logp)
    assert abs(grad[0, 0]) > 5 * abs(grad_plain[0, 0])  # the choice weighs as a sequence, not as 1/40 of the tokens
    torch.testing.assert_close(grad[1], grad_plain[1])  # a short/long row is untouched
