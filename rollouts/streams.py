"""Result streams that grow while they run, and how long a worker had nothing to do.

`MergedStream`: several blocking result streams as one, in completion order, each part iterated by a thread of its
own; `add` joins a part while the stream runs (`LocalPool.extend`, the bench's stand-ins). With a `tick`, the
stream yields None when no result came within that many seconds and never ends by itself (`close` ends it), so
its reader can act between results: the fully async producer submits new prompts while a long group still runs.

`IdleClock`: the share of wall time a worker held no request, between two readings (`RolloutPool.idle_shares`)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from .types import RolloutRequest, RolloutResult


class MergedStream:
    def __init__(self, abort: Callable[[list[str]], Any], tick: float | None = None,
                 clock: "IdleClock | None" = None):
        """abort(ids): cancels requests not yet returned (the backend's), called by `close`. clock: told of each
        request added and each returned or aborted."""
        self._abort, self.tick, self.clock = abort, tick, clock
        self._queue: queue.Queue = queue.Queue()
        self._parts = 0  # parts whose thread still runs
        self.open: set[str] = set()  # request ids added and not yet yielded
        self.closed = False

    def add(self, requests: list[RolloutRequest], part: Iterable[RolloutResult]) -> None:
        """Join `part`, the stream of `requests` (from the reader's thread)."""
        if self.closed:
            raise RuntimeError("the stream was closed")
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids) or self.open & set(ids):
            raise ValueError("request_id values must be unique among the requests of a running stream")
        self.open |= set(ids)
        if self.clock is not None:
            self.clock.busy(len(ids))
        self._parts += 1
        threading.Thread(target=self._drain, args=(part,), name="stream-part", daemon=True).start()

    def _drain(self, part: Iterable[RolloutResult]) -> None:
        try:
            for result in part:
                self._queue.put(("result", result))
        except BaseException as e:  # noqa: BLE001 - raised in the reader's thread
            self._queue.put(("error", e))
        finally:
            self._queue.put(("done", None))

    def __iter__(self) -> Iterator[RolloutResult | None]:
        return self

    def __next__(self) -> RolloutResult | None:
        while self._parts or (self.tick is not None and not self.closed):
            try:
                kind, value = self._queue.get(timeout=self.tick)
            except queue.Empty:
                return None
            if kind == "done":
                self._parts -= 1
            elif kind == "error":
                self.close()
                raise value
            elif value.request.request_id in self.open:  # (not one aborted after it finished)
                self.open.discard(value.request.request_id)
                if self.clock is not None:
                    self.clock.free()
                return value
        raise StopIteration

    def cancel(self, request_ids) -> list[str]:
        """Of `request_ids`, those not yet yielded: never yielded now (finished and queued, or still running: the
        caller tells the backend). Returns them."""
        mine = [i for i in request_ids if i in self.open]
        self.open -= set(mine)
        if self.clock is not None and mine:
            self.clock.free(len(mine))
        return mine

    def close(self) -> None:
        """Abort what is still running; the stream ends."""
        self.closed = True
        if self.open:
            left, self.open = list(self.open), set()
            if self.clock is not None:
                self.clock.free(len(left))
            self._abort(left)


class IdleClock:
    """Wall time with no request held, between readings (thread-safe: the pool's stream and the trainer read it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held = 0
        self._idle_since: float | None = time.monotonic()
        self._idle = 0.0
        self._read_at = time.monotonic()

    def busy(self, count: int = 1) -> None:
        with self._lock:
            if self._held == 0 and self._idle_since is not None:
                self._idle += time.monotonic() - self._idle_since
                self._idle_since = None
            self._held += count

    def free(self, count: int = 1) -> None:
        with self._lock:
            self._held = max(0, self._held - count)
            if self._held == 0 and self._idle_since is None:
                self._idle_since = time.monotonic()

    def read(self) -> float:
        """The share of the time since the last reading (or the start) with nothing held."""
        with self._lock:
            now = time.monotonic()
            idle = self._idle + (now - self._idle_since if self._idle_since is not None else 0.0)
            span = now - self._read_at
            self._idle, self._read_at = 0.0, now
            if self._idle_since is not None:
                self._idle_since = now
            return idle / span if span > 0 else 0.0
