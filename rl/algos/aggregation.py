"""Loss aggregation: per-token loss [B, T] -> the scalar that is back-propagated.

Every mode is written as   sum over this micro-batch's tokens of w_it * loss_it  /  a normaliser of the *global*
batch (all micro-batches of one optimizer step). The caller passes the global normalisers into every micro-batch's
call (`global_normalizers` computes them from the micro-batch masks); the per-micro-batch scalars then *sum* to the
full-batch value exactly, so gradient accumulation is a plain `loss.backward()` per micro-batch with no further
division by the number of micro-batches. Left at None, each normaliser is taken from the tensors passed in (correct
when the call sees the whole batch).

| mode                      | value                                          | normalisers           | TRL loss_type   |
|---------------------------|------------------------------------------------|-----------------------|-----------------|
| "token-mean"              | sum_it m l / num_tokens                        | num_tokens            | "dapo" (global) |
|                           |                                                |                       | "bnpo" (local)  |
| "seq-mean-token-mean"     | sum_i [ sum_t m l / max(|y_i|, 1) ] / num_seqs | num_seqs              | "grpo"          |
| "seq-mean-token-sum"      | sum_i [ sum_t m l ] / num_seqs                 | num_seqs              | "luspo"         |
| "seq-mean-token-sum-norm" | sum_i [ sum_t m l ] / (num_seqs * norm_length) | num_seqs, norm_length | "dr_grpo"       |
(TRL equality is tested on a whole batch in tests/rl/algos/test_trl_parity.py; TRL's bnpo/grpo/dr_grpo use the *local*
normalisers and divide by the number of micro-batches instead, which is not exact under uneven micro-batches.)

- "token-mean": every token of the global batch weighs the same (DAPO's token-level loss, Yu et al. 2025,
  arXiv:2503.14476); long responses weigh more in total.
- "seq-mean-token-mean": every sequence weighs the same, tokens averaged inside it (the GRPO paper's 1/G sum_i
  1/|o_i| sum_t, Shao et al. 2024, arXiv:2402.03300). A sequence with no response token counts in num_seqs and adds 0.
- "seq-mean-token-sum": sum of token losses per sequence, mean over sequences (TRL's "luspo").
- "seq-mean-token-sum-norm": Dr. GRPO's constant normaliser (Liu et al. 2025, arXiv:2503.20783): the per-sequence
  sum divided by a constant, the maximum response length (generation budget), instead of |y_i|, removing the length
  bias of the per-sequence mean. `norm_length` is required: the padded width T of a tensor depends on how the batch
  was cut, so defaulting to it would make the loss depend on micro-batching.

Layout: one response per row ([B, T] padded, or the per-sequence view gathered from a packed row): a "sequence" is a
row. Data parallel: the normalisers are those of the batch this rank's gradient represents; when DDP *averages*
gradients over R ranks, pass the all-reduced totals divided by R (or multiply the loss by R).
"""

from __future__ import annotations

from typing import Iterable

import torch

from .registry import get_loss_agg, register_loss_agg

Number = int | float | torch.Tensor


def _prep(loss_mat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if loss_mat.dim() != 2 or mask.shape != loss_mat.shape:
        raise ValueError(f"loss_mat and mask must both be [B, T]; got {tuple(loss_mat.shape)}, {tuple(mask.shape)}")
    mask = mask.bool()
    return torch.where(mask, loss_mat, 0.0), mask  # where, not *, so that a NaN/inf on padding cannot leak


def _num_seqs(loss_mat: torch.Tensor, num_seqs: Number | None) -> Number:
    return loss_mat.shape[0] if num_seqs is None else num_seqs


@register_loss_agg("token-mean")
def token_mean(
    loss_mat: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    num_tokens: Number | None = None,  # response tokens in the global batch; None = mask.sum() of this call
    num_seqs: Number | None = None,  # unused
    norm_length: Number | None = None,  # unused
) -> torch.Tensor:  # []
    """sum of masked token losses / num_tokens (global). See the module docstring."""
    loss_mat, mask = _prep(loss_mat, mask)
    if num_tokens is None:
        num_tokens = mask.sum()
    return loss_mat.sum() / (num_tokens.clamp(min=1) if torch.is_tensor(num_tokens) else max(num_tokens, 1))


@register_loss_agg("seq-mean-token-mean")
def seq_mean_token_mean(
    loss_mat: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    num_tokens: Number | None = None,  # unused
    num_seqs: Number | None = None,  # sequences in the global batch; None = B of this call
    norm_length: Number | None = None,  # unused
) -> torch.Tensor:  # []
    """sum_i (token-mean of sequence i) / num_seqs (global). See the module docstring."""
    loss_mat, mask = _prep(loss_mat, mask)
    seq_mean = loss_mat.sum(-1) / mask.sum(-1).clamp(min=1).to(loss_mat.dtype)  # [B]
    return seq_mean.sum() / _num_seqs(loss_mat, num_seqs)


@register_loss_agg("seq-mean-token-sum")
def seq_mean_token_sum(
    loss_mat: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    num_tokens: Number | None = None,  # unused
    num_seqs: Number | None = None,  # sequences in the global batch; None = B of this call
    norm_length: Number | None = None,  # unused
) -> torch.Tensor:  # []
    """sum_i (token-sum of sequence i) / num_seqs (global). See the module docstring."""
    loss_mat, _ = _prep(loss_mat, mask)
    return loss_mat.sum() / _num_seqs(loss_mat, num_seqs)


@register_loss_agg("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(
    loss_mat: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    num_tokens: Number | None = None,  # unused
    num_seqs: Number | None = None,  # sequences in the global batch; None = B of this call
    norm_length: Number | None = None,  # required: the constant, max response length (tokens)
) -> torch.Tensor:  # []
    """sum_i (token-sum of sequence i) / (num_seqs * norm_length): Dr. GRPO. See the module docstring."""
    if norm_length is None:
        raise ValueError("seq-mean-token-sum-norm needs norm_length (Dr. GRPO's constant: the max response length)")
    loss_mat, _ = _prep(loss_mat, mask)
    return loss_mat.sum() / (_num_seqs(loss_mat, num_seqs) * norm_length)


def agg_loss(
    loss_mat: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T]
    mode: str,
    *,
    num_tokens: Number | None = None,
    num_seqs: Number | None = None,
    norm_length: Number | None = None,
) -> torch.Tensor:  # []
    """Dispatch by registered mode name (verl's `agg_loss(loss_mat, loss_mask, loss_agg_mode)`, plus the global
    normalisers that make it exact under micro-batching)."""
    return get_loss_agg(mode)(loss_mat, mask, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length)


def global_normalizers(masks: Iterable[torch.Tensor]) -> dict[str, int]:  # each mask [B_k, T_k]
    """The global normalisers of a batch split into micro-batches: {"num_tokens": total response tokens,
    "num_seqs": total rows}. Pass them (plus norm_length for Dr. GRPO) to every micro-batch's `agg_loss`."""
    num_tokens = num_seqs = 0
    for m in masks:
        num_tokens += int(m.bool().sum())
        num_seqs += int(m.shape[0])
    return {"num_tokens": num_tokens, "num_seqs": num_seqs}
