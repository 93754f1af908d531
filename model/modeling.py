"""MiniCPM-V 4.5 for training: `vpm` (NaViT SigLIP) -> `resampler` (3D-Resampler) -> `llm` (Qwen3).

The state_dict has exactly the released checkpoint's parameter names. The forward takes what `model.processor`
produces (token ids, image slices, tgt_sizes, image bounds, temporal ids) for a padded or packed batch and returns
per-token log-probabilities of the given target tokens (and logits on request).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from .attention import VARLEN, packed_kwargs
from .logprob_head import token_logprobs
from .remote_code.configuration_minicpm import MiniCPMVConfig
from .resampler import Resampler3D
from .vision import VisionTower, idefics2_config


@dataclass
class MiniCPMVOutput:
    logprobs: torch.Tensor | None
    """[B, T] fp32: logprobs[b, t] = log p(input_ids[b, t] | input_ids[b, :t]) where target_mask[b, t], else 0."""
    logits: torch.Tensor | None = None
    """[B, T, V]: logits[b, t] predicts input_ids[b, t + 1] (only with return_logits=True)."""
    entropy: torch.Tensor | None = None
    """[B, T] fp32, no gradient: entropy of the distribution each target token was drawn from (return_entropy)."""


def llm_config(config: MiniCPMVConfig, attn_implementation: str) -> Qwen3Config:
    """The Qwen3 fields of the flattened MiniCPM-V config."""
    fields = {k: getattr(config, k) for k in Qwen3Config.__dataclass_fields__ if hasattr(config, k)}
    fields.pop("transformers_version", None)
    cfg = Qwen3Config(**fields)
    cfg._attn_implementation = attn_implementation
    return cfg


def image_token_mask(input_ids: torch.Tensor, image_bound: list[torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: True on every position inside an image bound [start, end)."""
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for b, bounds in enumerate(image_bound):
        for start, end in torch.as_tensor(bounds).reshape(-1, 2).tolist():
            mask[b, start:end] = True
    return mask


