"""The new policy into every rollout worker after an update: `WeightSync`.

Three ways, by what travels (`sync.kind`, `sync.transport`):
- a LoRA adapter: the learner saves it into a folder under run.dir/.sync, every worker loads it; the previous
  folder is removed once the next one is loaded;
- full or merged weights in memory (gloo / nccl): `learner.send_weights` broadcasts them from the learner's rank 0
  to every engine at once through vLLM's weight-transfer API (`rollouts.transfer`, `rollouts.vllm.transfer`),
  verified by per-tensor checksums; nothing is written;
- full or merged weights through a staging folder (staging): rank 0 writes safetensors shards as it gathers them,
  /dev/shm on one node, else run.dir/.sync; every worker reads them.

A worker replaced after a sync gets the latest version before it takes a request: the pool reloads the folder or
adapter itself; for weights sent in memory it calls `resend`, which sends the learner's current weights to the new
worker alone (under the learner's lock: in the one-step-off loop the update may be running, and the replacement
then gets the weights that update produces; its samples carry that version). The next sync forms the group anew
with every worker.

Metrics per sync: `sync/seconds`, `sync/gb` (bytes sent or staged), and for the in-memory transports
`sync/verified` (1: every engine's checksums equal the learner's; a mismatch is an error, not a metric) and
`sync/group_seconds` (opening the group: at the first sync and after a replacement).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from rollouts.transfer import Member, TransferPlan

log = logging.getLogger(__name__)


class WeightSync:
    def __init__(self, cfg, learner, pool, run_dir: Path, kind: str, lock: threading.Lock | None = None):
        self.cfg, self.learner, self.pool, self.kind = cfg, learner, pool, kind
        self.transport = cfg.sync.resolved_transport(kind, cfg.on_gpus())
        self.dir = Path(run_dir) / ".sync"  # adapter and fallback staging folders (under run.dir: every node sees it)
        shutil.rmtree(self.dir, ignore_errors=True)  # left by a run that was killed
        self.lock = lock or threading.Lock()
        """Held by the trainer around each update, and here around each send: the weights are read whole."""
        self._adapter: Path | None = None
        self._dtype: str | None | bool = False  # the wire dtype, asked of the workers once (False: not yet)
        self._group = 0  # bumped to open a new group with the same members
        if self.transport in ("gloo", "nccl"):
            pool.on_replace = self.resend

    @property
    def in_memory(self) -> bool:
        return self.transport in ("gloo", "nccl")

    def wire_dtype(self) -> str | None:
        """rollout.dtype, or with auto the dtype the engines hold (one answer from the workers)."""
        if self._dtype is False:
            dtype = self.cfg.rollout.dtype
            self._dtype = self.pool.model_dtype() if dtype == "auto" else dtype
        return self._dtype

    def plan(self, version: int, members: list[Member]) -> TransferPlan:
        return TransferPlan(self.transport, members, version, self.wire_dtype(), self.cfg.sync.bucket_mb << 20,
                            self.cfg.sync.timeout_s, self._group)

    def __call__(self, version: int) -> dict[str, float]:
        """Every worker onto `version` (the learner's current weights); the sync's metrics."""
        start = time.perf_counter()
        if self.kind == "adapter":
            folder = self.dir / f"adapter-v{version:06d}"
            shutil.rmtree(folder, ignore_errors=True)
            with self.lock:
                self.pool.sync_lora(version, self.learner.sync_payload("adapter", str(folder))[1])
            if self._adapter is not None and self._adapter != folder:
                shutil.rmtree(self._adapter, ignore_errors=True)
            self._adapter = folder
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            return {"sync/seconds": time.perf_counter() - start, "sync/gb": size / 1e9}
        if self.in_memory:
            report = self._send(version)
            return {"sync/seconds": time.perf_counter() - start, "sync/gb": report.bytes / 1e9,
                    "sync/verified": float(report.verified), "sync/group_seconds": report.group_seconds}
        return self._stage(version, start)

    def _send(self, version: int):
        """`learner.send_weights` to every worker; a worker lost during the transfer is replaced and the send is
        tried once more with a new group (a second failure is raised)."""
        for attempt in (1, 2):
            with self.lock:
                try:
                    report = self.learner.send_weights(self.kind, self.plan(version, self.pool.members()))
                    break
                except Exception as e:
                    lost = self.pool.replace_lost() if hasattr(self.pool, "replace_lost") else []
                    if attempt == 2 or not lost:
                        raise
                    log.warning("rollout workers %s were lost during the weight transfer (%s: %s); sending again",
                                lost, type(e).__name__, e)
        self.pool.transferred(version)
        return report

    def resend(self, member: Member) -> None:
        """The learner's current weights to one replaced worker (the pool's `on_replace`)."""
        with self.lock:
            version = self.learner.version
            self._group += 1
            self.learner.send_weights(self.kind, self.plan(version, [member]))
            self._group += 1  # the next sync opens a group with every worker again
        log.info("replacement rollout worker %d received policy version %d", member.worker_id, version)

    def _stage(self, version: int, start: float) -> dict[str, float]:
        from rollouts.weights import Staging

        dtype = self.cfg.rollout.dtype
        staging = Staging(str(self.dir.resolve()), shm=self.pool.single_node(), bucket_mb=self.cfg.sync.bucket_mb,
                          dtype=None if dtype == "auto" else dtype, prefix=f"minicpmv-rl-v{version:06d}-")
        with self.lock:
            _, folder = self.learner.sync_payload(self.kind, staging=staging)
        self.pool.sync_weights(version, path=folder, owned=True)
        size = sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors"))
        return {"sync/seconds": time.perf_counter() - start, "sync/gb": size / 1e9}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
