"""The training loops, side by side: one module each, `train_step(trainer) -> metrics`, readable top to bottom.

- `on_policy` (`run.async_mode: off`, the paper's): generate with the current weights, update, sync.
- `one_step_off`: the next batch is generated during the update, by weights one version older.
- `fully_async`: a producer generates batch after batch into a buffer; the weights load into the engines while
  they generate (in-flight updates), so a sample may span versions.

A loop drives the trainer's parts: `trainer.collector` (the rollout side, `rl.batches.Collector`), `trainer.update`
(advantages and the learner's step), `trainer.sync` (the weights to the workers, `rl.sync.WeightSync`) and
`trainer.step_metrics`; the trainer keeps set-up, state and checkpoints, and picks the loop (`LOOPS`).
"""

from __future__ import annotations

from . import fully_async, on_policy, one_step_off

LOOPS = {"off": on_policy.train_step, "one_step_off": one_step_off.train_step, "fully_async": fully_async.train_step}
"""`run.async_mode` -> the loop's step."""
