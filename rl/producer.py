"""The producer of the fully asynchronous loop (`rl.loops.fully_async`): one thread that collects batch after batch
(`rl.batches.Collector`) into a bounded buffer ahead of the learner, under the staleness bound, and pauses for a
checkpoint."""

from __future__ import annotations

import threading
from collections import deque

from .batches import Batch


class Producer:
    """Batches collected ahead, in order, by one thread (the collector's draws stay in order: one thread draws)."""

    def __init__(self, trainer, ready: list[Batch] | None = None):
        cfg = trainer.cfg
        self.trainer, self.capacity = trainer, cfg.run.buffer_batches
        self.wait_bound = cfg.algo.max_staleness if cfg.algo.staleness_policy == "wait" else None
        self.ready: deque[Batch] = deque(ready or [])
        self.next_index = trainer.step + len(self.ready)  # the step the next batch is for
        self.steps_done = trainer.step
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.paused = self.stopped = self.busy = False
        self.thread = threading.Thread(target=self._run, name="rollout-producer", daemon=True)
        self.thread.start()

    def _may_start(self) -> bool:
        if self.stopped or self.paused or self.next_index >= self.trainer.cfg.run.steps or \
                len(self.ready) >= self.capacity:
            return False
        return self.wait_bound is None or self.steps_done >= self.next_index - self.wait_bound

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.stopped or self._may_start())
                if self.stopped:
                    return
                index, self.busy = self.next_index, True
            try:
                batch = self.trainer.collector.collect(index)
            except BaseException as e:  # noqa: BLE001 - handed to the learner's next take()
                with self.cond:
                    self.error, self.busy = e, False
                    self.cond.notify_all()
                return
            with self.cond:
                self.ready.append(batch)
                self.next_index, self.busy = index + 1, False
                self.cond.notify_all()

    def take(self) -> Batch:
        """The oldest batch, once there is one (what stopped the producer, raised)."""
        with self.cond:
            self.cond.wait_for(lambda: self.ready or self.error is not None)
            if not self.ready:
                raise self.error
            batch = self.ready.popleft()
            self.cond.notify_all()
            return batch

    def stepped(self) -> None:
        """The learner finished a step (the wait bound moves)."""
        with self.cond:
            self.steps_done += 1
            self.cond.notify_all()

    def pause(self) -> list[Batch]:
        """Stop starting batches, wait for the one being collected; the batches held (kept, in order)."""
        with self.cond:
            self.paused = True
            self.cond.wait_for(lambda: not self.busy)
            if self.error is not None:
                raise self.error
            return list(self.ready)

    def resume(self) -> None:
        with self.cond:
            self.paused = False
            self.cond.notify_all()

    def stop(self, timeout: float = 120) -> None:
        """No more batches; the one being collected ends with the pool (closed first by `Trainer.close`)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join(timeout)
