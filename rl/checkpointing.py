"""Run checkpoints (atomic, resumable) and the export to a standard checkpoint directory.

A checkpoint is a folder `step-NNNNNN` holding what the learner saves (`Learner.save_state`: the LoRA adapter or
full weights, the optimizer and scheduler; per-rank shards for the sharded learner) and `state.pt` (step, data
position, schedule and reward RNGs, torch RNG). It is written under a temporary name and renamed into place, so a
run killed mid-write never leaves a half checkpoint as the latest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .errors import CheckpointError

# Files of a checkpoint directory that are not weights: tokenizer, processor, remote code.
SUPPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                 "preprocessor_config.json", "processor_config.json", "configuration_minicpm.py",
                 "image_processing_minicpmv.py", "processing_minicpmv.py", "generation_config.json")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints (`step-N`; not the `.tmp-` folders of a write in progress), oldest first by
    step number."""
    root = run_dir / "checkpoints"
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_checkpoint(run_dir: Path, step: int, learner, state: dict, keep: int = 2) -> Path:
    """`learner.save_state` and the run's own state (`state.pt`) into `step-N`, atomically; then rotation. A write
    that fails (a full disk) leaves the previous checkpoints as they were and says which folder it was writing."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        learner.save_state(tmp)
        torch.save(dict(state, step=step, torch_rng=torch.random.get_rng_state()), tmp / "state.pt")
    except Exception as e:  # noqa: BLE001  (torch reports a full disk as a RuntimeError without the path)
        shutil.rmtree(tmp, ignore_errors=True)
        previous = checkpoint_dirs(run_dir)
        raise CheckpointError(f"{tmp}: could not write the checkpoint of step {step} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); "
                              + (f"the previous one, {previous[-1]}, is intact" if previous else "no earlier one")
                              ) from e
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    rotate(run_dir, keep)
    return final


def rotate(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints. Each older one is first renamed out of the `step-N` names (atomic), then
    deleted, so a kill in the middle never leaves a half-deleted folder that looks like a checkpoint; leftovers of an
    earlier kill (`.old-*` being deleted, `.tmp-*` being written) are deleted too. A resumed run calls it first."""
    root = run_dir / "checkpoints"
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        os.replace(old, root / f".old-{old.name}")
    for leftover in [*root.glob(".old-*"), *root.glob(".tmp-*")] if root.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: Path, learner) -> dict:
    """Restore the learner in place; returns the saved state (step, data position, RNGs)."""
    try:
        learner.load_state(path)
        state = torch.load(path / "state.pt", weights_only=False)
    except Exception as e:  # noqa: BLE001  (a truncated file says "invalid header length", not which file)
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    torch.random.set_rng_state(state["torch_rng"])
    return state


def load_latest(run_dir: Path, learner, log=None) -> tuple[Path, dict]:
    """The newest checkpoint that reads, falling back past unreadable ones (each named in `log`)."""
    found = checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
    problems = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path, learner)
        except CheckpointError as e:
            problems.append(str(e))
            if log is not None:
                log.warning("%s; trying the one before", e)
            continue
        return path, state
    raise CheckpointError("--resume: no checkpoint can be read: " + "; ".join(problems))


def export_checkpoint(learner, base_ckpt: Path, out: Path) -> Path:
    """A standard checkpoint directory (LoRA merged, in the base checkpoint's dtype) with the base checkpoint's
    tokenizer and processor files; written beside `out` and renamed into place (an interrupted export leaves the
    previous one)."""
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        learner.export(tmp)
        for name in SUPPORT_FILES:
            if (Path(base_ckpt) / name).is_file():
                shutil.copy(Path(base_ckpt) / name, tmp / name)
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{out}: could not write the export ({type(e).__name__}: {e})") from e
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
