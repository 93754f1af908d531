"""The configuration tree of `rl-train`: one dataclass per component, a one-line docstring per field.

Defaults follow the paper where it speaks (GRPO, no KL, no entropy loss, 8 samples per prompt, 50% long-mode
prompts, temperature 1.0, constant lr 1e-6, R = acc + format + repetition + 0.5 z(reward_model)) and say so where
it is silent. `configs/*.yaml` override them; `rl-train --config F a.b=value` overrides those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rewards import CombineConfig, RunnerConfig, SandboxConfig
from rollouts.types import SamplingConfig

from .data import DataConfig
from .learner import LearnerConfig
from .modes import ModeScheduleConfig


@dataclass
class ModelConfig:
    """The policy to start from."""
    path: str = "runs/tiny-model"
    """A MiniCPM-V 4.5 checkpoint directory (the release, or one this project wrote)."""
    build_tiny_if_missing: bool = True
    """When `path` does not exist, build the tiny random checkpoint there (the CPU demo)."""
    tiny_seed: int = 0


@dataclass
class RolloutSection:
    """Sampling: the worker pool and per-mode sampling settings."""
    num_workers: int = 1
    prompts_per_step: int = 8
    """Prompts per step (the paper: 128)."""
    n: int = 8
    """Samples per prompt (the paper: 8)."""
    max_model_len: int = 4096
    dtype: str = "auto"
    """vLLM dtype; "auto" serves an fp32 checkpoint in bf16 (use float32 for exact agreement on CPU)."""
    chunk_size: int = 4
    """Prompts per task sent to a worker (smaller streams sooner, larger batches more)."""
    gpus_per_worker: float = 0
    cpus_per_worker: int = 0
    """CPU cores per worker (its torch/OpenMP threads). 0: without GPUs, the machine's cores shared among the
    workers (generation and the update take turns, so a lone worker gets every core); with GPUs, 1."""
    tensor_parallel_size: int = 1
    short: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=1024))
    long: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=8192))
    """The paper: 8192 new tokens, temperature 1.0."""
    auto: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=8192))

    def __post_init__(self):
        if self.num_workers < 1 or self.cpus_per_worker < 0:
            raise ValueError("rollout.num_workers must be >= 1 and rollout.cpus_per_worker >= 0")


@dataclass
class RewardSection:
    """The combined reward (defaults: the paper's R = acc + format + repetition + 0.5 z(reward_model))."""
    combine: CombineConfig = field(default_factory=CombineConfig)
    timeout_s: float = 10.0
    """Per reward call (a hung verifier gives None for that row)."""
    workers: int = 2
    memory_mb: int = 4096


@dataclass
class AlgoConfig:
    """Advantages and batch filtering."""
    advantage: str = "grpo"
    """grpo | dr_grpo | rloo (rl.algos.ADVANTAGE_ESTIMATORS)."""
    std: str = "sample"
    """GRPO's std: sample (n-1, as TRL) or population."""
    eps: float = 1e-6
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal (zero advantage) and refill the batch (off in the paper)."""
    max_refill_rounds: int = 2
    """Dynamic sampling: extra rollout rounds per step at most; the step goes on with what it has."""


@dataclass
class SyncSection:
    kind: str = "auto"
    """auto | adapter | merged | full (see Learner.sync_payload)."""


@dataclass
class RunSection:
    """The run: length, seed, outputs."""
    dir: str = "runs/tiny"
    steps: int = 4
    seed: int = 0
    save_every: int = 2
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    eval_every: int = 0
    """Evaluate per mode every N steps on `eval_rows` held-out prompts (0 = off)."""
    eval_rows: int = 8
    """Held-out rows (taken out of training) for `eval_every`."""
    eval_modes: list[str] = field(default_factory=lambda: ["short", "long"])
    """The modes each evaluation runs (short | long | auto); keys eval/accuracy/<mode>, eval/tokens/<mode>/mean,
    eval/compliance/<mode>, eval/think_rate/<mode>, ... as rl-eval's summary. Records go to run.dir/eval.jsonl."""
    eval_n: int = 1
    """Samples per held-out row and mode."""
    tensorboard: bool = True
    wandb: bool = False
    mlflow: bool = False
    export: bool = True
    """Write run.dir/export: a standard checkpoint directory (LoRA merged) that vLLM and model/ load."""
    progress: bool = True

    def __post_init__(self):
        bad = [m for m in self.eval_modes if m not in ("short", "long", "auto")]
        if bad or not self.eval_modes:
            raise ValueError(f"run.eval_modes={self.eval_modes}: each must be short, long or auto")
        if self.eval_n < 1 or self.eval_rows < 0 or self.eval_every < 0:
            raise ValueError("run.eval_n must be >= 1, run.eval_rows and run.eval_every >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(path="runs/demo-data/count_shapes.jsonl",
                                                                demo="count_shapes"))
    """Defaults: the count_shapes demo set, generated on first use."""
    modes: ModeScheduleConfig = field(default_factory=ModeScheduleConfig)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    reward: RewardSection = field(default_factory=RewardSection)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncSection = field(default_factory=SyncSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self):
        self.data.validate()  # the rest validate in their own __post_init__

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(sandbox=SandboxConfig(workers=self.reward.workers, timeout_s=self.reward.timeout_s,
                                                  memory_mb=self.reward.memory_mb))

    def rollout_cpus(self) -> int:
        """`rollout.cpus_per_worker`, with 0 resolved (see its docstring)."""
        r = self.rollout
        if r.cpus_per_worker:
            return r.cpus_per_worker
        return 1 if r.gpus_per_worker else max(1, (os.cpu_count() or 1) // r.num_workers)

    def sampling(self) -> dict[str, SamplingConfig]:
        return {"short": self.rollout.short, "long": self.rollout.long, "auto": self.rollout.auto}
