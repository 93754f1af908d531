"""A process pool that runs untrusted-input code with a wall-clock limit per call and a memory bound per worker.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one hung task (a stuck worker blocks its slot
forever) and signal-based timeouts (`signal.alarm`) only work on a main thread and cannot interrupt a long C call
such as a huge integer power. Here each worker is a process with its own pipe; a call that passes its deadline gets
its worker killed (SIGKILL) and replaced, and the row gets `error="timeout ..."`; a worker that dies (segfault,
out-of-memory kill) is replaced and the row gets `error="worker died ..."`. The rest of the batch goes on.

Memory: each worker sets RLIMIT_AS (address space) to `memory_mb`, so a runaway allocation raises MemoryError in
the worker instead of taking the machine down.

Processes: each worker leads its own session and process group (`os.setsid`), and every kill (timeout, worker death,
too many processes, recycling, `close()`) is a SIGKILL to the whole group, so the subprocesses and forked
children that a plugin starts die with their worker. While `map` runs, the caller counts the processes below each
worker (/proc, every 0.1 s); past `max_processes` the running call fails (an idle worker is just replaced) and the
group is killed. A tight fork loop can overshoot the bound for that 0.1 s; a hard kernel bound needs a cgroup
(`pids.max`, or the container's pids limit). RLIMIT_NPROC is not used: it counts all the processes and threads of
the user (the trainer's included), so a low value fails at random and a high one bounds nothing, and root ignores
it. Each worker forks a small guard into its group that kills the group when the worker or the caller (the trainer)
dies, even by SIGKILL, so no worker or child outlives them. PR_SET_PDEATHSIG alone would not do: it follows the
thread that started the worker (the fork server here, or a short-lived thread), and it would kill only the worker,
leaving its children.

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

from core.process import alive, descendants, start_time


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
    max_processes: int | None = 64
    """Processes that may run below a worker at once (a plugin's children and theirs; Linux /proc); past it the call
    fails and the worker's process group is killed. None: no bound (the group is still killed with the worker)."""


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


_POLL_S = 0.1
"""How often `map` counts the processes below each worker; the guards check who is alive every 5 x this."""


def _guard(worker_pid: int, caller_pid: int, caller_start: str | None) -> None:
    """Runs in a process forked by the worker, in the worker's group: when the worker or the caller dies (even by
    SIGKILL, which no handler sees), SIGKILL the whole group. Polling, not signals, so it needs no ctypes and works
    whatever thread or process started the worker."""
    try:
        while os.getppid() == worker_pid and alive(caller_pid, caller_start):
            time.sleep(5 * _POLL_S)
        os.killpg(0, signal.SIGKILL)  # the worker, the plugin's processes and this guard
    finally:
        os._exit(0)


def _start_guard(caller_pid: int) -> None:
    caller_start = start_time(caller_pid)
    worker_pid = os.getpid()
    if os.fork() == 0:
        try:
            # Hold none of the worker's files: the caller must see EOF on the worker's pipe (and, for the fork and
            # spawn start methods, on its exit sentinel) as soon as the worker dies.
            os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        finally:
            _guard(worker_pid, caller_pid, caller_start)


def _count_below(pid: int) -> int | None:
    """Processes below `pid` (children, their children, ...; zombies included); None where /proc has no such lists
    (not Linux, or a kernel without CONFIG_PROC_CHILDREN)."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return None
    return len(descendants(pid))


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (a worker, its guard, its plugin's processes), if it exists."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # no such group (the worker had not reached setsid, or all gone)
        pass


def _worker_main(conn: multiprocessing.connection.Connection, memory_mb: int | None, sys_path: list[str],
                 caller_pid: int | None = None) -> None:
    """Worker loop: receive (task_id, pickled (fn, args)), run, send (task_id, value, error, seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if hasattr(os, "setsid"):
        os.setsid()  # lead a new process group: a kill of the group reaches everything the plugin starts
        if caller_pid is not None:
            _start_guard(caller_pid)
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
        self.process = ctx.Process(target=_worker_main, args=(child, memory_mb, list(sys.path), os.getpid()),
                                   daemon=True, name="reward-sandbox-worker")
        with _without_main_module():
            self.process.start()
        child.close()
        self.calls = 0

    def kill(self) -> None:
        """SIGKILL the worker's process group (the worker, its guard, whatever the plugin started), then reap it.

        Also when the worker has exited already: its group lives on while a process of the plugin is in it, and
        no new process can take the group's id meanwhile; an empty group's id is free only once the pid counter
        wraps around."""
        _kill_group(self.process.pid)
        try:
            self.process.kill()  # if it had not reached setsid yet
        except Exception:
            pass
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit, then kill its group (what it leaves behind, or the worker if it did not exit)."""
        try:
            self.conn.send(None)
        except Exception:
            pass
        self.process.join(timeout=1)
        self.kill()


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
            bound = self.config.max_processes
            next_count = time.monotonic() + _POLL_S
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
                wake = min(deadline for _, _, deadline in busy.values())
                if bound is not None:
                    wake = min(wake, next_count)
                wait_s = max(0.0, wake - time.monotonic())
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
                if bound is not None and now >= next_count:
                    next_count = now + _POLL_S
                    for worker in list(self._workers):
                        below = _count_below(worker.process.pid)
                        if below is None:  # no /proc children lists here: no bound
                            bound = None
                            break
                        if below - 1 <= bound:  # - 1: the worker's guard
                            continue
                        if worker in busy:
                            row, started, _ = busy.pop(worker)
                            results[row] = Result(None, f"too many processes: {below - 1} running below the worker "
                                                        f"(max_processes={bound}; worker killed)", now - started)
                        self._replace(worker, kill=True)  # an idle one: what an earlier call left running
                        self.restarts += 1
                for worker, (row, started, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[worker]
                        results[row] = Result(None, f"timeout: no result within {timeout:g} s (worker killed)",
                                              now - started)
                        self._replace(worker, kill=True)
                        self.restarts += 1
        return results  # type: ignore[return-value]
