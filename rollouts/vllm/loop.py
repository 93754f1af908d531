"""One thread that owns a vLLM engine and keeps every request it holds in one continuous batch.

`LLM.generate` adds a batch and steps the engine until that batch is done: nothing joins the batch while it runs,
and nothing comes back before its longest request finishes. Here a thread of its own builds the `LLM`, then loops:
it takes requests as they are added (from any thread), steps the engine, and hands each request back the moment it
finishes (a group of n samples is one request: vLLM's FINAL_ONLY output holds all n). Aborts free the engine's
memory for that request at the next step; an interrupt is an abort that first reads what each request drew (its
tokens and log-probs so far), so that it can go on later from there (a partial rollout). Control calls (weight and
adapter loads, cache resets, shutdown) run in the same thread once no request is in flight, so they never see a
half-sampled batch; an in-flight call (`call(fn, in_flight=True)`: a weight update of the fully asynchronous loop)
runs between two engine steps instead, the requests in flight kept, and may hold the engine (no step) until a later
call releases it, so that a weight transfer in several calls is never stepped on half-loaded.

Why this and not vLLM's AsyncLLM: AsyncLLM always runs the engine core in another process (slow start-up on CPU,
no in-process model for the in-memory weight path), while `LLMEngine.step()` drives either engine, in-process or
multiprocess, the same way; so the CPU tests take the GPU's path. Why one owning thread: the engine is not
thread-safe, and on CPU vLLM binds the OpenMP threads of the thread that builds it, so the model runs there.

A failed engine step (vLLM rejected something only once it ran) aborts what was in flight and runs those requests
again in halves, one half at a time, bisecting to the request that fails alone: only that one fails, and the rest
keep running in batches (16 requests with one bad one: 5 failed steps, not a solo run of every request). A request
that failed alone is tried once more alone. Requests added meanwhile wait for the retries.

A dead engine is not retried: vLLM's multiprocess engine core that died (killed by the OOM killer, a driver fault:
vLLM's monitor marks the client dead, but a step already waiting for its output waits forever), an `EngineDeadError`
from a step or a control call, or a step that runs longer than `stall_timeout_s` (a hung core). A watchdog thread
sees the first and the last while a step blocks. The loop then stops and calls `on_dead(reason)` first: the rollout
worker, as a Ray actor, ends its process there, so the pool replaces it and resubmits its requests as for a killed
actor. Otherwise (a worker in the caller's own process) everything the loop holds, and every later call, fails with
`EngineLost`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

ABORTED = object()
"""Put on a request's queue instead of its output when it was aborted."""


@dataclass
class Interrupted:
    """Put on a request's queue instead of its output when it was interrupted (`EngineLoop.interrupt`): what the
    capture read of it just before the abort (None: it was not in the engine yet)."""
    drawn: Any = None


class EngineLost(RuntimeError):
    """The engine is dead or stalled: nothing it held will come back."""


