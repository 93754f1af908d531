"""KL estimators (k1, k2, k3, importance-corrected) and the entropy metric: hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import KL_OFF, entropy_from_logits, kl_enabled, kl_penalty

LN2 = math.log(2.0)


def _kl_case():
    # token 0: pi = 0.5, ref = 0.25; token 1: pi = 0.25, ref = 0.5; token 2: padding with ref = -inf
    logp = torch.tensor([[math.log(0.5), math.log(0.25), -1.0]], requires_grad=True)
    ref_logp = torch.tensor([[math.log(0.25), math.log(0.5), -math.inf]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    return logp, ref_logp, mask


def test_k1_k2_k3_hand_values():
    logp, ref_logp, mask = _kl_case()
    # k1 = logp - ref: ln 0.5 - ln 0.25 = ln 2; ln 0.25 - ln 0.5 = -ln 2
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "k1", mask), torch.tensor([[LN2, -LN2, 0.0]]))
    # k2 = (logp - ref)^2 / 2 = (ln 2)^2 / 2 = 0.2402265 for both
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "k2", mask), torch.tensor([[0.2402265, 0.2402265, 0.0]]))
    # k3 = r - 1 - log r with log r = ref - logp: token 0: r = 0.5 -> 0.5 - 1 + ln 2 = 0.1931472
    #                                            token 1: r = 2   -> 2 - 1 - ln 2   = 0.3068528
    k3 = kl_penalty(logp, ref_logp, "k3", mask)
    torch.testing.assert_close(k3, torch.tensor([[0.1931472, 0.3068528, 0.0]]))
    # d k3 / d logp = 1 - r: 0.5 and -1; padding: exactly 0 (no NaN from the -inf reference)
    (grad,) = torch.autograd.grad(k3.sum(), logp)
    torch.testing.assert_close(grad, torch.tensor([[0.5, -1.0, 0.0]]))


def test_clamp_and_unmasked():
    logp, ref_logp, _ = _kl_case()
    k1 = kl_penalty(logp[:, :2], ref_logp[:, :2], "k1", clamp=0.5)
    torch.testing.assert_close(k1, torch.tensor([[0.5, -0.5]]))


def test_importance_corrected_kl():
    logp, ref_logp, mask = _kl_case()
    old_logp = (logp - LN2).detach()  # ratio pi / pi_old = 2 on every token
    kl = kl_penalty(logp, ref_logp, "k3", mask, old_logp=old_logp)
    # 2 * k3: 0.3862944, 0.6137056
    torch.testing.assert_close(kl, torch.tensor([[0.3862944, 0.6137056, 0.0]]))
    # d(r k3)/d logp = r k3 + r (1 - exp(ref - logp)): token 0: 2 * 0.1931472 + 2 * 0.5 = 1.3862944
    (grad,) = torch.autograd.grad(kl.sum(), logp)
    assert grad[0, 0].item() == pytest.approx(1.3862944, abs=1e-6)
    assert grad[0, 2].item() == 0.0


def test_kl_off():
    assert kl_enabled("k3", 0.04)
    assert not kl_enabled(KL_OFF, 0.04) and not kl_enabled(None, 0.04) and not kl_enabled("k3", 0.0)
    logp, ref_logp, mask = _kl_case()
    with pytest.raises(ValueError, match="off"):
        kl_penalty(logp, ref_logp, KL_OFF, mask)
    with pytest.raises(KeyError, match="k3"):
        kl_penalty(logp, ref_logp, "k4", mask)


def test_entropy_hand_values():
    logits = torch.tensor([
        [0.0, 0.0, -math.inf, -math.inf],  # uniform over 2 -> ln 2 (and 0 log 0 = 0 for the -inf logits)
        [0.0, 0.0, 0.0, 0.0],  # uniform over 4 -> ln 4 = 1.3862944
        [math.log(0.5), math.log(0.25), math.log(0.25), -math.inf],  # 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2
        [100.0, 0.0, 0.0, 0.0],  # (almost) deterministic -> ~0, no NaN
    ])
    h = entropy_from_logits(logits)
    torch.testing.assert_close(h, torch.tensor([LN2, 2 * LN2, 1.5 * LN2, 0.0]), rtol=0, atol=1e-6)
    assert not h.requires_grad


def test_entropy_temperature_chunks_and_shape():
    # logits (ln 4, 0) at temperature 2 -> (ln 2, 0) -> p = (2/3, 1/3): H = -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.6365142
    h = entropy_from_logits(torch.tensor([[math.log(4.0), 0.0]]), temperature=2.0)
    assert h.item() == pytest.approx(0.6365142, abs=1e-6)
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    h = entropy_from_logits(logits, chunk_size=3)
    assert h.shape == (2, 5)
    torch.testing.assert_close(h, entropy_from_logits(logits, chunk_size=None))
    assert entropy_from_logits(logits.detach().to(torch.bfloat16)).dtype == torch.float32
