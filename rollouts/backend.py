"""The contract a rollout backend keeps: what the pool, the trainer and `rl-eval` call on one.

`rollouts.vllm.worker.RolloutWorker` (vLLM) is the implementation; `rollouts.fake.FakeBackend` is an in-process stand-in
for fast tests. A new engine (SGLang, a remote server) implements this and is passed to `RolloutPool(backend=...)`
or `LocalPool(...)`; nothing else changes.

Start: the constructor, `Backend(ckpt, worker_id=0, mode_sampling=..., seed=0, max_model_len=..., dtype=...,
enable_lora=False, max_lora_rank=16, owner=None, **engine_options)`. The pool builds each backend as a Ray actor
that serves several calls at once (`abort` and `version` arrive while `stream` runs), so every method must be
callable from any thread.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, runtime_checkable

from .types import RolloutRequest, RolloutResult


@runtime_checkable
class RolloutBackend(Protocol):
    worker_id: int

    def version(self) -> int:
        """The policy version the backend samples from (0: the checkpoint's weights)."""

    def stream(self, requests: list[RolloutRequest]) -> Iterator[RolloutResult]:
        """Every request exactly once, each the moment its whole group has finished (any order): requests added
        together share the engine's batch. A request that cannot run comes back at once with `error` set (the
        rest go on). An aborted request is never yielded; the stream ends when every request is yielded or
        aborted. Closing the iterator early aborts what is still running."""

    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        """`stream`, collected in request order."""

    def abort(self, request_ids: Iterable[str]) -> list[str]:
        """Cancel requests still in flight (their partial samples are discarded, the engine frees their memory);
        returns the ids that were cancelled (finished or unknown ids are left alone)."""

    def load_weights(self, version: int, weights: Iterable | None = None, path: str | None = None) -> int:
        """Full weights, as (name, tensor) pairs or a safetensors directory, once no request is in flight."""

    def load_lora(self, version: int, adapter_path: str) -> int:
        """A PEFT adapter directory on top of the base weights (read before this returns)."""

    def unload_lora(self, version: int) -> int:
        """Back to the base weights."""

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the engine and free what it holds; idempotent."""
