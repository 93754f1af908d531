"""The log-prob head: per-token log-probabilities (and entropy) of the scored tokens from the final hidden states,
a chunk of tokens at a time.

    hidden [N, H] -> logits = lm_head(hidden) [N, V] -> fp32 -> the sampling distribution (`model.sampling`:
    temperature, top-k, top-p per token) -> log_softmax, read at the target token

Unchunked, autograd keeps [N, V] fp32 tensors (the logits, their log-softmax) from the forward to the backward and
makes more there: with the release's 151,748-token vocabulary that is 0.6 GB per copy per 1k scored tokens, ~10 GB
per copy at 16k, the largest tensors of a long-CoT step. `ChunkedLogProbs` computes the logits of `chunk_tokens`
tokens at a time and keeps only their [chunk] results (log-probs, entropy); its backward recomputes each chunk's
logits, turns them into the chunk's gradient with the kernels autograd would use (gather's, log_softmax's,
masked_fill's backward, the division by the temperature: a chunk that holds every token gives the unchunked
gradient bit for bit), writes grad_hidden[chunk] and adds the chunk's share to grad_weight in place. No tensor of
more than one chunk x vocab exists, forward or backward; the forward saves only the hidden states, the weight and
the targets. One difference comes from `processed_logits` (here called on blocks of ROWS rows), which filters by
top-p only when a row of its input asks for it, and then also drops, at p = 1, the entries whose probability is 0 in
fp32: a top_p = 1 token next to top_p < 1 tokens, whose log-prob is below ~-103, is -inf when they share a block and
finite when they do not; unchunked it already depends on the rest of the micro-batch in the same way.

A Function rather than `torch.utils.checkpoint` per chunk, because its peak is lower (`bench/learner.py --head-only`,
BENCHMARKS.md): a checkpointed chunk recomputes its forward under autograd, which saves the chunk's log-softmax (and,
with top-k/top-p, the sort's int64 indices: twice the fp32 logits) for its backward, and recomputes the entropy;
it hands autograd a gradient for the slice of the hidden states it read (a zero-filled [N, H] per chunk) and a
[V, H] weight gradient of its own to sum. Here a chunk's fp32 logits are its one chunk-sized tensor: the sampling
filter, the log-softmax, its gradient and the entropy go ROWS rows at a time, written over the logits, and the
entropy is computed once.

The weight gradient accumulates in the weight's dtype, one addmm_ per chunk: in fp32 the sums of the unchunked
matmul in another order; in bf16 it is rounded once per chunk instead of once per micro-batch. The head reads
`lm_head.weight` directly, once per chunk, with no module call: a sharded learner must hold it unsharded through the
forward and backward (the FSDP2 root unit, `rl/learner/fsdp.py`), not gather it per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .entropy import entropy_from_logits
from .sampling import processed_logits

Param = torch.Tensor | float | int | None  # a per-token [N] tensor, or one value for every token
ROWS = 128  # the sampling filter's, log-softmax's and entropy's temporaries cover this many rows of a chunk at a time


def _rows(value: Param, start: int, end: int) -> Param:
    return value[start:end] if torch.is_tensor(value) and value.dim() > 0 else value


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: Param, top_k: Param,
                  top_p: Param) -> torch.Tensor:  # [n, V] fp32: the distribution each token was drawn from
    """`processed_logits` ROWS rows at a time, written over the fp32 logits: its temporaries (the top-k/top-p sort's
    values, int64 indices and masks) cover ROWS rows, not the chunk."""
    logits = F.linear(hidden, weight).float()
    for r in range(0, logits.shape[0], ROWS):
        logits[r:r + ROWS] = processed_logits(logits[r:r + ROWS], *(_rows(v, r, r + ROWS)
                                                                    for v in (temperature, top_k, top_p)))
    return logits


class ChunkedLogProbs(torch.autograd.Function):
    """(hidden [N, H], weight [V, H], targets [N] long, temperature, top_k, top_p, chunk_tokens, with_entropy) ->
    (logprobs [N] fp32, entropy [N] fp32 without gradient, empty unless with_entropy)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, top_k, top_p, chunk_tokens: int, with_entropy: bool):
        n = hidden.shape[0]
        logprobs = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(n if with_entropy else 0, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_tokens):
            end = min(start + chunk_tokens, n)
            params = [_rows(v, start, end) for v in (temperature, top_k, top_p)]
            logits = _chunk_logits(hidden[start:end], weight, *params)
            for r in range(0, end - start, ROWS):  # the log-softmax ROWS rows at a time: row by row, the same
                at = slice(start + r, min(start + r + ROWS, end))  # (no view of `logits` may outlive it)
                logprobs[at] = torch.log_softmax(logits[r:r + ROWS], -1).gather(-1, targets[at, None])[:, 0]
            if with_entropy:
                entropy[start:end] = entropy_from_logits(logits, chunk_size=ROWS)
            del logits
        ctx.save_for_backward(hidden, weight, targets)
        ctx.params, ctx.chunk_tokens = (temperature, top_k, top_p), chunk_tokens
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, targets = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = None
        n = hidden.shape[0]
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, ctx.chunk_tokens):
                end = min(start + ctx.chunk_tokens, n)
                temperature, top_k, top_p = (_rows(v, start, end) for v in ctx.params)
                h, target = hidden[start:end], targets[start:end, None]
                grad = _chunk_logits(h, weight, temperature, top_k, top_p)  # overwritten by its gradient below
                kept = torch.isfinite(grad.gather(-1, target))  # the target survived top-k/top-p
                g = grad_logprobs[start:end, None].float()
                # autograd's own steps, so the gradient is bit for bit the unchunked one: gather's backward (the
                # gradient at the target), log_softmax's ((onehot - softmax) x g), ROWS rows at a time
                for r in range(0, end - start, ROWS):
                    logp = torch.log_softmax(grad[r:r + ROWS], -1)
                    onehot = torch.zeros_like(logp).scatter_(-1, target[r:r + ROWS], g[r:r + ROWS])
                    grad[r:r + ROWS] = torch.ops.aten._log_softmax_backward_data(onehot, logp, -1, logp.dtype)
                    del logp, onehot
                # masked_fill's (no gradient at a filtered-out target; the other filtered entries have softmax 0)
                grad.scatter_(-1, target, grad.gather(-1, target) * kept)
                temp = torch.as_tensor(temperature, dtype=grad.dtype, device=grad.device).expand(end - start)
                grad = grad.div_(temp[:, None]).to(weight.dtype)  # through logits / temperature, then .float()
                if need_hidden:
                    torch.mm(grad, weight, out=grad_hidden[start:end])
                if need_weight:
                    grad_weight = grad.t().mm(h) if grad_weight is None else grad_weight.addmm_(grad.t(), h)
                del grad
        return grad_hidden, grad_weight, None, None, None, None, None, None