class MiniCPMV(nn.Module):
    def __init__(self, config: MiniCPMVConfig, attn_implementation: str = "sdpa"):
        """attn_implementation: the LLM's (`model.attention.llm_attention`: "sdpa", or `VARLEN` for packed rows
        without a T x T mask); the vision tower attends within one image and always runs "sdpa"."""
        super().__init__()
        self.config = config
        self.llm = Qwen3ForCausalLM(llm_config(config, attn_implementation))
        self.vpm = VisionTower(idefics2_config(config.vision_config, "sdpa"))
        if config.drop_vision_last_layer:
            self.vpm.encoder.layers = self.vpm.encoder.layers[:-1]
        self.resampler = Resampler3D(
            num_queries=config.query_num, embed_dim=config.hidden_size, num_heads=config.hidden_size // 128,
            kv_dim=config.vision_config.hidden_size)

    # ---- vision ----
    def vision_features(self, pixel_values: list[torch.Tensor], tgt_sizes: torch.Tensor,
                        temporal_ids: list[list[int]] | None = None) -> torch.Tensor:
        """pixel_values: N slices, each [3, patch, h*w*patch]; tgt_sizes [N, 2].
        Returns [G * query_num, hidden]: the visual tokens of G groups (slices, or video packages) in order."""
        if len(pixel_values) != tgt_sizes.shape[0]:
            raise ValueError(f"{len(pixel_values)} image slices but {tgt_sizes.shape[0]} tgt_sizes rows")
        device, dtype = self.vpm.embeddings.patch_embedding.weight.device, self.vpm.embeddings.patch_embedding.weight.dtype
        tgt_sizes = tgt_sizes.to(device=device, dtype=torch.long)
        longest = max(p.shape[-1] for p in pixel_values)
        padded = torch.zeros(len(pixel_values), 3, pixel_values[0].shape[-2], longest, device=device, dtype=dtype)
        for i, p in enumerate(pixel_values):
            padded[i, ..., : p.shape[-1]] = p
        chunk = self.config.vision_batch_size
        hidden = [self.vpm(padded[i:i + chunk], tgt_sizes[i:i + chunk]) for i in range(0, len(pixel_values), chunk)]
        width = max(h.shape[1] for h in hidden)
        hidden = torch.cat([F.pad(h, (0, 0, 0, width - h.shape[1])) for h in hidden])
        return self.resampler(hidden, tgt_sizes, temporal_ids).flatten(0, 1)

    def embed(self, input_ids: torch.Tensor, pixel_values=None, tgt_sizes=None, image_bound=None,
              temporal_ids=None, vision_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the visual tokens written over the image-bound positions. vision_index [P] long:
        the row of the encoded features each of the P image positions takes (`model.processor.shared_vision`: the
        slices of a prompt that several sequences share are encoded once); None: the features in order."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        n_slots = 0 if image_bound is None else int(image_token_mask(input_ids, image_bound).sum())
        n_slices = 0 if pixel_values is None else len(pixel_values)
        if n_slices == 0:
            if n_slots:
                raise ValueError(f"the input has {n_slots} image-token positions but no image slices")
            return embeds
        feats = self.vision_features(pixel_values, tgt_sizes, temporal_ids)
        if vision_index is not None:
            if vision_index.numel() and int(vision_index.max()) >= feats.shape[0]:
                raise ValueError(f"vision_index points past the {feats.shape[0]} visual tokens of {n_slices} slices")
            feats = feats[vision_index.to(feats.device)]
        if feats.shape[0] != n_slots:
            raise ValueError(
                f"{feats.shape[0]} visual tokens from {n_slices} image slices do not fit {n_slots} image-token "
                "positions (more images than placeholders, or the other way round)")
        mask = image_token_mask(input_ids, image_bound)
        return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))

    # ---- training forward ----
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, pixel_values: list[torch.Tensor] | None = None,
                tgt_sizes: torch.Tensor | None = None, image_bound: list[torch.Tensor] | None = None,
                temporal_ids: list[list[int]] | None = None, vision_index: torch.Tensor | None = None,
                target_mask: torch.Tensor | None = None,
                return_logits: bool = False, return_entropy: bool = False,
                temperature: float | torch.Tensor = 1.0, top_k: int | torch.Tensor | None = None,
                top_p: float | torch.Tensor | None = None,
                logprob_chunk_tokens: int | None = None) -> MiniCPMVOutput:
        """input_ids [B, T]. Padded batch: attention_mask [B, T] (left or right padding; positions restart at 0
        after the padding, as in vLLM). Packed batch: attention_mask None and position_ids [B, T] that restart at 0
        at each sequence start: no attention across sequences. target_mask [B, T] bool: which tokens to score
        (position 0 is never scored). Log-probabilities (and entropy) are computed in fp32 under the distribution the
        sample was drawn from: logits / temperature, top-k and top-p filtered (`model.sampling`); each may be a
        scalar or a [B, T] tensor holding every scored token's value at the token's position.
        logprob_chunk_tokens: compute them from the final hidden states that many scored tokens at a time, recomputed
        in the backward (`model.logprob_head`: no [tokens x vocab] fp32 tensor beyond one chunk); None or 0: all
        scored tokens at once. Same values either way."""
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        embeds = self.embed(input_ids, pixel_values, tgt_sizes, image_bound, temporal_ids, vision_index)
        # Varlen attention: the sequence boundaries of a packed row, once for all layers (no T x T mask is built).
        varlen = (packed_kwargs(position_ids.expand_as(input_ids)) if attention_mask is None
                  and self.llm.config._attn_implementation == VARLEN else {})
        hidden = self.llm.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False, **varlen).last_hidden_state
        logprobs = entropy = None
        if target_mask is not None:
            target_mask = target_mask.bool().clone()
            target_mask[:, 0] = False
            src = target_mask[:, 1:]  # hidden at t-1 predicts token t
            lp, ent = token_logprobs(hidden[:, :-1][src], self.llm.lm_head, input_ids[:, 1:][src], *(
                v[:, 1:][src] if torch.is_tensor(v) and v.dim() == 2 else v for v in (temperature, top_k, top_p)),
                chunk_tokens=logprob_chunk_tokens, entropy=return_entropy)
            logprobs = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
            logprobs[:, 1:][src] = lp
            if return_entropy:
                entropy = torch.zeros_like(logprobs)
                entropy[:, 1:][src] = ent
        return MiniCPMVOutput(logprobs=logprobs, logits=self.llm.lm_head(hidden) if return_logits else None,
                              entropy=entropy)

    # ---- checkpoints ----
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu", attn_implementation: str = "sdpa") -> "MiniCPMV":
        from .checkpoint import load_config, load_state_dict

        config = load_config(path)
        with torch.device("meta"):
            model = cls(config, attn_implementation=attn_implementation)
        state = load_state_dict(path, expected=model.state_dict())
        model.load_state_dict(state, strict=True, assign=True)
        model._rebuild_buffers()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)

    def _rebuild_buffers(self) -> None:
        """Recompute the rotary frequencies (a non-persistent buffer, a function of the config) after a meta-device
        build; the resampler builds its position tables on first use."""
        rotary = self.llm.model.rotary_emb
        self.llm.model.rotary_emb = type(rotary)(self.llm.config)
        left = [n for n, t in self.state_dict(keep_vars=True).items() if t.is_meta]
        left += [n for n, t in self.named_buffers() if t.is_meta]
        if left:
            raise RuntimeError(f"tensors left on the meta device after loading: {left[:5]}")

    def save_pretrained(self, path: str | os.PathLike, max_shard_size: str | int = "5GB") -> None:
        from .checkpoint import save_checkpoint

        save_checkpoint(self, path, max_shard_size=max_shard_size)
