"""Per-token entropy of the policy's next-token distribution. A metric only: no gradient, not a loss term.

The forward computes it (`MiniCPMV.forward(return_entropy=True)`); `rl.algos` re-exports it with the RL math.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def entropy_from_logits(
    logits: torch.Tensor,  # [..., V]
    chunk_size: int | None = 1024,  # rows of the flattened [..., V] processed at a time (memory); None = all at once
    temperature: float = 1.0,  # the sampling temperature, so the entropy is that of the distribution sampled from
) -> torch.Tensor:  # [...], float32 (or float64 for float64 logits), in nats
    """H = -sum_v p_v log p_v with log p = log_softmax(logits / temperature), computed in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    out = torch.empty(flat.shape[0], dtype=dtype, device=logits.device)
    step = flat.shape[0] if chunk_size is None else max(int(chunk_size), 1)
    for start in range(0, flat.shape[0], step):
        z = flat[start:start + step].to(dtype) / temperature
        logp = torch.log_softmax(z, -1)
        plogp = torch.where(torch.isneginf(logp), 0.0, logp.exp() * logp)  # 0 log 0 = 0 (a -inf logit)
        out[start:start + step] = -plogp.sum(-1)
    return out.reshape(shape)
