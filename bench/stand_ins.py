"""Stand-ins for the two sides of a step that sleep instead of computing: a rollout pool and a learner. With them,
the one-step-off loop's overlap is measured without the two sides sharing a CPU (bench/overlap.py, tests/rl)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import torch

from rollouts.streams import MergedStream
from rollouts.types import RolloutResult, RolloutSample, in_request_order


class SleepingPool:
    """Answers each request with n samples after `seconds` of sleep (no CPU), drawn by the version it holds when the
    request starts. tail=(share, factor): a hybrid length mix instead, each group `factor` times longer with
    probability `share` (seeded by the request's seed, so every loop sees the same group take the same time).
    slots: how many groups run at once (an engine's batch; None: no limit); a group waits for a free slot.
    `generate` answers a call once its last group is done; `stream` as each finishes, and `extend` adds to it."""

    def __init__(self, seconds: float, tail: tuple[float, float] | None = None, slots: int | None = None):
        self.seconds, self.version, self.drawn, self.tail = seconds, 0, [], tail
        self.slots = threading.BoundedSemaphore(slots) if slots else None
        self._stream: MergedStream | None = None
        self._aborted: set[str] = set()

    def group_seconds(self, request) -> float:
        if self.tail is None:
            return self.seconds
        share, factor = self.tail
        return self.seconds * (factor if random.Random(request.seed).random() < share else 1.0)

    def _run(self, request) -> RolloutResult:
        if self.slots is not None:
            self.slots.acquire()
        try:
            version = self.version
            time.sleep(self.group_seconds(request))
        finally:
            if self.slots is not None:
                self.slots.release()
        return RolloutResult(request=request, samples=[RolloutSample(
            request_id=request.request_id, index=k, mode=request.mode, prompt_token_ids=[1, 2],
            completion_token_ids=[3, 4], logprobs=[-0.5, -0.5], text=str(k), answer=str(k), finish_reason="stop",
            truncated=False, policy_version=version) for k in range(request.n)], worker_id=0, policy_version=version)

    def generate(self, requests):
        return in_request_order(requests, self.stream(requests))

    def stream(self, requests, tick: float | None = None):
        self._stream = MergedStream(self.abort, tick)
        self.extend(requests)
        return self._stream

    def extend(self, requests):
        self.drawn.append([(r.meta["id"], r.seed) for r in requests])
        for request in requests:
            self._stream.add([request], self._one(request))

    def _one(self, request):
        result = self._run(request)
        if request.request_id not in self._aborted:
            yield result

    def abort(self, request_ids):
        self._aborted |= set(request_ids)
        return list(request_ids)

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
