"""Truncated importance sampling weights (rollout engine vs learner): hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import tis_weights

E01, E1, EM05, E06 = math.exp(0.1), math.e, math.exp(-0.5), math.exp(0.6)


def _case():
    # old_logp - rollout_logp = 0.1, 1.0, -0.5, (rollout NaN), (padding)
    old_logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    rollout_logp = torch.tensor([[-1.1, -2.0, -0.5, math.nan, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    return old_logp, rollout_logp, mask


def test_token_truncate():
    # exp(0.1) = 1.1051709; exp(1) = 2.7182818 -> capped at 2; exp(-0.5) = 0.6065307; NaN -> 1; padding -> 1
    w = tis_weights(*_case(), cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[E01, 2.0, EM05, 1.0, 1.0]]))
    assert not w.requires_grad


def test_token_mask_mode_drops_instead_of_capping():
    w = tis_weights(*_case(), cap=2.0, mode="mask")
    torch.testing.assert_close(w, torch.tensor([[E01, 0.0, EM05, 1.0, 1.0]]))


def test_sequence_level():
    # product of token ratios = exp(0.1 + 1.0 - 0.5 + 0) = exp(0.6) = 1.8221188 on every response token
    w = tis_weights(*_case(), cap=2.0, level="sequence")
    torch.testing.assert_close(w, torch.tensor([[E06, E06, E06, E06, 1.0]]))
    torch.testing.assert_close(tis_weights(*_case(), cap=1.5, level="sequence"), torch.tensor([[1.5] * 4 + [1.0]]))
    torch.testing.assert_close(tis_weights(*_case(), cap=1.5, level="sequence", mode="mask"),
                               torch.tensor([[0.0] * 4 + [1.0]]))


def test_overflowing_sequence_ratio_is_capped_not_nan():
    old = torch.zeros(1, 3)
    w = tis_weights(old, old - 400.0, torch.ones(1, 3, dtype=torch.bool), level="sequence")  # exp(1200) = inf
    torch.testing.assert_close(w, torch.full((1, 3), 2.0))
    w = tis_weights(old, old - 400.0, torch.ones(1, 3, dtype=torch.bool), level="sequence", mode="mask")
    torch.testing.assert_close(w, torch.zeros(1, 3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="cap"):
        tis_weights(*_case(), cap=0.0)
    with pytest.raises(ValueError, match="level"):
        tis_weights(*_case(), level="batch")
