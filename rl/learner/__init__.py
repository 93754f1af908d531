"""The learner: one interface (`base.Learner`), two implementations side by side.

- `LocalLearner` (`local.py`): the whole model in this process, on one device;
- `ShardedLearner` (`sharded.py`): N ranks as Ray actors joined by torch.distributed, the model sharded with FSDP2
  (`fsdp.py`); each rank runs a `LocalLearner` over its share of the batch.

The trainer, checkpointing and evaluation use only the interface; `make_learner` picks the implementation from the
config (`cluster.learner_ranks`).
"""

import dataclasses
from pathlib import Path

from ..config import AlgoConfig, LearnerConfig, TrainConfig
from .base import Learner, TrainSample
from .local import LocalLearner

__all__ = ["Learner", "LocalLearner", "ShardedLearner", "TrainSample", "make_learner"]


def learner_settings(cfg: TrainConfig) -> tuple[LearnerConfig, AlgoConfig]:
    """The learner's and the loss's sections with what the run decides filled in: the LR schedule's length
    (`learner.total_steps`: run.steps) and the importance-weighted KL (`algo.kl_importance`: on in the one-step-off
    loop, whose samples are one policy version old)."""
    learner, algo = cfg.learner, cfg.algo
    if learner.total_steps is None:
        learner = dataclasses.replace(learner, total_steps=cfg.run.steps)
    if algo.kl_importance is None:
        algo = dataclasses.replace(algo, kl_importance=cfg.run.async_mode != "off")
    return learner, algo


def make_learner(cfg: TrainConfig, ckpt: str | Path) -> Learner:
    """The learner the config asks for: local (one process) or sharded (`cluster.*`)."""
    cluster = cfg.cluster
    learner, algo = learner_settings(cfg)
    if not cluster.sharded():
        import torch

        if torch.cuda.is_available():
            raise RuntimeError("on a GPU machine the learner runs as a Ray actor on GPUs Ray gives it (so that the "
                               "rollout workers get others): set cluster.learner_gpus_per_rank (e.g. 1; 0.5 to "
                               "share a GPU with a rollout worker)")
        return LocalLearner(ckpt, learner, algo)
    from .sharded import ShardedLearner

    return ShardedLearner(ckpt, learner, algo, ranks=cluster.learner_ranks,
                          cpus_per_rank=cluster.learner_cpus_per_rank, gpus_per_rank=cluster.learner_gpus_per_rank,
                          resources=cluster.learner_resources, seed=cfg.run.seed)


def __getattr__(name: str):
    if name == "ShardedLearner":  # imports Ray: only when asked for
        from .sharded import ShardedLearner

        return ShardedLearner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
