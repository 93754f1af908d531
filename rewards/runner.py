"""Score a batch of rows with one reward: in the sandbox, in-process, or on an event loop; one Outcome per row.

Where a reward runs:
- sync, `sandbox=True` (the default for built-in verifiers and plugins): in the sandbox's workers, with its time and
  memory limits; per-row rewards one call per row, batched rewards in chunks of `batch_chunk` rows (one limit per
  chunk; a failed chunk fails its rows).
- sync, `sandbox=False` (trusted scorers such as a GPU reward model, or `prob` on trainer tensors): in this process,
  without a time limit; an exception fails the row (batched: the whole batch).
- async: on an event loop in this process, `async_concurrency` calls at a time, each bounded by the sandbox's
  `timeout_s` through `asyncio.wait_for` (cooperative: an async reward must not block the loop).
`in_process=True` runs everything here without limits: for debugging a plugin with a debugger or full tracebacks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .api import Outcome, RewardFn, RewardInput, check_score, get_reward
from .sandbox import Sandbox, SandboxConfig, describe_exception


@dataclass(frozen=True)
class RunnerConfig:
    """How rewards are run."""

    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """The sandbox for sync rewards that need one (its `timeout_s` also bounds async calls)."""
    batch_chunk: int = 64
    """Rows per call of a batched reward that runs in the sandbox."""
    async_concurrency: int = 64
    """Async reward calls in flight at once."""
    in_process: bool = False
    """Run every reward in this process with no time or memory limit (debugging only)."""


_WORKER_CACHE: dict[str, RewardFn] = {}


def _resolve_in_worker(source: str | None, options: dict[str, Any], fn: Callable | None) -> Callable:
    if source is None:
        return fn  # type: ignore[return-value]
    key = f"{source}|{sorted(options.items())!r}"
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = get_reward(source, **options)
    return _WORKER_CACHE[key].fn


def _row_task(source: str | None, options: dict[str, Any], fn: Callable | None, sample: RewardInput) -> float | None:
    """Runs in a worker: one row."""
    return check_score(_resolve_in_worker(source, options, fn)(sample))


def _checked_batch(call: Callable, samples: list[RewardInput]) -> list[tuple[float | None, str | None]]:
    values = list(call(samples))
    if len(values) != len(samples):
        raise ValueError(f"batched reward returned {len(values)} scores for {len(samples)} rows")
    out: list[tuple[float | None, str | None]] = []
    for value in values:
        try:
            out.append((check_score(value), None))
        except (TypeError, ValueError) as exc:
            out.append((None, describe_exception(exc)))
    return out


def _batch_task(source: str | None, options: dict[str, Any], fn: Callable | None,
                samples: list[RewardInput]) -> list[tuple[float | None, str | None]]:
    """Runs in a worker: a chunk of rows of a batched reward."""
    return _checked_batch(_resolve_in_worker(source, options, fn), samples)


class RewardRunner:
    """Runs rewards on batches of rows. Holds one sandbox (started on first use); close it, or use `with`."""

    def __init__(self, config: RunnerConfig | None = None, sandbox: Sandbox | None = None) -> None:
        self.config = config or RunnerConfig()
        self._sandbox = sandbox
        self._own_sandbox = sandbox is None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.config.sandbox)
        return self._sandbox

    def __enter__(self) -> "RewardRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._own_sandbox and self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def score(self, reward: str | Callable | RewardFn, samples: Sequence[RewardInput], **options: Any) -> list[Outcome]:
        """One Outcome per row, in order."""
        fn = get_reward(reward, **options)
        samples = list(samples)
        if not samples:
            return []
        if fn.is_async:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self._score_async(fn, samples))
            raise RuntimeError("an event loop is running: use `await runner.ascore(...)` for async rewards")
        if fn.sandbox and not self.config.in_process:
            return self._score_sandboxed(fn, samples)
        return _score_here(fn, samples)

    async def ascore(self, reward: str | Callable | RewardFn, samples: Sequence[RewardInput],
                     **options: Any) -> list[Outcome]:
        """`score` for callers on an event loop; sync rewards run in a thread so the loop stays free."""
        fn = get_reward(reward, **options)
        if fn.is_async:
            return await self._score_async(fn, list(samples))
        return await asyncio.to_thread(self.score, fn, samples)

    def _score_sandboxed(self, fn: RewardFn, samples: list[RewardInput]) -> list[Outcome]:
        ref = (fn.source, dict(fn.options), None if fn.source else fn.fn)
        if not fn.batched:
            results = self.sandbox.map(_row_task, [(*ref, s) for s in samples])
            return [Outcome(r.value if r.error is None else None, r.error, r.seconds) for r in results]
        size = max(1, self.config.batch_chunk)
        chunks = [samples[i:i + size] for i in range(0, len(samples), size)]
        outcomes: list[Outcome] = []
        for chunk, result in zip(chunks, self.sandbox.map(_batch_task, [(*ref, c) for c in chunks])):
            share = result.seconds / len(chunk)
            if result.error is not None:
                outcomes += [Outcome(None, result.error, share)] * len(chunk)
            else:
                outcomes += [Outcome(score, error, share) for score, error in result.value]
        return outcomes

    async def _score_async(self, fn: RewardFn, samples: list[RewardInput]) -> list[Outcome]:
        timeout = self.config.sandbox.timeout_s
        if fn.batched:
            start = time.perf_counter()
            try:
                values = await asyncio.wait_for(fn.fn(samples), timeout)
                checked = _checked_batch(lambda _: values, samples)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                share = (time.perf_counter() - start) / len(samples)
                return [Outcome(None, _async_error(exc, timeout), share)] * len(samples)
            share = (time.perf_counter() - start) / len(samples)
            return [Outcome(s, e, share) for s, e in checked]
        gate = asyncio.Semaphore(max(1, self.config.async_concurrency))

        async def one(sample: RewardInput) -> Outcome:
            async with gate:
                start = time.perf_counter()
                try:
                    value = check_score(await asyncio.wait_for(fn.fn(sample), timeout))
                    return Outcome(value, None, time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001
                    return Outcome(None, _async_error(exc, timeout), time.perf_counter() - start)

        return list(await asyncio.gather(*(one(s) for s in samples)))


def _async_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timeout: no result within {timeout:g} s (call cancelled)"
    return describe_exception(exc)


def _score_here(fn: RewardFn, samples: list[RewardInput]) -> list[Outcome]:
    """In this process, no limits."""
    if fn.batched:
        start = time.perf_counter()
        try:
            checked = _checked_batch(fn.fn, samples)
        except Exception as exc:  # noqa: BLE001
            share = (time.perf_counter() - start) / len(samples)
            return [Outcome(None, describe_exception(exc), share)] * len(samples)
        share = (time.perf_counter() - start) / len(samples)
        return [Outcome(s, e, share) for s, e in checked]
    outcomes = []
    for sample in samples:
        start = time.perf_counter()
        try:
            outcomes.append(Outcome(check_score(fn.fn(sample)), None, time.perf_counter() - start))
        except Exception as exc:  # noqa: BLE001
            outcomes.append(Outcome(None, describe_exception(exc), time.perf_counter() - start))
    return outcomes
