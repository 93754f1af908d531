"""A process pool that runs untrusted-input code with a wall-clock limit per call and a memory bound per worker.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one hung task (a stuck worker blocks its slot
forever) and signal-based timeouts (`signal.alarm`) only work on a main thread and cannot interrupt a long C call
such as a huge integer power. Here each worker is a process with its own pipe; a call that passes its deadline gets
its worker killed (SIGKILL) and replaced, and the row gets `error="timeout ..."`; a worker that dies (segfault,
out-of-memory kill) is replaced and the row gets `error="worker died ..."`. The rest of the batch goes on.

Memory: each worker sets RLIMIT_AS (address space) to `memory_mb`, so a runaway allocation raises MemoryError in
the worker instead of taking the machine down.

Start method: `forkserver` by default: workers fork from a small clean server process, never from the caller
(a trainer holding CUDA contexts, threads or a vLLM engine, which must not be forked). The server imports the
`preload` modules once, so a replacement worker starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import multiprocessing.spawn
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence


@dataclass(frozen=True)
class SandboxConfig:
    """Sandbox settings."""

    workers: int = 2
    """Worker processes (calls run in parallel, one per worker)."""
    timeout_s: float = 10.0
    """Wall-clock limit of one call, from dispatch to result; past it the worker is killed and replaced."""
    memory_mb: int | None = 4096
    """RLIMIT_AS of each worker in MiB (virtual address space, not resident memory); None: no bound."""
    start_method: str = "forkserver"
    """`forkserver` (safe beside CUDA/threads), `spawn` (slowest start), or `fork` (fast, unsafe in a trainer)."""
    preload: tuple[str, ...] = ("rewards.math", "rewards.choice", "rewards.text")
    """Modules the fork server imports once so that new workers start warm."""
    max_calls_per_worker: int | None = 5000
    """Recycle a worker after this many calls (bounds leaks and caches in long runs); None: never."""


class Result(NamedTuple):
    """One call's outcome: the return value, or None with an error message."""

    value: Any
    error: str | None
    seconds: float


