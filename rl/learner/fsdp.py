"""FSDP2 for MiniCPM-V 4.5: how the model is sharded over the learner ranks, and how full tensors come back out.

`shard_model` wraps (`torch.distributed.fsdp.fully_shard`) each Qwen3 decoder layer and the token embedding, and
finally the root, so a forward gathers one unit's parameters at a time. Parameters stay fp32 (the master
weights); `mixed_precision` computes in bf16 with fp32 gradient reduction on GPUs. The gradient is summed over
ranks, not averaged: the loss is already normalised by the global batch's token and sequence counts.

The vision tower and the resampler (0.4B of the 8.7B parameters) belong to the root unit, gathered once per forward
on every rank. Units of their own would deadlock: every rank must gather a unit the same number of times, and the
vision path runs a data-dependent number of times (once per chunk of image slices, never for a text-only batch).

The LM head belongs to the root unit too, for the same reason: the chunked log-prob head (`model/logprob_head.py`,
`learner.logprob_chunk_tokens`) multiplies by `lm_head.weight` once per chunk of scored tokens, a number that differs
between ranks. As a unit of its own, called per chunk, it would be all-gathered a different number of times on each
rank (a deadlock); read directly, as the head does, it would be the local shard. In the root it is gathered once per
forward, with the root, and held through the backward (FSDP2 does not reshard the root after its forward); its
gradient is reduce-scattered with the root's at the end of the backward. The cost: the bf16 head (1.24 GB for the
release) stays gathered from each micro-batch's forward to the end of its backward, and its unsharded gradient from
the head's backward (the first) to the end of the backward. Embeddings tied to the LM head (`tie_word_embeddings`;
false for the release and the tiny model) put the embedding in the root as well: one parameter, one unit.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from model import MiniCPMV


def shard_units(base: MiniCPMV) -> list[torch.nn.Module]:
    """The modules that get their own FSDP unit, innermost first (the root is wrapped after them). Not the LM head:
    it stays in the root unit (see above), with the token embedding when the two share their weight."""
    tied = base.llm.lm_head.weight is base.llm.model.embed_tokens.weight
    return [*base.llm.model.layers, *([] if tied else [base.llm.model.embed_tokens])]


def mixed_precision(bf16: bool, root: bool = False) -> MixedPrecisionPolicy:
    """bf16 compute with fp32 master weights and fp32 gradient reduction; or fp32 throughout.

    The root unit does not cast its forward's inputs (`cast_forward_inputs=False`): they are the batch, and among
    them the per-token temperature and top-p of the log-prob head, which bf16 would round (T 0.7 -> 0.69921875,
    top-p 0.99 -> 0.98828125: log-probs of another distribution than the engine sampled, and -inf for tokens at the
    nucleus' edge). The pixels are cast by the vision tower itself (`MiniCPMV.vision_features`); the inner units'
    inputs are hidden states, which the bf16 layers produce in bf16 anyway."""
    if bf16:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                    cast_forward_inputs=not root)
    return MixedPrecisionPolicy()


def shard_model(model: torch.nn.Module, base: MiniCPMV, mesh=None, bf16: bool = False) -> torch.nn.Module:
    """Shard `model` (the MiniCPMV, or the PEFT model around it: `base`) in place over `mesh` (default: the world)."""
    for unit in shard_units(base):
        fully_shard(unit, mesh=mesh, mp_policy=mixed_precision(bf16))
    fully_shard(model, mesh=mesh, mp_policy=mixed_precision(bf16, root=True))
    for module in model.modules():  # sum, not mean: the loss carries the global normalisers
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return model
