"""Attention for the learner's packed rows: which implementation the LLM runs (`learner.attention`).

A packed row holds several sequences back to back (`model.processor.collate(..., packed=True)`: position_ids restart
at 0 at each sequence start, no attention_mask). With transformers' "sdpa" the row gets a dense [1, 1, T, T]
block-diagonal mask and every layer attends over the whole row: (sum of lengths)^2 work instead of the sum of
squares. The implementation registered here, `VARLEN` ("minicpmv_varlen"), never builds that mask:

- its mask builder (transformers' `AttentionMaskInterface`) returns None when there is no padding mask, so no
  T x T tensor is made for a packed row; a padded batch (a 2D attention_mask) still gets SDPA's padding mask;
- its attention function (transformers' `AttentionInterface`) takes the sequence boundaries as `cu_seq_lens_q` /
  `max_length_q` (transformers' FlashAttentionKwargs names; `MiniCPMV.forward` computes them once per forward with
  `packed_kwargs`, else they come from the position_ids of each layer's call) and runs
  - on CUDA in bf16/fp16: a varlen kernel over the whole row: torch's `torch.nn.attention.varlen.varlen_attn`, else
    flash-attention's `flash_attn_varlen_func` where installed;
  - elsewhere (the CPU; fp32 on CUDA; attention dropout): causal SDPA per sequence, a loop over the boundaries,
    numerically the dense mask's result (the masked-out keys contribute exact zeros there);
  - with a padding mask: transformers' own SDPA with that mask, as before.

GQA (fewer key/value heads than query heads) is handled on every path. Only the LLM uses it: the vision tower
attends within one image and keeps plain "sdpa".
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = ("auto", "sdpa", "varlen")
VARLEN = "minicpmv_varlen"
"""The transformers attn_implementation name the LLM gets for learner.attention auto / varlen."""

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.10
    varlen_attn = None
try:
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None


def llm_attention(setting: str, device: torch.device | str) -> str:
    """The transformers `attn_implementation` the LLM is built with for `learner.attention` on `device`.

    auto: the varlen implementation on CPU and CUDA (`VARLEN`; SDPA elsewhere); varlen: `VARLEN` on any device;
    sdpa: transformers' SDPA with its dense block-diagonal mask over a packed row (the old behaviour)."""
    if setting not in ATTENTION:
        raise ValueError(f"learner.attention={setting!r}: expected one of {', '.join(ATTENTION)}")
    if setting == "sdpa":
        return "sdpa"
    if setting == "auto" and torch.device(device).type not in ("cpu", "cuda"):
        return "sdpa"
    return VARLEN


def packed_kwargs(position_ids: torch.Tensor) -> dict:
    """The sequence boundaries of [B, T] position_ids (a sequence starts at each row start and wherever a position
    is not the previous one + 1, as transformers' packed-sequence detection does), over the B * T tokens flattened:
    cu_seq_lens_q/k ([N + 1] int32, on position_ids' device) and max_length_q/k (int), the kwargs transformers
    passes on to every layer's attention."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    idx = starts.flatten().nonzero().flatten()
    cu = torch.cat([idx, idx.new_tensor([position_ids.numel()])]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)


# ---- the kernels: q [N, Hq, D], k / v [N, Hkv, D], cu [S + 1] int32 -> [N, Hq, D] ----
def _torch_varlen(q, k, v, cu, longest: int, scale: float | None) -> torch.Tensor:
    return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale, window_size=(-1, 0),
                       enable_gqa=q.shape[1] != k.shape[1])


def _flash_varlen(q, k, v, cu, longest: int, scale: float | None) -> torch.Tensor:
    return flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, softmax_scale=scale, causal=True)


KERNEL_DEVICES = ("cuda",)
KERNEL_DTYPES = (torch.float16, torch.bfloat16)  # flash-attention's; fp32 on CUDA runs the per-sequence loop


def _kernel(query: torch.Tensor) -> Callable | None:
    """The varlen kernel for this query's device and dtype, or None (causal SDPA per sequence)."""
    if query.device.type not in KERNEL_DEVICES or query.dtype not in KERNEL_DTYPES:
        return None
    if varlen_attn is not None:
        return _torch_varlen
    if flash_attn_varlen_func is not None:
        return _flash_varlen
    return None


def _per_sequence_sdpa(q, k, v, bounds: list[int], scale: float | None, dropout: float) -> torch.Tensor:
    """q [1, Hq, N, D], k / v [1, Hkv, N, D]: causal SDPA on each [bounds[i], bounds[i+1]) -> [1, Hq, N, D]."""
    gqa = k.shape[1] != q.shape[1]  # each key/value head shared by a group of query heads (no copies of k, v)
    parts = [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], dropout_p=dropout,
                                            is_causal=True, scale=scale, enable_gqa=gqa)
             for s, e in zip(bounds[:-1], bounds[1:])]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None,
                             cu_seq_lens_q: torch.Tensor | None = None, max_length_q: int | None = None,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query [B, Hq, T, D], key / value [B, Hkv, Tk, D] ->
    ([B, T, Hq, D], None). Causal attention within each sequence of the flattened B * T tokens."""
    b, hq, t, d = query.shape
    if attention_mask is not None or key.shape[2] != t:  # padded batch (or a KV cache): SDPA with the mask
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if sliding_window is not None:
        raise NotImplementedError(f"{VARLEN} attention has no sliding window (layer {module.layer_idx})")
    if cu_seq_lens_q is None:  # not precomputed (a direct call of the LLM): from this layer's position_ids
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(t, device=query.device)
        packed = packed_kwargs(position_ids.expand(b, t))
        cu_seq_lens_q, max_length_q = packed["cu_seq_lens_q"], packed["max_length_q"]
    kernel = None if dropout else _kernel(query)  # the kernels have no dropout; the loop has
    if kernel is not None:
        def flat(x):  # [B, H, T, D] -> [B * T, H, D], contiguous as the flash kernels want it
            return x.transpose(1, 2).reshape(b * t, x.shape[1], d).contiguous()

        cu = cu_seq_lens_q.to(device=query.device, dtype=torch.int32)
        out = kernel(flat(query), flat(key), flat(value), cu, int(max_length_q), scaling)
        return out.reshape(b, t, hq, d), None

    def row(x):  # [B, H, T, D] -> [1, H, B * T, D] (a view for B = 1)
        return x if b == 1 else x.transpose(0, 1).reshape(1, x.shape[1], b * t, d)

    out = _per_sequence_sdpa(row(query), row(key), row(value), cu_seq_lens_q.tolist(), scaling, dropout)
    return out.reshape(hq, b, t, d).permute(1, 2, 0, 3), None


def varlen_mask(batch_size: int, q_length: int, kv_length: int, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor | None:
    """transformers' mask-builder contract: no mask without a padding mask (the attention function takes the
    sequence boundaries instead of a T x T mask); SDPA's 4D mask for a padded batch."""
    if attention_mask is None:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, attention_mask=attention_mask,
                     **kwargs)


AttentionInterface.register(VARLEN, varlen_attention_forward)
AttentionMaskInterface.register(VARLEN, varlen_mask)