def describe_exception(exc: BaseException) -> str:
    """`Type: message (file:line)`, one line, for an error column."""
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        frame = tb[-1]
        where = f" ({os.path.basename(frame.filename)}:{frame.lineno})"
    message = str(exc).replace("\n", " ")
    if len(message) > 300:
        message = message[:300] + "..."
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def _death_message(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (the out-of-memory killer?)" if name == "SIGKILL" else ""
        return f"worker died: killed by {name}{hint}"
    return f"worker died (exit code {code})"


def _worker_main(conn: multiprocessing.connection.Connection, memory_mb: int | None, sys_path: list[str]) -> None:
    """Worker loop: receive (task_id, pickled (fn, args)), run, send (task_id, value, error, seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    sys.path[:] = sys_path
    if memory_mb is not None:
        import resource

        limit = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if message is None:
            return
        task_id, payload = message
        start = time.perf_counter()
        value, error = None, None
        try:
            fn, args = pickle.loads(payload)
            value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - a plugin's SystemExit or MemoryError is a row error too
            value, error = None, describe_exception(exc)
        seconds = time.perf_counter() - start
        try:
            conn.send((task_id, value, error, seconds))
        except Exception as exc:  # an unpicklable return value
            conn.send((task_id, None, f"result cannot be sent back: {describe_exception(exc)}", seconds))


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Start workers without re-importing the caller's `__main__` (spawn and forkserver children normally run the
    main script again as `__mp_main__`: a trainer script would import torch and vLLM in every worker, or worse,
    run itself if it lacks a `__main__` guard). Workers only need this package and the rewards' own modules."""
    original = multiprocessing.spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
        return data

    with _START_LOCK:
        multiprocessing.spawn.get_preparation_data = without_main  # type: ignore[assignment]
        try:
            yield
        finally:
            multiprocessing.spawn.get_preparation_data = original  # type: ignore[assignment]


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int | None) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.process = ctx.Process(target=_worker_main, args=(child, memory_mb, list(sys.path)), daemon=True,
                                   name="reward-sandbox-worker")
        with _without_main_module():
            self.process.start()
        child.close()
        self.calls = 0

    def kill(self) -> None:
        try:
            self.process.kill()
        except Exception:
            pass
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except Exception:
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class Sandbox:
    """Worker processes with per-call timeouts. Use as a context manager or call `close()`.

    `map(fn, arg_tuples)` returns one `Result(value, error, seconds)` per tuple, in order. `fn` must be picklable by
    reference (a module-level function); the worker imports its module.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        base = config or SandboxConfig()
        self.config = dataclasses.replace(base, **overrides)
        if self.config.workers < 1:
            raise ValueError("workers must be >= 1")
        self._ctx = multiprocessing.get_context(self.config.start_method)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.restarts = 0
        """Workers killed for a timeout or found dead (a metric)."""

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        if self._workers:
            return
        if self.config.start_method == "forkserver" and self.config.preload:
            self._ctx.set_forkserver_preload(list(self.config.preload))
        self._workers = [_Worker(self._ctx, self.config.memory_mb) for _ in range(self.config.workers)]

    def _replace(self, worker: _Worker, kill: bool) -> None:
        if kill:
            worker.kill()
        else:
            worker.stop()
        index = self._workers.index(worker)
        self._workers[index] = _Worker(self._ctx, self.config.memory_mb)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        with self._lock:
            for worker in self._workers:
                worker.stop()
            self._workers = []

    def map(self, fn: Callable[..., Any], arg_tuples: Sequence[tuple], timeout_s: float | None = None) -> list[Result]:
        """Run `fn(*args)` for each args tuple in the workers; one Result per tuple, in order."""
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        results: list[Result | None] = [None] * len(arg_tuples)
        with self._lock:
            self._start()
            pending = deque(enumerate(arg_tuples))
            busy: dict[_Worker, tuple[int, float, float]] = {}  # worker -> (row, started, deadline)
            while pending or busy:
                for worker in list(self._workers):
                    if not pending:
                        break
                    if worker in busy:
                        continue
                    row, args = pending.popleft()
                    try:
                        payload = pickle.dumps((fn, tuple(args)))
                    except Exception as exc:
                        results[row] = Result(None, f"cannot send to a worker: {describe_exception(exc)}", 0.0)
                        continue
                    started = time.monotonic()
                    try:
                        worker.conn.send((row, payload))
                    except (OSError, EOFError):  # died while idle: replace and retry the row
                        self._replace(worker, kill=True)
                        self.restarts += 1
                        pending.appendleft((row, args))
                        continue
                    busy[worker] = (row, started, started + timeout)
                if not busy:
                    continue
                wait_s = max(0.0, min(deadline for _, _, deadline in busy.values()) - time.monotonic())
                by_conn = {worker.conn: worker for worker in busy}
                for conn in multiprocessing.connection.wait(list(by_conn), timeout=wait_s):
                    worker = by_conn[conn]
                    row, started, _ = busy.pop(worker)
                    try:
                        _, value, error, seconds = conn.recv()
                    except (EOFError, OSError):
                        worker.process.join(timeout=1)
                        results[row] = Result(None, _death_message(worker.process.exitcode),
                                              time.monotonic() - started)
                        self._replace(worker, kill=True)
                        self.restarts += 1
                        continue
                    results[row] = Result(value, error, seconds)
                    worker.calls += 1
                    if self.config.max_calls_per_worker and worker.calls >= self.config.max_calls_per_worker:
                        self._replace(worker, kill=False)
                now = time.monotonic()
                for worker, (row, started, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[worker]
                        results[row] = Result(None, f"timeout: no result within {timeout:g} s (worker killed)",
                                              now - started)
                        self._replace(worker, kill=True)
                        self.restarts += 1
        return results  # type: ignore[return-value]
