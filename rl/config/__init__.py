"""The configuration of `rl-train`: the tree (`sections.py`: one class per component, constraints on the fields) and
its loader (`loader.py`: YAML + dotted overrides, errors that name the key, the resolved YAML). Bottom layer of
`rl/`: it imports `rl.algos` (the registries its names are checked against) and the lower packages, nothing else
of `rl/`. Checks that need the disk (model and data paths, reward plugins, resume) are `rl.preflight`."""

from .loader import ConfigError, build, dump, load, save, set_dotted, to_dict
from .sections import (AlgoConfig, ClusterConfig, DataConfig, LearnerConfig, ModeScheduleConfig, ModelConfig,
                       RewardConfig, RolloutConfig, RunConfig, SyncConfig, TrainConfig)

__all__ = ["AlgoConfig", "ClusterConfig", "ConfigError", "DataConfig", "LearnerConfig", "ModeScheduleConfig",
           "ModelConfig", "RewardConfig", "RolloutConfig", "RunConfig", "SyncConfig", "TrainConfig", "build", "dump",
           "load", "save", "set_dotted", "to_dict"]
