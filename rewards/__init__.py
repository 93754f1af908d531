"""Rewards: the verifiers and scorers of the hybrid recipe, and the plugin API (see REWARDS.md)."""

from .acc import VERIFIERS
from .api import (ENTRY_POINT_GROUP, Outcome, Reward, RewardFn, RewardInput, builtin_names, check_reference,
                  check_score, get_reward, register_reward, split_completion)
from .combine import CombineConfig, CombinedScores, combine, score_combined
from .prob import ProbQuery, prob_query, prob_reward, prob_rewards
from .reward_model import group_znorm
from .runner import RewardRunner, RunnerConfig
from .sandbox import Result, Sandbox, SandboxConfig

__all__ = [
    "ENTRY_POINT_GROUP", "CombineConfig", "CombinedScores", "Outcome", "ProbQuery", "Result", "Reward", "RewardFn",
    "RewardInput", "RewardRunner", "RunnerConfig", "Sandbox", "SandboxConfig", "VERIFIERS", "builtin_names",
    "check_reference", "check_score", "combine", "get_reward", "group_znorm", "prob_query", "prob_reward",
    "prob_rewards", "register_reward", "score_combined", "split_completion",
]
