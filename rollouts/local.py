"""The pool's interface over one backend in this process, without Ray: what `rl-eval`, notebooks and fast tests of
the trainer use (`Trainer(pool=LocalPool(FakeBackend(ckpt)))`)."""

from __future__ import annotations

import shutil
import time
from typing import Iterable, Iterator

from .backend import RolloutBackend
from .streams import IdleClock, MergedStream
from .transfer import Member
from .types import RolloutRequest, RolloutResult, in_request_order


class LocalPool:
    def __init__(self, backend: RolloutBackend):
        self.backend = backend
        self._owned: str | None = None  # the staging folder of the latest sync, when handed over
        self._stream: MergedStream | None = None
        self.clock = IdleClock()

    def stream(self, requests: list[RolloutRequest], tick: float | None = None) -> Iterator[RolloutResult | None]:
        """As `RolloutPool.stream`: results as they finish; with `tick`, None after that many seconds without one,
        and no end until closed. `extend` adds requests to the latest stream."""
        self._stream = MergedStream(self.backend.abort, tick, self.clock)
        self.extend(requests)
        return self._stream

    def extend(self, requests: list[RolloutRequest]) -> None:
        if self._stream is None or self._stream.closed:
            raise RuntimeError("no stream is running to extend")
        if requests:
            self._stream.add(requests, self.backend.stream(requests))

    def idle_shares(self) -> list[float]:
        """The share of the time since the last call that the backend held no request (one worker)."""
        return [self.clock.read()]

    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        return in_request_order(requests, self.stream(requests))

    def abort(self, request_ids: Iterable[str]) -> list[str]:
        """As `RolloutPool.abort`: the requests of the running stream not yet yielded (finished ones waiting in it
        included), which it will never yield; the backend drops those still running."""
        if self._stream is None:
            return self.backend.abort(request_ids)
        cancelled = self._stream.cancel(list(request_ids))
        self.backend.abort(cancelled)
        return cancelled

    def interrupt(self, request_ids: Iterable[str]) -> list[str]:
        """As `RolloutPool.interrupt`: the backend stops them, and the running stream yields them, `partial`."""
        return self.backend.interrupt(request_ids)

    def versions(self) -> list[int]:
        return [self.backend.version()]

    def single_node(self) -> bool:
        return True

    def sync_weights(self, version: int, weights: Iterable | None = None, path: str | None = None,
                     transport: str = "auto", owned: bool = False) -> float:
        """As `RolloutPool.sync_weights`: an `owned` folder is deleted once a newer version is loaded."""
        start = time.perf_counter()
        self.backend.load_weights(version, weights=weights, path=path)
        previous, self._owned = self._owned, (str(path) if owned and path is not None else None)
        if previous and previous != self._owned:
            shutil.rmtree(previous, ignore_errors=True)
        return time.perf_counter() - start

    def members(self) -> list[Member]:
        """The backend as the one member of a weight-transfer group (`rollouts.transfer`), called in this process."""
        return [Member(self.backend, getattr(self.backend, "worker_id", 0), 0)]

    def model_dtype(self) -> str | None:
        return self.backend.model_dtype()

    def transferred(self, version: int) -> None:
        """As `RolloutPool.transferred`."""
        if self.backend.version() != version:
            raise RuntimeError(f"the worker reports policy version {self.backend.version()} after syncing {version}")
        if self._owned:
            shutil.rmtree(self._owned, ignore_errors=True)
            self._owned = None

    def sync_lora(self, version: int, adapter_path: str) -> float:
        start = time.perf_counter()
        self.backend.load_lora(version, adapter_path)
        return time.perf_counter() - start

    def shutdown(self, timeout: float = 60.0) -> None:
        if self._owned:
            shutil.rmtree(self._owned, ignore_errors=True)
            self._owned = None
        self.backend.shutdown(timeout)
