"""Checkpoint directories in the released format: config.json (+ the remote-code modules vLLM loads by auto_map)
and sharded safetensors with model.safetensors.index.json. Errors name the file and the tensor."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import SafetensorError, safe_open

from .remote_code.configuration_minicpm import MiniCPMVConfig

REMOTE_CODE = Path(__file__).parent / "remote_code"
CONFIG_AUTO_MAP = {"AutoConfig": "configuration_minicpm.MiniCPMVConfig", "AutoModel": "modeling_minicpmv.MiniCPMV"}
"""config.json's auto_map: the configuration (runs anywhere) and the model (`remote_code/modeling_minicpmv.py`:
this toolkit's, which `transformers.AutoModel` then loads with `trust_remote_code=True`)."""
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing a file, or holds a malformed or mismatched one."""


def load_config(path: str | os.PathLike) -> MiniCPMVConfig:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (a MiniCPM-V checkpoint directory needs config.json)")
    try:
        return MiniCPMVConfig.from_json_file(str(file))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e
    except Exception as e:  # strict field validation: the message names the field
        raise CheckpointError(f"{file}: {e}") from e


def shard_files(path: str | os.PathLike) -> dict[str, Path]:
    """tensor name -> shard file, from the index (or the single model.safetensors)."""
    path = Path(path)
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index ({e!r})") from e
        return {name: path / file for name, file in weight_map.items()}
    single = path / SINGLE
    if single.is_file():
        with open_safetensors(single) as f:
            return {name: single for name in f.keys()}
    raise CheckpointError(f"{path}: no {INDEX} and no {SINGLE}")


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Cheap checks of a checkpoint directory before an engine loads it: config.json parses, every safetensors
    file listed is there and its header reads. A CheckpointError names the file (vLLM's own error would not)."""
    load_config(path)
    for file in sorted(set(shard_files(path).values())):
        with open_safetensors(file) as f:
            f.keys()


def open_safetensors(file: Path):
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (listed in the safetensors index)")
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


def iter_safetensors(path: str | os.PathLike):
    """(name, tensor) pairs of a checkpoint directory, shard by shard (memory-mapped)."""
    by_file: dict[Path, list[str]] = {}
    for name, file in shard_files(path).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with open_safetensors(file) as f:
            for name in names:
                yield name, f.get_tensor(name)


def load_state_dict(path: str | os.PathLike, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read every tensor, checking names and shapes against `expected` (a model's state_dict)."""
    files = shard_files(path)
    missing = sorted(set(expected) - set(files))
    unexpected = sorted(set(files) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensor names do not match the model: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
    state = {}
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with open_safetensors(file) as f:
            for name in names:
                try:
                    tensor = f.get_tensor(name)
                except Exception as e:
                    raise CheckpointError(f"{file}: tensor {name!r} unreadable ({e})") from e
                if tuple(tensor.shape) != tuple(expected[name].shape):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                          f"the config implies {tuple(expected[name].shape)}")
                state[name] = tensor.to(expected[name].dtype) if expected[name].dtype != tensor.dtype and \
                    not tensor.is_floating_point() else tensor
    return state


def write_config(config: MiniCPMVConfig, path: str | os.PathLike) -> None:
    """config.json with auto_map, and the configuration module it points to."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config.auto_map = dict(CONFIG_AUTO_MAP)
    config.architectures = ["MiniCPMV"]
    config.to_json_file(str(path / "config.json"))
    for module in ("configuration_minicpm.py", "modeling_minicpmv.py"):
        shutil.copy(REMOTE_CODE / module, path / module)


def save_checkpoint(model, path: str | os.PathLike, max_shard_size: str | int = "5GB") -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in list(path.glob("model*.safetensors")) + [path / INDEX]:
        old.unlink(missing_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_torch_state_dict(state, str(path), max_shard_size=max_shard_size)
    write_config(model.config, path)
