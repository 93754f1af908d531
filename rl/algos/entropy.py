"""Per-token entropy of the policy's next-token distribution (a metric only). It lives in `model/entropy.py`, where
the forward computes it (`model/` sits below `rl/`); re-exported here with the rest of the RL math."""

from model.entropy import entropy_from_logits

__all__ = ["entropy_from_logits"]
