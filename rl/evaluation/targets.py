"""What `rl-eval --checkpoint PATH` evaluates: a model directory, one run checkpoint, or a whole run.

- a standard checkpoint directory (`config.json`: the release, a tiny model, a run's `export/`): one target;
- a run checkpoint `RUN/checkpoints/step-N` (a LoRA adapter or full weights): one target on the run's base model;
- a run directory `RUN` (`config.yaml` + `checkpoints/`): the base model as step 0, then every kept checkpoint,
  which gives the curves over training steps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import config as config_io
from ..config import TrainConfig


@dataclass
class Target:
    name: str
    step: int | None
    base: Path
    """The checkpoint directory the engine starts from."""
    adapter: Path | None = None
    """A PEFT adapter on top of `base` (LoRA runs)."""
    weights: Path | None = None
    """Full weights (safetensors directory) replacing `base`'s (full-weight runs)."""

    @property
    def lora_rank(self) -> int | None:
        return json.loads((self.adapter / "adapter_config.json").read_text())["r"] if self.adapter else None


def verify_target(target: Target) -> None:
    """The target's files read (config, safetensors headers): a CheckpointError naming the file otherwise."""
    from model.checkpoint import CheckpointError, open_safetensors, verify_checkpoint

    verify_checkpoint(target.base)
    if target.weights is not None:
        verify_checkpoint(target.weights)
    if target.adapter is not None:
        if not (target.adapter / "adapter_config.json").is_file():
            raise CheckpointError(f"{target.adapter / 'adapter_config.json'}: missing")
        for f in sorted(target.adapter.glob("*.safetensors")):
            with open_safetensors(f) as opened:
                opened.keys()


def run_config(run_dir: Path) -> TrainConfig | None:
    """The resolved config a run saved (`RUN/config.yaml`), or None."""
    path = run_dir / "config.yaml"
    return config_io.load(path) if path.is_file() else None


def _step_of(path: Path) -> int:
    match = re.fullmatch(r"step-(\d+)", path.name)
    if not match:
        raise ValueError(f"{path}: a run checkpoint folder is named step-N")
    return int(match.group(1))


def _base_of(run_dir: Path, cfg: TrainConfig | None) -> Path:
    if cfg is None:
        raise FileNotFoundError(f"{run_dir / 'config.yaml'}: not found; the run's base model is named there")
    base = Path(cfg.model.path)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'}: model.path={base}: no checkpoint there "
                                "(relative paths are read from the current directory)")
    return base


def checkpoint_target(path: Path, base: Path) -> Target:
    """A `step-N` folder of a run."""
    step = _step_of(path)
    if (path / "extra").is_dir():
        raise ValueError(f"{path}: this LoRA checkpoint also trains vision/resampler weights; evaluate the run's "
                         "export/ (merged weights) instead")
    if (path / "adapter").is_dir():
        return Target(path.name, step, base, adapter=path / "adapter")
    if (path / "policy").is_dir():
        return Target(path.name, step, base, weights=path / "policy")
    if (path / "sharded").is_dir():
        raise ValueError(f"{path}: a sharded learner's checkpoint (torch.distributed.checkpoint shards); evaluate "
                         "the run's export/ instead")
    raise FileNotFoundError(f"{path}: neither adapter/ nor policy/ inside: not a run checkpoint")


def find_targets(path: str | Path, include_base: bool = True) -> tuple[list[Target], TrainConfig | None]:
    """The targets in evaluation order (by step), and the run's config when there is one."""
    path = Path(path)
    if (path / "config.json").is_file():
        cfg = run_config(path.parent)  # a run's export/ has the run's config beside it
        step = cfg.run.steps if cfg is not None and path.name == "export" else None
        return [Target(path.name, step, path)], cfg
    if re.fullmatch(r"step-\d+", path.name) and path.parent.name == "checkpoints":
        run_dir = path.parent.parent
        cfg = run_config(run_dir)
        return [checkpoint_target(path, _base_of(run_dir, cfg))], cfg
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        cfg = run_config(path)
        base = _base_of(path, cfg)
        steps = sorted((path / "checkpoints").glob("step-*"), key=_step_of) if (path / "checkpoints").is_dir() else []
        targets = [Target("base", 0, base)] if include_base else []
        targets += [checkpoint_target(p, base) for p in steps]
        if not targets:
            raise FileNotFoundError(f"{path}: a run directory without checkpoints")
        return targets, cfg
    raise FileNotFoundError(f"{path}: not a checkpoint directory (config.json), a run checkpoint (step-N) or a run "
                            "directory (config.yaml, checkpoints/)")