def engine_dead(llm) -> bool:
    """vLLM's own signal that a multiprocess engine core has died (its monitor thread sets it); False in-process."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    return bool(getattr(getattr(core, "resources", None), "engine_dead", False))


def is_dead_error(error: BaseException) -> bool:
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - vLLM is a dependency
        return False
    return isinstance(error, EngineDeadError)


@dataclass
class EngineItem:
    """One request for the engine: `out` receives (key, RequestOutput | ABORTED | the exception that failed it)."""
    key: str
    prompt: dict
    params: Any
    out: queue.Queue
    retry: bool = False
    """Run again after a failed step (its part of the batch is being bisected)."""


class EngineLoop:
    def __init__(self, build: Callable[[], Any], add: Callable[[Any, EngineItem], None], name: str = "engine-loop",
                 stall_timeout_s: float | None = None, on_dead: Callable[[str], None] | None = None,
                 watch_every_s: float = 1.0):
        """build(): the `LLM`, called in the loop's thread; add(llm, item): adds one item to the engine under
        `item.key` (`rollouts.vllm.engine.add_request`). Raises what `build` raised. stall_timeout_s: a step
        running longer is a hung engine (None: no limit); on_dead(reason): called once when the engine is lost."""
        self._add_fn = add
        self.stall_timeout_s, self.on_dead, self.lost = stall_timeout_s, on_dead, None
        self._step_started: float | None = None  # monotonic time of the step running now
        self._lost_once = threading.Lock()
        self._commands: queue.Queue = queue.Queue()
        self._inflight: dict[str, EngineItem] = {}
        self._waiting: deque[EngineItem] = deque()  # added while retries run, or while a control call drains
        self._draining = False  # a control call waits for an idle engine: requests added meanwhile wait for it
        self._retry: deque[list[EngineItem]] = deque()  # parts of a failed step's batch, to run one after another
        self._deferred: list[tuple[Callable, Future]] = []  # control calls waiting for an idle engine
        self._held = False  # no engine step until an in-flight call releases it (requests kept meanwhile)
        self._keys = itertools.count()
        self._closed = False
        self.llm = None
        started: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(build, started), name=name, daemon=True)
        self._thread.start()
        self.llm = started.result()
        self._watchdog = threading.Thread(target=self._watch, args=(watch_every_s,), name=f"{name}-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # ---- any thread ----
    def new_key(self, request_id: str) -> str:
        """An engine request id for `request_id`, unique for the engine's life (a request id may come again)."""
        return f"{request_id}@{next(self._keys)}"

    def add(self, items: list[EngineItem]) -> None:
        self._command("add", items)

    def abort(self, keys: list[str]) -> list[str]:
        """The keys that were still in flight or queued, now cancelled (each gets ABORTED on its queue)."""
        return self._command("abort", list(keys)).result()

    def interrupt(self, keys: list[str], capture: Callable[[Any, set[str]], dict]) -> list[str]:
        """As `abort`, but each cancelled request gets `Interrupted(capture(llm, keys in the engine)[key])` on its
        queue: capture reads, between two engine steps, what the requests drew before they go."""
        return self._command("abort", (list(keys), capture)).result()

    def call(self, fn: Callable[[], Any], in_flight: bool = False, hold: bool | None = None) -> Any:
        """fn() in the loop's thread once no request is in flight; its value, or what it raised. Requests added
        while it waits are held until it ran, so a continuous stream of them (the fully async producer's) cannot
        starve it: the engine drains, fn runs, they start. in_flight: between two engine steps instead, the requests in flight kept (their later tokens come from
        whatever fn changed). hold (in-flight calls only): True, no engine step runs after fn until a call with
        hold=False (a transfer's start ... finish); False, steps resume after fn; None, as it was. A call that
        raises releases the hold."""
        if hold is not None and not in_flight:
            raise ValueError("hold= is for in-flight calls")
        return self._command("now" if in_flight else "call", (fn, hold) if in_flight else fn).result()

    def close(self, fn: Callable[[], Any]) -> None:
        """Abort everything (their queues get a RuntimeError), run fn() (the engine's shutdown), stop the thread."""
        if not self._closed and self._thread.is_alive():
            self._command("close", fn).result()
        self._thread.join(timeout=5)

    def _command(self, kind: str, payload: Any) -> Future:
        if self.lost is not None:
            raise EngineLost(self.lost)
        if self._closed:
            raise RuntimeError("the rollout engine was shut down")
        done: Future = Future()
        self._commands.put((kind, payload, done))
        return done

    # ---- the loop's thread (from a control call) ----
    def unfinished(self) -> tuple[set[str], set[str]]:
        """(keys of requests in the engine, keys of requests waiting to be added): called from a control call."""
        queued = {i.key for i in self._waiting} | {i.key for part in self._retry for i in part}
        return set(self._inflight) - queued, queued

    def defer(self, fn: Callable[[], Any]) -> None:
        """fn() once no request is in flight, after the control call that asks for it."""
        self._deferred.append((fn, Future()))

    # ---- the loop's thread ----
    def _run(self, build: Callable[[], Any], started: Future) -> None:
        try:
            self.llm = build()
        except BaseException as e:  # noqa: BLE001 - raised in the constructor's thread
            started.set_exception(e)
            return
        started.set_result(self.llm)
        while not self._closed:
            drained = not (self._inflight or self._retry)
            if drained and self._deferred:
                self._run_deferred()
                continue
            self._take(block=(drained and not self._waiting) or self._held)
            if self._closed:
                break
            if self._held:
                continue
            if not self._inflight and self._retry:
                for item in self._retry.popleft():
                    self._start(item)
            elif not self._inflight and self._waiting and not self._draining:
                while self._waiting:
                    self._start(self._waiting.popleft())
            if self._inflight:
                self._step()

    def _take(self, block: bool) -> None:
        """Every command queued now (waiting for the first one when `block`)."""
        try:
            command = self._commands.get(block=block)
        except queue.Empty:
            return
        while True:
            self._handle(*command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, payload: Any, done: Future) -> None:
        if kind == "add":
            retrying = bool(self._retry) or any(i.retry for i in self._inflight.values())
            for item in payload:
                if retrying or self._draining:  # not before the control call that waits (no starving it)
                    self._waiting.append(item)
                else:
                    self._start(item)
            done.set_result(None)
        elif kind == "abort":
            keys, capture = payload if isinstance(payload, tuple) else (payload, None)
            done.set_result(self._abort(set(keys), capture))
        elif kind == "call":
            self._deferred.append((payload, done))
            self._draining = True
        elif kind == "now":
            fn, hold = payload
            if self._run_call(fn, done):
                self._held = self._held if hold is None else hold
            else:
                self._held = False
        elif kind == "close":
            self._shutdown(payload, done)

    def _start(self, item: EngineItem) -> None:
        try:
            self._add_fn(self.llm, item)
        except Exception as e:  # noqa: BLE001 - the request fails alone (a prompt vLLM rejects when adding it)
            if is_dead_error(e) or engine_dead(self.llm):
                item.out.put((item.key, EngineLost(f"the vLLM engine died ({type(e).__name__}: {e})")))
                self._lose(f"the vLLM engine died ({type(e).__name__}: {e})")
                return
            item.out.put((item.key, e))
            return
        self._inflight[item.key] = item

    # ---- liveness ----
    def _watch(self, every: float) -> None:
        """While a step runs: the core dead (vLLM's flag) or the step past `stall_timeout_s` -> the engine is lost
        (the step itself may never return)."""
        while not self._closed and self.lost is None:
            time.sleep(every)
            started = self._step_started
            if started is None:
                continue
            if engine_dead(self.llm):
                self._lose("the vLLM engine core died (its process exited)")
            elif self.stall_timeout_s is not None and time.monotonic() - started > self.stall_timeout_s:
                self._lose(f"an engine step has run for over rollout.stall_timeout_s={self.stall_timeout_s:g} s "
                           "(a hung engine core)")

    def _lose(self, reason: str) -> None:
        """Once: everything held fails with EngineLost, later calls raise it, and `on_dead` is told."""
        with self._lost_once:
            if self.lost is not None:
                return
            self.lost = reason
        self._closed = True
        if self.on_dead is not None:  # first: a worker that is an actor ends its process here, before any of its
            self.on_dead(reason)  # requests could come back failed (the pool resubmits them to its replacement)
        error = EngineLost(reason)
        for item in [*self._inflight.values(), *self._waiting, *(i for part in self._retry for i in part)]:
            item.out.put((item.key, error))
        for _, waiting in self._deferred:
            if not waiting.done():
                waiting.set_exception(error)
        while True:
            try:
                _, _, late = self._commands.get_nowait()
            except queue.Empty:
                break
            late.set_exception(error)

    def _step(self) -> None:
        engine = self.llm.llm_engine
        self._step_started = time.monotonic()
        try:
            outputs = engine.step()
        except Exception as e:  # noqa: BLE001 - see the module docstring
            if is_dead_error(e) or engine_dead(self.llm):
                self._lose(f"the vLLM engine died ({type(e).__name__}: {e})")
                return
            items = list(self._inflight.values())
            self._inflight.clear()
            self._abort_everything()
            if len(items) == 1 and items[0].retry:  # it fails alone
                items[0].out.put((items[0].key, e))
                return
            half = (len(items) + 1) // 2
            for item in items:
                item.retry = True
            self._retry.extendleft(reversed([part for part in (items[:half], items[half:]) if part]))
            return
        finally:
            self._step_started = None
        for output in outputs:
            if output.finished:
                item = self._inflight.pop(output.request_id, None)
                if item is not None:
                    item.out.put((item.key, output))

    def _abort_everything(self) -> None:
        """Whatever the engine still holds after a failed step (its states of every request)."""
        engine = self.llm.llm_engine
        ids = list(engine.output_processor.request_states)
        if ids:
            engine.abort_request(ids, internal=True)

    def _abort(self, keys: set[str], capture: Callable[[Any, set[str]], dict] | None = None) -> list[str]:
        live = [k for k in keys if k in self._inflight]
        drawn = capture(self.llm, set(live)) if capture is not None and live else {}
        if live:
            self.llm.llm_engine.abort_request(live, internal=False)  # a group's n samples go together
        cancelled = [self._inflight.pop(k) for k in live]
        kept = [i for i in self._waiting if i.key not in keys]
        cancelled += [i for i in self._waiting if i.key in keys]
        self._waiting = deque(kept)
        parts = [[i for i in part if i.key not in keys] for part in self._retry]
        cancelled += [i for part in self._retry for i in part if i.key in keys]
        self._retry = deque(part for part in parts if part)
        for item in cancelled:
            item.out.put((item.key, ABORTED if capture is None else Interrupted(drawn.get(item.key))))
        return [i.key for i in cancelled]

    def _run_deferred(self) -> None:
        calls, self._deferred, self._draining = self._deferred, [], False
        for fn, done in calls:
            if done.done():  # failed by _lose meanwhile
                continue
            if not self._run_call(fn, done) and self.lost is not None:
                return

    def _run_call(self, fn: Callable[[], Any], done: Future) -> bool:
        """fn() into `done`; whether it returned."""
        try:
            done.set_result(fn())
            return True
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            if is_dead_error(e) or engine_dead(self.llm):  # a weight load on a dead engine: the engine is lost
                done.set_exception(EngineLost(f"the vLLM engine died ({type(e).__name__}: {e})"))
                self._lose(f"the vLLM engine died ({type(e).__name__}: {e})")
            else:
                done.set_exception(e)
            return False

    def _shutdown(self, fn: Callable[[], Any], done: Future) -> None:
        self._closed = True
        gone = RuntimeError("the rollout engine was shut down")
        for item in [*self._inflight.values(), *self._waiting, *(i for part in self._retry for i in part)]:
            item.out.put((item.key, gone))
        self._inflight.clear(), self._waiting.clear(), self._retry.clear()
        for _, waiting in self._deferred:
            waiting.set_exception(gone)
        self._deferred = []
        try:
            done.set_result(fn())
        except BaseException as e:  # noqa: BLE001
            done.set_exception(e)
        while True:  # commands that raced with the close
            try:
                _, _, late = self._commands.get_nowait()
            except queue.Empty:
                break
            late.set_exception(gone)
