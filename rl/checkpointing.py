"""Run checkpoints (atomic, resumable) and the export to a standard checkpoint directory.

A checkpoint is a folder `step-NNNNNN` holding the policy (LoRA adapter or full weights), the optimizer and
scheduler, and `state.pt` (step, data position, schedule and reward RNGs, torch RNG). It is written under a
temporary name and renamed into place, so a run killed mid-write never leaves a half checkpoint as the latest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from peft import set_peft_model_state_dict

from model.checkpoint import iter_safetensors, write_config

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
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if learner.config.lora:
        learner.model.save_pretrained(tmp / "adapter")
        trained = {n: p.detach() for n, p in learner.model.named_parameters()
                   if p.requires_grad and ".lora_" not in n}
        if trained:  # trainable vision / resampler beside the adapter
            (tmp / "extra").mkdir()
            save_torch_state_dict({k: v.contiguous() for k, v in trained.items()}, str(tmp / "extra"))
    else:
        learner.model.save_pretrained(tmp / "policy")
    torch.save({"optimizer": learner.optimizer.state_dict(), "scheduler": learner.scheduler.state_dict(),
                "version": learner.version}, tmp / "optimizer.pt")
    torch.save(dict(state, step=step, torch_rng=torch.random.get_rng_state()), tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, learner) -> dict:
    """Restore the learner in place; returns the saved state (step, data position, RNGs)."""
    if learner.config.lora:
        from safetensors.torch import load_file

        set_peft_model_state_dict(learner.model, load_file(str(path / "adapter" / "adapter_model.safetensors")))
        if (path / "extra").is_dir():
            extra = dict(iter_safetensors(path / "extra"))
            params = dict(learner.model.named_parameters())
            with torch.no_grad():
                for name, tensor in extra.items():
                    params[name].copy_(tensor)
    else:
        state = dict(iter_safetensors(path / "policy"))
        learner.model.load_state_dict(state, strict=True)
    opt = torch.load(path / "optimizer.pt", weights_only=False)
    learner.optimizer.load_state_dict(opt["optimizer"])
    learner.scheduler.load_state_dict(opt["scheduler"])
    learner.version = opt["version"]
    state = torch.load(path / "state.pt", weights_only=False)
    torch.random.set_rng_state(state["torch_rng"])
    return state


def export_checkpoint(learner, base_ckpt: Path, out: Path) -> Path:
    """A standard checkpoint directory (LoRA merged) with the base checkpoint's tokenizer and processor files."""
    out.mkdir(parents=True, exist_ok=True)
    _, weights = learner.sync_payload("merged" if learner.config.lora else "full")
    for old in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    save_torch_state_dict({n: t.detach().contiguous().cpu() for n, t in weights}, str(out))
    write_config(learner.base_model(learner.model).config, out)
    for name in SUPPORT_FILES:
        if (Path(base_ckpt) / name).is_file():
            shutil.copy(Path(base_ckpt) / name, out / name)
    return out
