"""The NaViT SigLIP vision encoder of MiniCPM-V 4.5, on transformers' `Idefics2VisionTransformer`.

The checkpoint's `vpm.*` parameters load into it with no missing keys. The one difference from transformers'
forward is how patch positions are found: MiniCPM-V feeds each slice as a [3, 14, h*w*14] strip of patches (one
row of patches), so positions come from `tgt_sizes` (h, w in patches) instead of a 2D patch mask. Position ids are
bucketed fractional coordinates on the 70x70 (image_size 980 / 14) embedding grid, computed as vLLM's
`Idefics2VisionEmbeddings.get_position_ids` does.
"""

from __future__ import annotations

import torch
from transformers import Idefics2VisionConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

VISION_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                 "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")


def idefics2_config(vision_config, attn_implementation: str = "sdpa") -> Idefics2VisionConfig:
    """The Idefics2 view of the checkpoint's `vision_config` (SigLIP fields)."""
    cfg = Idefics2VisionConfig(**{k: getattr(vision_config, k) for k in VISION_FIELDS})
    cfg._attn_implementation = attn_implementation
    return cfg


def patch_position_ids(tgt_sizes: torch.Tensor, max_patches: int, num_patches_per_side: int) -> torch.Tensor:
    """tgt_sizes [B, 2] (h, w) -> position ids [B, max_patches] (0 at padding)."""
    device = tgt_sizes.device
    boundaries = torch.arange(1 / num_patches_per_side, 1.0, 1 / num_patches_per_side, device=device)
    nb_h = tgt_sizes[:, 0].clamp(min=1).unsqueeze(1)
    nb_w = tgt_sizes[:, 1].clamp(min=1).unsqueeze(1)
    idx = torch.arange(max_patches, device=device).unsqueeze(0)
    h_idx, w_idx = idx // nb_w, idx % nb_w
    bucket_h = torch.bucketize(h_idx / nb_h, boundaries, right=True)
    bucket_w = torch.bucketize(w_idx / nb_w, boundaries, right=True)
    pos = bucket_h * num_patches_per_side + bucket_w
    valid = idx < (tgt_sizes[:, 0] * tgt_sizes[:, 1]).unsqueeze(1)
    return torch.where(valid, pos, 0)


class VisionTower(Idefics2VisionTransformer):
    def forward(self, pixel_values: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, P, L] (slices as patch strips, right-padded); tgt_sizes [B, 2].
        Returns [B, max_patches, hidden] (positions past h*w are padding)."""
        emb = self.embeddings
        max_patches = int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).max())
        patches = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype))
        hidden = patches.flatten(2).transpose(1, 2)[:, :max_patches]
        pos = patch_position_ids(tgt_sizes, max_patches, emb.num_patches_per_side)
        hidden = hidden + emb.position_embedding(pos)
        valid = torch.arange(max_patches, device=hidden.device)[None] < (tgt_sizes[:, 0] * tgt_sizes[:, 1])[:, None]
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=valid)
        hidden = self.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
        return self.post_layernorm(hidden)
