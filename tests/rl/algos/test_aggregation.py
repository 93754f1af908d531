"""Loss aggregation: hand-computed values, and micro-batch invariance of the gradient under accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import (
    LOSS_AGGS,
    agg_loss,
    compute_policy_loss,
    global_normalizers,
    kl_penalty,
    tis_weights,
)

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, math.nan, 7.0]])  # NaN / 7.0 sit on padding and must not leak
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


def test_hand_values():
    # response tokens: row 0 = 1, 2, 3 (sum 6, mean 2); row 1 = 4 (sum 4, mean 4); 4 tokens, 2 sequences
    assert agg_loss(LOSS, MASK, "token-mean").item() == pytest.approx(10 / 4)  # 2.5
    assert agg_loss(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)  # 3
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)  # 5
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", norm_length=5).item() == pytest.approx(10 / (2 * 5))  # 1


def test_global_normalisers_replace_the_local_ones():
    # this call is one micro-batch of a global batch with 8 tokens and 4 sequences
    assert agg_loss(LOSS, MASK, "token-mean", num_tokens=8).item() == pytest.approx(10 / 8)
    assert agg_loss(LOSS, MASK, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(6 / 4)
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum", num_seqs=4).item() == pytest.approx(10 / 4)
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", num_seqs=4, norm_length=5).item() == pytest.approx(0.5)
    # normalisers given as tensors (e.g. all-reduced across ranks) work as well
    assert agg_loss(LOSS, MASK, "token-mean", num_tokens=torch.tensor(8)).item() == pytest.approx(10 / 8)


def test_empty_sequence_counts_as_a_sequence_with_zero_loss():
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert agg_loss(LOSS, mask, "seq-mean-token-mean").item() == pytest.approx(2 / 2)
    assert agg_loss(LOSS, torch.zeros_like(mask), "token-mean").item() == 0.0  # no division by zero


def test_dr_grpo_requires_its_constant_and_global_normalizers():
    with pytest.raises(ValueError, match="norm_length"):
        agg_loss(LOSS, MASK, "seq-mean-token-sum-norm")
    masks = [MASK, torch.ones(1, 5, dtype=torch.bool)]
    assert global_normalizers(masks) == {"num_tokens": 4 + 5, "num_seqs": 2 + 1}
    with pytest.raises(KeyError, match="token-mean"):
        agg_loss(LOSS, MASK, "token_mean")


# ---------------------------------------------------------------- micro-batch invariance

B, TMAX, D, V = 8, 7, 6, 11
LENGTHS = [7, 2, 5, 0, 3, 6, 1, 4]
MICRO = [[0], [1, 2, 3], [4, 5], [6, 7]]  # unequal sizes, each padded only to its own longest row
NORM_LENGTH = 16


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, TMAX, D, generator=g)
    y = torch.randint(V, (B, TMAX), generator=g)
    w0 = 0.5 * torch.randn(D, V, generator=g)
    mask = torch.arange(TMAX) < torch.tensor(LENGTHS)[:, None]
    logp0 = _logp(w0, x, y)
    return dict(x=x, y=y, w0=w0, mask=mask, adv=torch.randn(B, generator=g),
                old_logp=logp0 + 0.3 * torch.randn(B, TMAX, generator=g),
                ref_logp=logp0 + 0.2 * torch.randn(B, TMAX, generator=g),
                rollout_logp=logp0 + 0.3 * torch.randn(B, TMAX, generator=g))


def _logp(w, x, y):  # a tiny "policy": per-token logits = x @ w
    return torch.log_softmax(x @ w, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _loss(w, b, rows, policy_loss, agg, extras, **normalisers):
    t = max(max(LENGTHS[r] for r in rows), 1)  # pad this micro-batch to its own longest row
    s = {k: v[rows][:, :t] if v.dim() == 2 else v[rows] for k, v in b.items() if k not in ("w0",)}
    s["x"] = b["x"][rows][:, :t]
    logp = _logp(w, s["x"], s["y"])
    is_weights = tis_weights(s["old_logp"], s["rollout_logp"], s["mask"], cap=1.5) if extras else None
    clip = {"clip_low": 0.2, "clip_high": 0.28} if policy_loss == "ppo_clip" else {"clip_low": 0.05, "clip_high": 0.05}
    loss_mat, _ = compute_policy_loss(policy_loss, logp, s["old_logp"], s["adv"], s["mask"], is_weights=is_weights,
                                      **clip)
    if extras:
        loss_mat = loss_mat + 0.1 * kl_penalty(logp, s["ref_logp"], "k3", s["mask"])
    return agg_loss(loss_mat, s["mask"], agg, norm_length=NORM_LENGTH, **normalisers)


def _full_and_accumulated(b, policy_loss, agg, extras):
    w = b["w0"].clone().requires_grad_(True)
    full = _loss(w, b, list(range(B)), policy_loss, agg, extras)
    full.backward()
    full_grad = w.grad.clone()

    w.grad = None
    normalisers = global_normalizers([b["mask"][rows][:, :max(max(LENGTHS[r] for r in rows), 1)] for rows in MICRO])
    total = 0.0
    for rows in MICRO:
        loss = _loss(w, b, rows, policy_loss, agg, extras, **normalisers)
        loss.backward()  # accumulate: no division by the number of micro-batches
        total += loss.item()
    return full.item(), full_grad, total, w.grad.clone()


@pytest.mark.parametrize("extras", [False, True], ids=["plain", "kl+tis"])
@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo"])
@pytest.mark.parametrize("agg", sorted(LOSS_AGGS))
def test_micro_batch_accumulation_gives_the_full_batch_gradient(batch, agg, policy_loss, extras):
    full, full_grad, total, acc_grad = _full_and_accumulated(batch, policy_loss, agg, extras)
    assert total == pytest.approx(full, abs=1e-6)
    assert full_grad.abs().max() > 1e-3  # a real gradient
    torch.testing.assert_close(acc_grad, full_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_local_normalisers_divided_by_micro_batch_count_are_not_invariant(batch, agg):
    """The negative control: TRL-style local mean / number of micro-batches differs on this uneven split."""
    w = batch["w0"].clone().requires_grad_(True)
    _loss(w, batch, list(range(B)), "ppo_clip", agg, False).backward()
    full_grad, w.grad = w.grad.clone(), None
    for rows in MICRO:
        (_loss(w, batch, rows, "ppo_clip", agg, False) / len(MICRO)).backward()
    assert not torch.allclose(w.grad, full_grad, rtol=1e-3, atol=1e-4)
