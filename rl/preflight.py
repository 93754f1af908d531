"""The checks of a run that need more than the config tree: files on disk, the data layer's names, the reward
parts' code. `rl-train` runs them right after the config loads and before anything expensive starts (no Ray, no
vLLM, no model load); `rl-train --check` stops after them. Each problem is one line naming the key.

(The tree's own constraints, ranges, names of registered functions and combinations of keys, are checked when it
is built: `rl/config/sections.py`.)
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import TrainConfig


RUN_FILES = ("config.yaml", "metrics.jsonl", "eval.jsonl", "checkpoints", "export", ".tmp-export", "tensorboard",
             ".sync", "wandb", "completions.jsonl", "data_origin.json")
"""What a run writes into run.dir: all `--overwrite` may delete."""

PREVIEW_ROWS = 8
"""Rows of each data source `--check` reads through the column mapping and the row checks."""


def preflight(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Every problem found (empty: the run can start)."""
    return [*_model(cfg), *_data(cfg), *_rewards(cfg), *_loggers(cfg), *_run_dir(cfg, resume, overwrite),
            *_resume(cfg, resume)]


def _loggers(cfg: TrainConfig) -> list[str]:
    """A metrics logger asked for whose package is not installed (it would fail at the first step otherwise)."""
    import importlib.util

    return [f"run.{name}=true: the {name} package is not installed (pip install {name}, or run.{name}=false)"
            for name in ("wandb", "mlflow") if getattr(cfg.run, name) and importlib.util.find_spec(name) is None]


def _run_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> list[str]:
    """A run directory belongs to one run: a new run starts in an empty (or new) one, `--resume` continues the run
    that is there, `--overwrite` deletes that run first."""
    run = Path(cfg.run.dir)
    entries = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    if resume and overwrite:
        return ["--resume and --overwrite: choose one (continue the run in run.dir, or delete it and start anew)"]
    if not entries or resume:
        return []
    foreign = [e for e in entries if e not in RUN_FILES]
    if overwrite and foreign:
        return [f"run.dir={run}: --overwrite deletes only a run's files, and this folder also holds "
                f"{', '.join(foreign[:5])}: choose another run.dir"]
    if not overwrite:
        return [f"run.dir={run} is not empty ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}): "
                "continue that run with --resume, delete it with --overwrite, or choose another run.dir"]
    return []


def clear_run_dir(cfg: TrainConfig) -> None:
    """`--overwrite`: delete the previous run's files (preflight has checked they are all a run's)."""
    import shutil

    run = Path(cfg.run.dir)
    for name in RUN_FILES:
        target = run / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _model(cfg: TrainConfig) -> list[str]:
    path = Path(cfg.model.path)
    config = path / "config.json"
    if not config.is_file():
        if cfg.model.build_tiny_if_missing:
            return []  # the tiny checkpoint is built there at start (the CPU demo)
        return [f"model.path={path}: no checkpoint there (no config.json; model.build_tiny_if_missing is false)"]
    try:
        limit = json.loads(config.read_text()).get("max_position_embeddings")
    except (OSError, ValueError) as e:
        return [f"model.path={path}: {config} is not readable JSON ({e})"]
    if isinstance(limit, int) and cfg.rollout.max_model_len > limit:
        return [f"rollout.max_model_len={cfg.rollout.max_model_len} exceeds the model's context "
                f"(max_position_embeddings={limit} in {config})"]
    return _lora_targets(cfg)


def _lora_targets(cfg: TrainConfig) -> list[str]:
    """LoRA targets that match no module of the checkpoint's architecture (built on the meta device: config.json
    alone), as PEFT matches a string: `re.fullmatch` against each module name."""
    import re

    if not cfg.learner.lora:
        return []
    from .learner.loading import meta_model
    import torch

    names = [name for name, _ in meta_model(cfg.model.path, torch.float32).named_modules()]
    if any(re.fullmatch(cfg.learner.lora_targets, name) for name in names):
        return []
    return [f"learner.lora_targets={cfg.learner.lora_targets!r}: matches no module of {cfg.model.path} (a regex "
            f"matched in full against module names such as {', '.join(n for n in names if n.endswith('q_proj'))[:120]}"
            "...)"]


def _data(cfg: TrainConfig) -> list[str]:
    from .data.demo import DEMO_SETS
    from .data.external import hf_kind
    from .data.loader import data_files, preview

    data = cfg.data
    if data.demo is not None and data.demo not in DEMO_SETS:
        return [f"data.demo={data.demo!r}: not a demo set; allowed: {', '.join(DEMO_SETS)}"]
    paths = [data.path] if isinstance(data.path, str) else list(data.path)
    if data.demo and len(paths) == 1 and paths[0].endswith(".jsonl") and not Path(paths[0]).exists():
        return []  # generated there at start
    problems = []
    for path in paths:
        if hf_kind(str(path)) is not None:
            continue  # a `datasets` folder or a hub id: opened by the preview below
        try:
            data_files(path)
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"data.path: {e}")
    # the first rows of each source, through the mapping: a typo'd column fails here, not at the first step
    return problems or [f"data: {p}" for p in preview(cfg.run_data(), PREVIEW_ROWS)]


def _rewards(cfg: TrainConfig) -> list[str]:
    from rewards import get_reward
    from rewards.acc import allowed_table

    combine, problems = cfg.reward.combine, []
    for spec in cfg.data.allowed_rewards:  # what rows may name: each must resolve (a listed plugin imports)
        try:
            get_reward(spec)
        except Exception as e:  # noqa: BLE001
            problems.append(f"data.allowed_rewards: {spec!r}: {type(e).__name__}: {e}")
    if not problems and cfg.data.default_reward not in allowed_table(cfg.data.allowed_rewards):
        problems.append(f"data.default_reward={cfg.data.default_reward!r}: not a reward rows may name "
                        f"(data.allowed_rewards and the names its plugins register: "
                        f"{', '.join(sorted(allowed_table(cfg.data.allowed_rewards)))})")
    for part, spec in combine.parts.items():
        try:
            get_reward(spec, **dict(combine.part_options.get(part, {})))
        except Exception as e:  # noqa: BLE001  (a plugin's import error is the user's to see, named)
            problems.append(f"reward.combine.parts.{part}={spec!r}: {type(e).__name__}: {e}")
    return problems


def _resume(cfg: TrainConfig, resume: bool) -> list[str]:
    from .checkpointing import checkpoint_dirs

    if resume and not checkpoint_dirs(Path(cfg.run.dir)):
        return [f"--resume: no checkpoint under {Path(cfg.run.dir) / 'checkpoints'} (run.dir={cfg.run.dir})"]
    return []
