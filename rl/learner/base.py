"""What the trainer, checkpointing and evaluation may ask of a learner, whichever implementation it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from model.processor import PromptInputs
from rollouts.transfer import SendReport, TransferPlan
from rollouts.weights import Staging


@dataclass
class TrainSample:
    """One completion to learn from."""
    prompt: PromptInputs
    completion_ids: list[int]
    advantage: float
    rollout_logprobs: list[float] | None = None
    mode: str = "auto"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    """The sampling distribution it was drawn from (0 / 1.0: no top-k / top-p): the learner scores it under the
    same one, as the engine's processed log-probs do."""


class Learner(Protocol):
    """A policy that learns from scored samples and hands its weights to the rollout workers. Nothing outside the
    learner reaches into its model or optimizer."""

    version: int
    """Policy version: the number of optimizer steps taken (restored by `load_state`)."""

    def step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One optimizer step on the whole batch; the learner's metrics."""

    def logprobs(self, samples: list[TrainSample], reference: bool = False) -> list[torch.Tensor]:
        """Per-sample completion log-probabilities [L_i] under the current (or the reference) weights."""

    def resolve_sync_kind(self, kind: str = "auto") -> str:
        """`auto` resolved: adapter (LoRA), merged (LoRA with a trained vision tower or resampler) or full."""

    def sync_payload(self, kind: str = "auto", adapter_dir: str | None = None,
                     staging: Staging | None = None) -> tuple[str, Any]:
        """What the rollout workers load: ("adapter", directory); full or merged weights as ("path", folder), a new
        staging folder the learner wrote bucket by bucket as it gathered them (`staging` says where and how; the
        caller owns the folder: nothing of the model comes back through the caller), or without `staging`,
        ("weights", [(name, tensor)])."""

    def send_weights(self, kind: str, plan: TransferPlan) -> SendReport:
        """Full or merged weights straight into every engine of `plan` (`rollouts.transfer`): each tensor gathered
        from the shards in the plan's dtype, broadcast bucket by bucket, no file and no full copy; verified by
        checksums. The group stays open for the next call with the same members. Sharded: collective, rank 0
        sends."""

    def save_state(self, path: Path) -> None:
        """Trainable weights, optimizer, scheduler and version into the (new, empty) folder `path`."""

    def load_state(self, path: Path) -> None:
        """Restore what `save_state` wrote."""

    def export(self, out: Path) -> None:
        """The policy's weights (LoRA merged), in the base checkpoint's dtype, as safetensors in `out`."""

    def close(self) -> None:
        """Release processes and devices."""
