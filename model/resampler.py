"""The 3D-Resampler of MiniCPM-V 4.5: 64 learned queries cross-attend to the vision features of one slice
(or one package of up to 6 video frames) and produce 64 LLM-width tokens.

Computed as the release computes it (and as vLLM's `Resampler4_5` does; `tests/test_resampler.py` checks both):
  kv   = LN_kv(kv_proj(x))                                    # [B, L, D]
  keys = kv + pos2d(h, w) (+ temporal(t) for video frames)     # the position terms go on the KEYS only
  vals = kv
  q    = LN_q(query)                                          # no positional term on the queries
  out  = LN_post(MHA(q, keys, vals, key_padding_mask)) @ proj  # [B or groups, Q, D]

pos2d is a sin-cos table (base 10000) whose first D/2 channels encode the column index and last D/2 the row
index (numpy float32, as the release builds it); temporal(t) is a 1D sin-cos of the frame's timestamp id
(units of 0.1 s). A video package is the concatenation of its frames' keys/values along the sequence axis, so one
cross-attention yields 64 tokens for the whole package.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch
from torch import nn


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[...] positions -> [..., dim] with sin in the first half and cos in the second (float32, base 10000)."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("...,d->...d", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=-1)


def sincos_2d(dim: int, height: int, width: int) -> np.ndarray:
    """[height, width, dim]: channels [0, dim/2) encode the column, [dim/2, dim) the row."""
    rows = np.arange(height, dtype=np.float32)
    cols = np.arange(width, dtype=np.float32)
    col_grid, row_grid = np.meshgrid(cols, rows)  # each [height, width]
    return np.concatenate([sincos_1d(dim // 2, col_grid), sincos_1d(dim // 2, row_grid)], axis=-1)


class Resampler3D(nn.Module):
    """Parameter names and shapes match the release: query, kv_proj, attn, ln_q, ln_kv, ln_post, proj."""

    def __init__(self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int):
        super().__init__()
        self.num_queries, self.embed_dim, self.num_heads = num_queries, embed_dim, num_heads
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter((embed_dim**-0.5) * torch.randn(embed_dim, embed_dim))
        # Position tables are built on first use, as large as the inputs need (their entries do not depend on
        # the table size), on the inputs' device: nothing to materialise after a meta-device build.
        self.max_size = (0, 0)
        self.max_temporal_size = 0
        self.pos_embed: torch.Tensor | None = None
        self.temporal_pos_embed: torch.Tensor | None = None

    def init_weights(self, std: float = 0.02) -> None:
        """The release's initialisation: truncated normal queries and linears, unit LayerNorms."""
        nn.init.trunc_normal_(self.query, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.attn.in_proj_weight, std=std)
        nn.init.zeros_(self.attn.in_proj_bias)

    # ---- position tables (non-persistent buffers, grown on demand) ----
    def _grow_2d(self, size: tuple[int, int], device: torch.device) -> None:
        size = (max(size[0], self.max_size[0]), max(size[1], self.max_size[1]))
        if self.pos_embed is None or size != self.max_size or self.pos_embed.device != device:
            self.pos_embed = torch.from_numpy(sincos_2d(self.embed_dim, *size)).float().to(device)
            self.max_size = size

    def _grow_temporal(self, size: int, device: torch.device) -> None:
        if self.temporal_pos_embed is None or size > self.max_temporal_size or self.temporal_pos_embed.device != device:
            size = max(size, self.max_temporal_size)
            table = sincos_1d(self.embed_dim, np.arange(size, dtype=np.float32))
            self.temporal_pos_embed = torch.from_numpy(table).float().to(device)
            self.max_temporal_size = size

    def forward(self, x: torch.Tensor, tgt_sizes: torch.Tensor,
                temporal_ids: list[list[int]] | None = None) -> torch.Tensor:
        """x: [B, L, kv_dim] vision features of B slices, right-padded to L patches; tgt_sizes: [B, 2] (h, w)
        in patches; temporal_ids: one list per group covering the B slices in order ([-1] for an image slice,
        the frames' timestamp ids for a video package), or None for images only.
        Returns [G, num_queries, embed_dim], G = number of groups (B when there are no packages)."""
        bsz, device, dtype = x.shape[0], x.device, x.dtype
        if tgt_sizes.shape[0] != bsz:
            raise ValueError(f"tgt_sizes has {tgt_sizes.shape[0]} rows for {bsz} slices")
        sizes = tgt_sizes.tolist()
        self._grow_2d((max(h for h, _ in sizes), max(w for _, w in sizes)), device)
        patch_len = [h * w for h, w in sizes]
        max_len = max(patch_len)
        flat_tids = list(chain.from_iterable(temporal_ids)) if temporal_ids is not None else None
        if flat_tids is not None and len(flat_tids) != bsz:
            raise ValueError(f"temporal_ids cover {len(flat_tids)} slices, the batch has {bsz}")
        use_temporal = flat_tids is not None and max(flat_tids, default=-1) > -1
        if use_temporal:
            self._grow_temporal(max(flat_tids) + 1, device)

        kv = self.ln_kv(self.kv_proj(x[:, :max_len]))  # [B, L, D]
        pos = torch.zeros(bsz, max_len, self.embed_dim, device=device, dtype=dtype)
        pad = torch.ones(bsz, max_len, dtype=torch.bool, device=device)
        for i, (h, w) in enumerate(sizes):
            pos[i, : h * w] = self.pos_embed[:h, :w].reshape(h * w, -1).to(device=device, dtype=dtype)
            pad[i, : h * w] = False
        keys, vals = kv + pos, kv
        if use_temporal:
            t = torch.stack([
                torch.zeros(self.embed_dim, device=device, dtype=dtype) if tid == -1
                else self.temporal_pos_embed[tid].to(device=device, dtype=dtype) for tid in flat_tids])
            keys = keys + t[:, None, :]
            keys, vals, pad = self._pack(keys, vals, pad, temporal_ids)

        q = self.ln_q(self.query)
        q = q.unsqueeze(1).expand(-1, keys.shape[0], -1)  # [Q, G, D]
        out, _ = self.attn(q, keys.transpose(0, 1), vals.transpose(0, 1), key_padding_mask=pad,
                           need_weights=False)
        return self.ln_post(out.transpose(0, 1)) @ self.proj

    @staticmethod
    def _pack(keys, vals, pad, temporal_ids):
        """Concatenate the slices of each group along the sequence axis (padding included, masked)."""
        ks, vs, ps, start = [], [], [], 0
        for group in temporal_ids:
            end = start + len(group)
            ks.append(keys[start:end].reshape(-1, keys.shape[-1]))
            vs.append(vals[start:end].reshape(-1, vals.shape[-1]))
            ps.append(pad[start:end].reshape(-1))
            start = end
        pad_seq = nn.utils.rnn.pad_sequence
        return (pad_seq(ks, batch_first=True), pad_seq(vs, batch_first=True),
                pad_seq(ps, batch_first=True, padding_value=True))
