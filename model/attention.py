"""Attention for the learner's packed rows: which implementation the LLM runs (`learner.attention`).

(Work in progress of issue 22: filled in by the varlen-attention change.)
"""

from __future__ import annotations

import torch

ATTENTION = ("auto", "sdpa", "varlen")


def llm_attention(setting: str, device: torch.device | str) -> str:
    """The transformers `attn_implementation` the LLM is built with for `learner.attention` on `device`."""
    if setting not in ATTENTION:
        raise ValueError(f"learner.attention={setting!r}: expected one of {', '.join(ATTENTION)}")
    return "sdpa"
