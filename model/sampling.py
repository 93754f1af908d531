"""The distribution a sample was drawn from, as the rollout engine builds it: logits / temperature, then top-k and
top-p filtering (vLLM's `apply_top_k_top_p`: the k largest logits; then the smallest set of the largest whose
probabilities reach p, never empty). The learner scores a completion under this same distribution, so that its
log-probabilities equal the engine's processed ones (`logprobs_mode="processed_logprobs"`)."""

from __future__ import annotations

import torch


def processed_logits(
    logits: torch.Tensor,  # [N, V] float32
    temperature: torch.Tensor | float = 1.0,  # [N] or a scalar, > 0
    top_k: torch.Tensor | int | None = None,  # [N] long (0 = off) or a scalar
    top_p: torch.Tensor | float | None = None,  # [N] float (1 = off) or a scalar
) -> torch.Tensor:  # [N, V]: filtered-out entries are -inf
    """The logits the engine samples from (differentiable in the kept entries)."""
    n, vocab = logits.shape
    temperature = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device).expand(n)
    logits = logits / temperature.unsqueeze(-1)
    k = None if top_k is None else torch.as_tensor(top_k, device=logits.device).long().expand(n)
    p = None if top_p is None else torch.as_tensor(top_p, dtype=torch.float32, device=logits.device).expand(n)
    use_k = k is not None and bool(((k > 0) & (k < vocab)).any())
    use_p = p is not None and bool((p < 1).any())
    if not (use_k or use_p):
        return logits
    ordered, order = logits.sort(dim=-1, descending=False)  # ascending, as vLLM
    drop = torch.zeros_like(ordered, dtype=torch.bool)
    if use_k:
        k = torch.where((k > 0) & (k < vocab), k, torch.full_like(k, vocab))
        threshold = ordered.gather(-1, (vocab - k).unsqueeze(-1))  # the k-th largest
        drop |= ordered < threshold
    if use_p:
        probs = ordered.masked_fill(drop, float("-inf")).softmax(dim=-1)
        below = probs.cumsum(dim=-1) <= (1 - p).unsqueeze(-1)
        below[:, -1] = False  # the largest always stays
        drop |= below
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(ordered).scatter_(-1, order, ordered)
