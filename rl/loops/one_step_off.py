"""`run.async_mode: one_step_off`: generation overlaps the update. Each step takes the batch generated during the last
update (or generates one now: the first step, or a resumed run's without a saved batch), syncs the workers to the
newest weights, starts generating the next batch in the background, and updates meanwhile. Its samples are one
policy version old when learnt from: the loss weighs them against the engine's log-probs (`algo.tis_cap`) and
`algo.max_staleness` bounds their age."""

from __future__ import annotations

import time

from ..batches import Background
from ..metrics import Phases


def train_step(trainer) -> dict:
    phases, start = Phases(), time.perf_counter()
    with phases("wait"):
        batch = trainer.take_pending() or trainer.collector.collect(trainer.step, trainer.learner.version)
    with phases("sync"):
        trainer.sync_if_behind()
    if trainer.step + 1 < trainer.cfg.run.steps:
        trainer.pending = Background(trainer.collector.collect, trainer.step + 1, trainer.learner.version + 1)
    update = trainer.update(batch, phases)
    return trainer.step_metrics(batch, update, phases, start)
