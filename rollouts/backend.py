"""The contract a rollout backend keeps: every method the pool, the trainer and `rl-eval` call on one, and the name
table `rollout.backend` reads (`BACKENDS`, `backend_class`).

`rollouts.vllm.worker.RolloutWorker` (vLLM) is the implementation; `rollouts.fake.FakeBackend` is an in-process
stand-in for fast tests. A new engine (SGLang, a remote server) implements this and is named by `rollout.backend`
(its `module:Class`, or a name added to `BACKENDS`), or passed to `RolloutPool(backend=...)` or `LocalPool(...)`;
nothing else changes.

Start: the constructor, `Backend(ckpt, worker_id=0, mode_sampling=..., seed=0, max_model_len=..., dtype=...,
enable_lora=False, max_lora_rank=16, owner=None, **engine_options)`. The pool builds each backend as a Ray actor
that serves several calls at once (`abort` and `version` arrive while `stream` runs), so every method must be
callable from any thread.
"""

from __future__ import annotations

import importlib
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
        rest go on). An aborted request is never yielded; an interrupted one is, `partial`; the stream ends when
        every request is yielded or aborted. Closing the iterator early aborts what is still running. A request
        with `resume` (a partial rollout) keeps its finished samples and continues the cut-off ones from their last
        token."""

    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        """`stream`, collected in request order."""

    def abort(self, request_ids: Iterable[str]) -> list[str]:
        """Cancel requests still in flight (their partial samples are discarded, the engine frees their memory);
        returns the ids that were cancelled (finished or unknown ids are left alone)."""

    def interrupt(self, request_ids: Iterable[str]) -> list[str]:
        """Stop requests still in flight and keep what they drew: each comes back through its stream with
        `partial=True`, its finished samples whole and the others cut off (finish_reason `INTERRUPTED`) with their
        tokens, the engine's log-probs and versions so far; `rollouts.types.resumed` makes the request that goes on
        from there. Returns the ids interrupted (finished or unknown ids are left alone)."""

    def load_weights(self, version: int, weights: Iterable | None = None, path: str | None = None) -> int:
        """Full weights, as (name, tensor) pairs or a safetensors directory, once no request is in flight."""

    def load_lora(self, version: int, adapter_path: str) -> int:
        """A PEFT adapter directory on top of the base weights (read before this returns)."""

    def unload_lora(self, version: int) -> int:
        """Back to the base weights."""

    def load_shared_weights(self, version: int, triples) -> int:
        """Full weights as `rollouts.weights.to_shared` triples (numpy arrays through Ray's object store)."""

    # ---- in-memory weight transfer (`rollouts.transfer`; the sender calls these through `PoolClient`) ----
    def transfer_init(self, init_info: dict) -> None:
        """Join the sender's broadcast group at ranks `init_info["rank_offset"]`... (one per engine process);
        blocks until the group is complete; leaves a group joined before."""

    def transfer_start(self) -> None:
        """An update begins (no request runs until it is finished)."""

    def transfer_update(self, update_info: dict) -> None:
        """Receive the update's buckets (`rollouts.transfer.receive_buckets`) as the sender broadcasts them."""

    def transfer_finish(self, version: int) -> list[dict | None]:
        """Serve `version`; per engine process, {"names": [...], "checksums": [...]} of what it received."""

    def transfer_close(self) -> None:
        """Leave the group."""

    def model_dtype(self) -> str | None:
        """The dtype the engine holds its weights in (what a transfer sends); None: any."""

    def pid(self) -> int:
        """The process the backend runs in (a test kills it to stand for a lost worker)."""

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the engine and free what it holds; idempotent."""


BACKENDS = {"vllm": "rollouts.vllm.worker:RolloutWorker", "fake": "rollouts.fake:FakeBackend"}
"""`rollout.backend` names -> `module:Class` (verl's rollout name table)."""


def backend_class(name: str) -> type:
    """The class `rollout.backend` names: a key of `BACKENDS`, or a `module:Class` path of one's own."""
    path = BACKENDS.get(name, name)
    module, sep, cls = path.partition(":")
    if not sep or not module or not cls:
        raise ValueError(f"rollout.backend={name!r}: expected one of {sorted(BACKENDS)} or a 'module:Class' path")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"rollout.backend={name!r}: cannot import {path} ({e})") from e
