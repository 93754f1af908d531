"""A pool of Ray actors, each a rollout backend (`RolloutWorker`, vLLM, by default), that keeps every engine's
batch full and loses no prompt.

Scheduling: requests are spread by expected cost (n x expected completion tokens of their mode, learned from what
the pool has seen) with longest-first greedy assignment, so long-mode groups do not pile up on one worker. Each
worker gets its whole share in one call, which joins its engine's continuous batch, and streams the groups back
as they finish (a Ray streaming generator); the pool yields them in completion order across workers.

Abort: `abort(ids)` cancels requests of the running stream still in flight (the engines free them) and says which;
they are never yielded. Closing the stream early aborts the rest.

A stream grows: `extend(requests)` adds requests to the running one (from its reader, between two results), and a
stream opened with `tick` yields None when no result came within that many seconds, so its reader can submit more
while a long group runs (the fully async producer keeps the engines fed group by group). Each worker's idle share
(no request held) is read with `idle_shares`.

Fault tolerance: when a worker dies, a new actor replaces it, receives the current weights (the last sync is kept),
and the dead worker's requests that it had not returned are re-submitted to it. Each request is returned exactly
once.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from core.process import Owner

from .backend import backend_class
from .streams import IdleClock
from .transfer import Member
from .types import RolloutRequest, RolloutResult, SamplingConfig, default_mode_sampling, in_request_order
from .weights import SAFETENSORS_FILE, nbytes, staging_dir, sweep_stale, to_shared, write_safetensors

log = logging.getLogger(__name__)
WORKER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


def longest_first(costs: list[float], loads: list[float]) -> list[int]:
    """Greedy longest-processing-time-first assignment: item i (in any order) -> worker index. Items are taken
    from the most to the least expensive, each to the worker with the least total so far (ties: lowest index)."""
    loads = list(loads)
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        k = min(range(len(loads)), key=loads.__getitem__)
        owner[i] = k
        loads[k] += costs[i]
    return owner


@dataclass
class _Slot:
    actor: object
    worker_id: int
    generation: int = 0
    outstanding: float = 0.0
    held: dict[str, tuple[RolloutRequest, float]] = field(default_factory=dict)  # submitted, not returned or
    # cancelled: each with the cost it was counted at (the expectations move while a stream runs)
    tokens_done: int = 0
    restarts: int = 0
    up: bool = False  # the actor answered once: its engine started
    clock: IdleClock = field(default_factory=IdleClock)  # time with nothing held


class PoolClosed(RuntimeError):
    """The pool was shut down: nothing more runs on it (no stream, sync, replacement or new engine)."""


class RolloutPool:
    """Placement: each worker actor asks Ray for `cpus_per_worker` CPUs, `gpus_per_worker` GPUs and the custom
    `resources` (e.g. {"rollout_node": 1}, which only nodes started with that resource offer: `ray start
    --resources='{"rollout_node": 8}'`), so a config can put the rollout workers on chosen nodes.
    `gpu_memory_utilization` is each engine's share of its GPU (vLLM's; ignored on CPU). `ray_address` is the
    cluster to join when Ray is not initialised yet (None: RAY_ADDRESS when set, else a new local Ray). Every
    worker must be up within `start_timeout_s`; a request no node of the cluster can ever meet fails at once.
    Errors name the resources asked for and what the nodes have."""

    def __init__(self, ckpt: str, num_workers: int = 2,
                 mode_sampling: dict[str, SamplingConfig] | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, gpu_memory_utilization: float = 0.5,
                 resources: dict[str, float] | None = None, ray_address: str | None = None,
                 start_timeout_s: float = 900.0, backend: type | str = "vllm", **worker_kwargs):
        """backend: the `rollouts.backend.RolloutBackend` class each worker actor runs, or its name
        (`rollouts.backend.BACKENDS`, or `module:Class`); worker_kwargs go to its constructor."""
        if isinstance(backend, str):
            backend = backend_class(backend)
        if not ray.is_initialized():
            address = ray_address or os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(address="local", include_dashboard=False, log_to_driver=False)  # not a `ray start` one
        self.ckpt = str(ckpt)
        self.mode_sampling = mode_sampling or default_mode_sampling()
        self.worker_kwargs = dict(worker_kwargs, mode_sampling=self.mode_sampling,
                                  gpu_memory_utilization=gpu_memory_utilization, owner=Owner.this_process())
        self.resources = dict(resources or {})
        self.demand = {k: v for k, v in {"CPU": cpus_per_worker, "GPU": gpus_per_worker}.items() if v}
        self.demand.update(self.resources)
        self.start_timeout_s = start_timeout_s
        # Threaded: abort and version calls are served while streams run (the backend owns its engine's thread).
        # Each `extend` is one more streaming call per worker it reaches, held until its requests are done: the
        # fully async producer has at most run.buffer_groups / prompts_per_step + 1 rounds out (3 by default; the
        # config allows 9), under 16 with the control calls.
        self.actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0,
                                    max_concurrency=16, resources=self.resources or None)(backend)
        # Expected completion tokens per sample, per mode: start at half the budget, then a running mean.
        self.expected_tokens = {m: s.max_new_tokens / 2 for m, s in self.mode_sampling.items()}
        self._sync: tuple[str, int, object] | None = None  # ("full" | "path" | "lora", version, payload)
        self._shm_dir: str | None = None  # the staging folder of the latest sync, when the pool owns it
        sweep_stale()  # weights a killed run left in /dev/shm (this node's)
        self._cancelled: set[str] = set()  # ids aborted during the running stream
        self._submit = None  # the running stream's submit(slot, share), for `extend`
        self.on_replace = None
        """Called with a replaced worker's `Member` when the weights went in memory: sends it the current version
        (the trainer's `rl.sync.WeightSync.resend`)."""
        self.closed = False
        """Set first by `shutdown`: a stream still running (another thread's) ends with `PoolClosed` instead of
        replacing the workers shut down under it."""
        self.slots = [_Slot(actor=None, worker_id=i) for i in range(num_workers)]
        self._check_feasible()
        for slot in self.slots:
            slot.actor = self._start(slot.worker_id)
        try:
            self._wait_ready(self.slots)  # until every engine is up
        except BaseException:
            self.shutdown()
            raise

    # ---- workers ----
    def _start(self, worker_id: int):
        return self.actor_cls.remote(self.ckpt, worker_id=worker_id, **self.worker_kwargs)

    def _placement(self) -> str:
        nodes = "; ".join(f"{n['NodeManagerAddress']}: {n['Resources']}" for n in ray.nodes() if n["Alive"])
        return f"each rollout worker asks for {self.demand}; the cluster's nodes have {nodes or 'nothing'}"

    def _check_feasible(self) -> None:
        """Fail now, not after start_timeout_s, when no live node could ever host a worker."""
        if not any(all(n["Resources"].get(k, 0) >= v for k, v in self.demand.items())
                   for n in ray.nodes() if n["Alive"]):
            raise RuntimeError(f"no Ray node can host a rollout worker: {self._placement()} (custom resources "
                               "come from `ray start --resources=...` or ray.init(resources=...))")

    def _wait_ready(self, slots: list[_Slot]) -> None:
        refs = {s.actor.version.remote(): s for s in slots}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout_s)
        failed = []
        for ref in ready:
            try:
                ray.get(ref)
                refs[ref].up = True
            except Exception as e:  # noqa: BLE001 - an engine that failed to start: raised below
                failed.append(e)
        if failed:
            raise failed[0]
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(refs)} rollout workers not up after "
                               f"{self.start_timeout_s:.0f} s (start_timeout_s): {self._placement()}")

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed("the rollout pool was shut down")

    def _replace(self, slot: _Slot, resync: bool = True) -> None:
        """A new actor in the slot, up and, with `resync`, on the latest weights before it takes a request: the
        latest folder or adapter is loaded again; weights sent in memory come from `on_replace` (the sender's)."""
        self._check_open()
        log.warning("rollout worker %d died; starting a replacement", slot.worker_id)
        try:
            ray.kill(slot.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        slot.actor = self._start(slot.worker_id)
        slot.up = False
        slot.generation += 1
        slot.restarts += 1
        self._wait_ready([slot])
        if not resync or self._sync is None:
            return
        if self._sync[0] == "transfer":
            if self.on_replace is None:
                raise RuntimeError(f"rollout worker {slot.worker_id} was replaced and the weights were sent in memory, "
                                   "but no sender is set to give the replacement the current version (on_replace)")
            self.on_replace(Member(slot.actor, slot.worker_id, slot.generation,
                                   int(self.worker_kwargs.get("tensor_parallel_size") or 1)))
        else:
            ray.get(self._apply_sync(slot.actor, *self._sync))

    def members(self) -> list[Member]:
        """The workers as members of a weight-transfer group (`rollouts.transfer`): a replaced worker is a new
        member (its generation), so a plan made after a replacement opens a new group."""
        ranks = int(self.worker_kwargs.get("tensor_parallel_size") or 1)
        return [Member(s.actor, s.worker_id, s.generation, ranks) for s in self.slots]

    def model_dtype(self) -> str | None:
        """The dtype the engines hold their weights in (a transfer's wire dtype); None: as the learner sends."""
        return ray.get(self.slots[0].actor.model_dtype.remote())

    def transferred(self, version: int) -> None:
        """Every worker received `version` in memory (`rollouts.transfer`, sent by the learner): recorded, checked
        (every worker must report it), and the staging folder of an earlier sync is removed. A worker replaced
        after this gets the weights from `on_replace`, which the sender sets."""
        self._check_open()
        previous, self._shm_dir = self._shm_dir, None
        self._sync = ("transfer", version, None)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        stale = [v for v in self.versions() if v != version]
        if stale:
            raise RuntimeError(f"workers still report policy versions {stale} after syncing version {version}")

    def replace_lost(self, timeout: float = 30.0) -> list[int]:
        """Replace every worker that does not answer (dead), without giving it weights: for a sender about to
        send to all workers again. Returns the worker ids replaced."""
        self._check_open()
        lost = []
        for slot in self.slots:
            try:
                ray.get(slot.actor.version.remote(), timeout=timeout)
            except (*WORKER_LOST, ray.exceptions.GetTimeoutError):
                self._replace(slot, resync=False)
                lost.append(slot.worker_id)
        return lost

    @staticmethod
    def _apply_sync(actor, kind: str, version: int, payload):
        if kind == "full":
            return actor.load_shared_weights.remote(version, payload)
        if kind == "path":
            return actor.load_weights.remote(version, path=payload)
        return actor.load_lora.remote(version, payload)

    def pids(self) -> list[int]:
        return ray.get([s.actor.pid.remote() for s in self.slots])

    def versions(self) -> list[int]:
        return ray.get([s.actor.version.remote() for s in self.slots])

    def load(self) -> list[dict]:
        """Per worker: expected tokens still queued, tokens generated so far, restarts."""
        return [{"worker_id": s.worker_id, "outstanding_tokens": s.outstanding, "tokens_done": s.tokens_done,
                 "in_flight_requests": len(s.held), "restarts": s.restarts} for s in self.slots]

    # ---- weight sync ----
    def single_node(self) -> bool:
        """Whether the cluster is one node: then a node-local folder (/dev/shm) reaches every worker, a replaced
        one included."""
        return sum(1 for n in ray.nodes() if n["Alive"]) == 1

    def sync_weights(self, version: int, weights: Iterable | None = None, path: str | None = None,
                     transport: str = "auto", owned: bool = False) -> float:
        """Full weights to every worker: (name, tensor) pairs in the checkpoint's names, or a safetensors
        directory. Returns seconds; afterwards every worker must report `version`.

        `owned`: the directory is a staging copy handed to the pool (a learner's `stage_weights` folder), which it
        deletes once every worker has loaded a newer version, and at shutdown; until then it is kept for a
        replaced worker. Otherwise a `path` stays the caller's.

        transport for in-memory weights: "shm" writes them once, tensor by tensor, as safetensors to shared
        memory (/dev/shm; the temporary directory when it lacks room) and
        every worker reloads from there (one node); "object_store" sends numpy views through Ray's object
        store (works across nodes); "auto" picks "shm" on a one-node cluster. BENCHMARKS.md times both. The latest payload is kept for replacement workers."""
        self._check_open()
        start = time.perf_counter()
        if (weights is None) == (path is None):
            raise ValueError("give exactly one of weights= or path=")
        if transport == "auto":
            transport = "shm" if len(ray.nodes()) == 1 else "object_store"
        previous = self._shm_dir
        if path is not None:
            self._sync, self._shm_dir = ("path", version, str(path)), (str(path) if owned else None)
        elif transport == "shm":
            weights = list(weights)
            self._shm_dir = staging_dir(nbytes(weights), prefix=f"minicpmv-rl-v{version}-")
            write_safetensors(weights, os.path.join(self._shm_dir, SAFETENSORS_FILE))  # tensor by tensor
            del weights
            self._sync = ("path", version, self._shm_dir)
        elif transport == "object_store":
            self._sync, self._shm_dir = ("full", version, ray.put(to_shared(weights))), None
        else:
            raise ValueError(f"transport={transport!r}: expected auto, shm or object_store")
        self._broadcast(version)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        return time.perf_counter() - start

    def sync_lora(self, version: int, adapter_path: str) -> float:
        self._check_open()
        start = time.perf_counter()
        self._sync = ("lora", version, str(adapter_path))
        self._broadcast(version)
        return time.perf_counter() - start

    def _broadcast(self, version: int) -> None:
        self._check_open()
        for slot in self.slots:
            try:
                ray.get(self._apply_sync(slot.actor, *self._sync))
            except WORKER_LOST:
                self._replace(slot)  # the replacement receives the sync it missed
        stale = [v for v in self.versions() if v != version]
        if stale:
            raise RuntimeError(f"workers still report policy versions {stale} after syncing version {version}")

    # ---- sampling ----
    def cost(self, request: RolloutRequest) -> float:
        return max(request.n, 1) * self.expected_tokens.get(request.mode, 1.0)

    def schedule(self, requests: list[RolloutRequest]) -> list[list[RolloutRequest]]:
        """Longest-first greedy: each request goes to the worker with the least expected work so far; each share
        is ordered most expensive first (vLLM admits requests in order, so long groups start first)."""
        shares: list[list[RolloutRequest]] = [[] for _ in self.slots]
        owners = longest_first([self.cost(r) for r in requests], [s.outstanding for s in self.slots])
        for request, k in zip(requests, owners):
            shares[k].append(request)
        return [sorted(share, key=lambda r: -self.cost(r)) for share in shares]

    def stream(self, requests: list[RolloutRequest], tick: float | None = None) -> Iterator[RolloutResult | None]:
        """Results as they finish (any order), each request exactly once, aborted ones never. One stream at a
        time; `abort` and `extend` may be called between two results. Closing the iterator aborts what is still
        running. tick: yield None after that many seconds without a result, and run until closed."""
        self._check_open()
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request_id values must be unique within a batch")
        gens: dict[object, tuple[_Slot, int]] = {}
        self._cancelled = set()

        def submit(slot: _Slot, share: list[RolloutRequest]) -> None:
            slot.clock.busy(len(share))
            for r in share:
                slot.held[r.request_id] = (r, self.cost(r))
                slot.outstanding += slot.held[r.request_id][1]
            gens[slot.actor.stream.options(num_returns="streaming").remote(share)] = (slot, slot.generation)

        self._submit = submit  # now, not at the first result: `extend` may come before it
        for slot, share in zip(self.slots, self.schedule(requests)):
            if share:
                submit(slot, share)
        return self._results(gens, submit, tick)

    def _results(self, gens, submit, tick) -> Iterator[RolloutResult | None]:
        try:
            while gens or tick is not None:
                self._check_open()  # shut down from another thread: its workers are gone on purpose
                if not gens:
                    time.sleep(tick)
                    yield None
                    continue
                ready, _ = ray.wait(list(gens), num_returns=1, timeout=tick)
                if not ready:
                    yield None
                    continue
                [gen] = ready
                slot, generation = gens[gen]
                try:
                    result = ray.get(next(gen))
                except StopIteration:
                    del gens[gen]
                    if slot.held and all(s is not slot for s, _ in gens.values()):
                        raise RuntimeError(f"rollout worker {slot.worker_id} ended its stream without returning "
                                           f"requests {sorted(slot.held)[:5]}") from None
                    continue
                except WORKER_LOST:
                    del gens[gen]
                    self._check_open()
                    if slot.generation == generation:  # first failure seen from this actor: replace it once
                        self._replace(slot)
                    left = [r for r, _ in slot.held.values() if r.request_id not in self._cancelled]
                    for r in left:
                        self._release(slot, r.request_id)
                    if left:
                        submit(slot, left)  # to the replacement
                    continue
                self._check_open()  # (a worker shut down fails what it held: not results to hand on)
                rid = result.request.request_id
                if rid not in slot.held:  # aborted meanwhile (it finished before the abort reached the engine)
                    continue
                self._release(slot, rid)
                if not result.partial:  # (a cut-off group says nothing of its mode's lengths)
                    self._observe(result)
                slot.tokens_done += sum(len(s.completion_token_ids) for s in result.samples)
                yield result
        finally:
            self._submit = None
            left = [rid for slot in self.slots for rid in slot.held]
            if left and not self.closed:  # the caller stopped early
                self.abort(left)

    def extend(self, requests: list[RolloutRequest]) -> None:
        """Add requests to the running stream (from its reader's thread, between two results), spread as `stream`
        spreads them; the stream yields their results too."""
        self._check_open()
        if self._submit is None:
            raise RuntimeError("no stream is running to extend")
        ids = {r.request_id for r in requests}
        if len(ids) != len(requests) or ids & {rid for slot in self.slots for rid in slot.held}:
            raise ValueError("request_id values must be unique among the requests of a running stream")
        for slot, share in zip(self.slots, self.schedule(requests)):
            if share:
                self._submit(slot, share)

    def idle_shares(self) -> list[float]:
        """Per worker, the share of the time since the last call that it held no request (waiting for the
        learner, or done with its share of a batch while another worker finishes a long group)."""
        return [slot.clock.read() for slot in self.slots]

    @staticmethod
    def _release(slot: _Slot, request_id: str) -> None:
        _, cost = slot.held.pop(request_id)
        slot.outstanding -= cost
        slot.clock.free()

    def abort(self, request_ids) -> list[str]:
        """Cancel requests of the running stream that have not been yielded: the workers drop them from their
        engines (partial samples discarded, memory freed) and the stream never yields them. Returns the ids
        cancelled (ids already yielded, or unknown, are left out)."""
        wanted, cancelled = set(request_ids), []
        for slot in self.slots:
            mine = [rid for rid in slot.held if rid in wanted]
            if not mine:
                continue
            try:
                ray.get(slot.actor.abort.remote(mine))
            except WORKER_LOST:
                pass  # its stream sees the death; cancelled requests are not re-submitted
            for rid in mine:
                self._release(slot, rid)
            self._cancelled.update(mine)
            cancelled += mine
        return cancelled

    def interrupt(self, request_ids) -> list[str]:
        """Stop requests of the running stream and keep what they drew: the stream yields each, `partial`
        (`RolloutBackend.interrupt`), or whole if it finished first. Returns the ids interrupted."""
        wanted, cut = set(request_ids), []
        for slot in self.slots:
            mine = [rid for rid in list(slot.held) if rid in wanted]  # (the stream's reader may be filing results)
            if mine:
                try:
                    cut += ray.get(slot.actor.interrupt.remote(mine))
                except WORKER_LOST:
                    pass  # its stream sees the death and resubmits them whole to the replacement
        return cut

    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        return in_request_order(requests, self.stream(requests))

    def _observe(self, result: RolloutResult, momentum: float = 0.8) -> None:
        if result.samples:
            mean = sum(len(s.completion_token_ids) for s in result.samples) / len(result.samples)
            mode = result.request.mode
            self.expected_tokens[mode] = momentum * self.expected_tokens[mode] + (1 - momentum) * max(mean, 1.0)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Each worker stops its engine first (a multiprocess engine killed with its actor would leave its
        processes' shared memory behind), then the actors go. The pool is closed from the start: a stream running in
        another thread ends with `PoolClosed`, and no worker is replaced or synced after this."""
        self.closed = True
        if self._shm_dir:
            shutil.rmtree(self._shm_dir, ignore_errors=True)
            self._shm_dir = None
        up = [s.actor for s in self.slots if s.actor is not None and s.up]  # the others never started an engine
        if up:
            try:
                ray.wait([a.shutdown.remote(timeout) for a in up], num_returns=len(up), timeout=timeout + 10)
            except Exception:  # noqa: BLE001 - a dead or unreachable worker: killed below all the same
                pass
        for actor in [s.actor for s in self.slots if s.actor is not None]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
