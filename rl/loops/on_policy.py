"""`run.async_mode: off` (the paper's GRPO): each step generates a batch with the weights the workers hold, which are
the learner's current ones, updates on it, and syncs the new weights before the next step generates."""

from __future__ import annotations

import time

from ..metrics import Phases


def train_step(trainer) -> dict:
    phases, start = Phases(), time.perf_counter()
    # a batch restored from a one-step-off checkpoint is trained on first, whatever the mode now
    batch = trainer.take_pending() or trainer.collector.collect(trainer.step, trainer.learner.version)
    update = trainer.update(batch, phases)
    with phases("sync"):
        if update.samples:  # no samples with signal: no update, nothing to sync
            trainer.sync()
    return trainer.step_metrics(batch, update, phases, start)