def plain_linear(head: nn.Module) -> bool:
    """Whether the chunked head can read the head's weight directly: a bias-free nn.Linear (Qwen3's lm_head; not a
    PEFT-wrapped one, whose adapter only its own forward applies)."""
    return isinstance(head, nn.Linear) and head.bias is None


def token_logprobs(
    hidden: torch.Tensor,  # [N, H]: the final hidden state before each scored token
    head: nn.Module,  # the LM head, hidden -> [N, V] logits
    targets: torch.Tensor,  # [N] long: the scored tokens
    temperature: Param = 1.0,
    top_k: Param = None,
    top_p: Param = None,
    chunk_tokens: int | None = None,  # tokens per chunk; None or 0: all at once (autograd through [N, V] logits)
    entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # logprobs [N] fp32, entropy [N] fp32 without gradient (or None)
    """log p(target) under the processed distribution (`model.sampling.processed_logits`), and its entropy.
    A head that is not a plain bias-free nn.Linear (LoRA on the LM head) runs unchunked: same values, more memory."""
    if not chunk_tokens or not plain_linear(head):
        logits = processed_logits(head(hidden).float(), temperature, top_k, top_p)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return logprobs, entropy_from_logits(logits.detach()) if entropy else None
    weight, device_type = head.weight, hidden.device.type
    if torch.is_autocast_enabled(device_type):  # as autocast would run the linear: both in its dtype
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device_type, enabled=False):
        logprobs, ent = ChunkedLogProbs.apply(hidden, weight, targets, temperature, top_k, top_p, int(chunk_tokens),
                                              entropy)
    return logprobs, ent if entropy else None
