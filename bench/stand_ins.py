"""Stand-ins for the two sides of a step that sleep instead of computing: a rollout pool and a learner. With them,
the one-step-off loop's overlap is measured without the two sides sharing a CPU (bench/overlap.py, tests/rl)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from rollouts.types import RolloutResult, RolloutSample


class SleepingPool:
    """Answers each request with n samples after `seconds` of sleep (no CPU), drawn by the version it holds.
    tail=(share, factor): a hybrid length mix instead, each group `factor` times longer with probability `share`
    (seeded by the call's order, so every loop sees the same sequence); a call lasts as long as its longest group."""

    def __init__(self, seconds: float, tail: tuple[float, float] | None = None):
        self.seconds, self.version, self.drawn, self.tail = seconds, 0, [], tail

    def call_seconds(self, requests) -> float:
        if self.tail is None:
            return self.seconds
        rng = random.Random(len(self.drawn))
        share, factor = self.tail
        return max(self.seconds * (factor if rng.random() < share else 1.0) for _ in requests)

    def generate(self, requests):
        time.sleep(self.call_seconds(requests))
        self.drawn.append([(r.meta["id"], r.seed) for r in requests])
        return [RolloutResult(request=r, samples=[RolloutSample(
            request_id=r.request_id, index=k, mode=r.mode, prompt_token_ids=[1, 2], completion_token_ids=[3, 4],
            logprobs=[-0.5, -0.5], text=str(k), answer=str(k), finish_reason="stop", truncated=False,
            policy_version=self.version) for k in range(r.n)], worker_id=0, policy_version=self.version)
            for r in requests]

    def sync_lora(self, version, path):
        self.version = version
        return 0.0

    def shutdown(self, timeout=60.0):
        pass


class SleepingLearner:
    """An update that sleeps `seconds`; records each batch's samples."""

    def __init__(self, seconds: float):
        self.seconds, self.version, self.batches = seconds, 0, []

    def resolve_sync_kind(self, kind="auto"):
        return "adapter"

    def sync_payload(self, kind="auto", adapter_dir=None, **_):
        return "adapter", adapter_dir

    def step(self, samples):
        time.sleep(self.seconds)
        self.batches.append(samples)
        self.version += 1
        return {"loss": 0.0}

    def save_state(self, path):
        torch.save({"version": self.version}, Path(path) / "learner.pt")

    def load_state(self, path):
        self.version = torch.load(Path(path) / "learner.pt")["version"]

    def close(self):
        pass
