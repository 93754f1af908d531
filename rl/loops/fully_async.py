"""`run.async_mode: fully_async`: generation never waits for the learner. A producer thread keeps the engines fed group
by group (`Producer`), at most `run.buffer_groups` ahead; each step trains on the oldest finished groups, a batch's
worth (a long group goes into a later batch instead of holding this one), and pushes the new weights into the
engines while they generate: each engine loads them between two of its steps, its running requests kept
(`rollout.kv_after_update`: their KV cache kept or recomputed), so a request may span policy versions and each sample
says which version drew which token (`RolloutSample.versions`). The loss weighs every token against the
engine's log-prob of it (`algo.tis_cap`), whichever version drew it.

The lag is bounded by `algo.max_staleness` (versions, counted from a group's oldest token): with
`algo.staleness_policy=wait` the producer draws only while fewer than max_staleness batches are ahead, and a step
waits for a running group as old as the bound (AReaL's bound: nothing is drawn too early, nothing is wasted); with
`drop` it runs as far ahead as the buffer lets it, and groups past the bound are dropped at the update.

A checkpoint pauses the producer (no new prompts; the running groups finish) and saves the finished groups, with
the data state after their draws: a resumed run trains on those very groups, then draws on, so no row is trained
twice or lost (`Trainer.save`).
"""

from __future__ import annotations

import time

from ..metrics import Phases
from ..producer import Producer


def train_step(trainer) -> dict:
    phases, start = Phases(), time.perf_counter()
    if trainer.producer is None:
        trainer.producer = Producer(trainer, trainer.restored)
        trainer.restored = []
    with phases("wait"):
        batch = trainer.producer.take()
    update = trainer.update(batch, phases)
    with phases("sync"):
        if update.samples:  # loaded by the engines between two of their steps, their requests kept
            trainer.sync()
    metrics = {**trainer.step_metrics(batch, update, phases, start), **trainer.producer.ahead()}
    trainer.producer.stepped()
    return metrics
