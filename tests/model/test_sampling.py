"""model.sampling builds the distribution vLLM samples from: temperature, top-k, top-p, per token."""

import pytest
import torch

from model.sampling import processed_logits


def vllm_reference(logits, temperature, k, p):
    """vLLM's own filter; its sampling metadata passes the vocabulary size for "no top-k" (our 0)."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p

    k = None if k is None else torch.where(k > 0, k, logits.shape[-1])
    return apply_top_k_top_p(logits.clone() / temperature.unsqueeze(-1), k, p)


@pytest.mark.parametrize("k, p", [(5, None), (None, 0.9), (7, 0.5), (0, 1.0)])
def test_matches_vllms_filter(k, p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    temperature = torch.tensor([0.5, 1.0, 0.7, 2.0, 1.0, 0.3])
    kt = None if k is None else torch.tensor([k, 0, k, 3, k, 1])
    pt = None if p is None else torch.tensor([p, 1.0, p, 0.95, p, p])
    ours = processed_logits(logits, temperature, kt, pt)
    theirs = vllm_reference(logits, temperature, kt, pt)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    assert (~torch.isinf(ours)).sum(-1).min() >= 1  # never empty


def test_defaults_leave_the_logits_alone_and_top_k_keeps_k():
    logits = torch.randn(3, 20)
    assert torch.equal(processed_logits(logits), logits)
    kept = ~torch.isinf(processed_logits(logits, 1.0, 4, None))
    assert kept.sum(-1).tolist() == [4, 4, 4]
