"""Weight transport from the learner to the engines.

- Ray's object store: the pool packs full weights (`to_shared`), each worker unpacks them (`from_shared`).
- A safetensors file written tensor by tensor (`write_safetensors`, into `staging_dir`: /dev/shm when it has room):
  the pool's one-node "shm" transport, and how a worker hands in-memory weights to a vLLM engine that runs in
  other processes (vLLM's multiprocess engine: collective_rpc arguments travel as msgpack, which carries no
  Python iterators and decodes tensors as plain lists).
- `EngineWeightLoader`: the methods `make_llm` adds to vLLM's worker (`worker_extension_cls`), called through
  `collective_rpc` by name with a path, so nothing but a string crosses the process boundary.
Every side imports this module, so none imports another.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from typing import Iterable, Iterator

import torch

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
SHM = "/dev/shm"
SAFETENSORS_FILE = "model.safetensors"
"""The single-file checkpoint name `model.checkpoint.iter_safetensors` reads."""


def to_shared(weights: Iterable) -> list[tuple[str, str, object]]:
    """(name, dtype, numpy array) triples: Ray stores numpy arrays once in shared memory and every worker on the
    node reads them without a copy (pickled torch tensors would be copied into each worker). bf16 travels as int16."""
    out = []
    for name, tensor in weights:
        tensor = tensor.detach().contiguous().cpu()
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        out.append((name, str(tensor.dtype).removeprefix("torch."), raw.numpy()))
    return out


def from_shared(triples) -> Iterator[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs of `to_shared`'s triples, without a copy."""
    for name, dtype, array in triples:
        tensor = torch.from_numpy(array)
        yield name, tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def write_safetensors(weights: Iterable[tuple[str, torch.Tensor]], file: str | os.PathLike) -> int:
    """One safetensors file of (name, tensor) pairs, written tensor by tensor: the header comes from shapes and
    dtypes alone, then each tensor is made contiguous on the CPU (a copy only for GPU or strided tensors) and
    written, one at a time. The file is the only full extra copy (safetensors' own save_file first builds a bytes
    copy of every tensor). Returns the bytes of tensor data."""
    items = [(name, tensor.detach()) for name, tensor in weights]
    header: dict[str, dict] = {}
    offset = 0
    for name, tensor in items:
        if name in header:
            raise ValueError(f"tensor {name!r} given twice")
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} has no safetensors code")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # tensor data starts 8-byte aligned
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, tensor in items:
            if tensor.numel():
                f.write(tensor.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().data)
    return offset


def nbytes(weights: Iterable[tuple[str, torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for _, t in weights)


def staging_dir(size: int, prefix: str = "minicpmv-rl-") -> str:
    """A new temporary directory for `size` bytes of weights: in /dev/shm (RAM, nothing touches a disk) when it
    has room for them, else in the system's temporary directory (a container's /dev/shm is often 64 MiB).
    The caller removes it."""
    parent = None
    if os.path.isdir(SHM) and shutil.disk_usage(SHM).free > size + (64 << 20):
        parent = SHM
    return tempfile.mkdtemp(prefix=prefix, dir=parent)


class EngineWeightLoader:
    """Mixed into vLLM's worker class by `make_llm` (vLLM's `worker_extension_cls`); its methods run in the
    process that holds the model, whichever process that is. Names carry a prefix: vLLM refuses an extension
    whose attributes clash with the worker's."""

    def rl_reload_from_dir(self, path: str) -> int:
        """Full weights from a safetensors directory (a single `model.safetensors` or an index), read tensor by
        tensor (memory-mapped) and loaded through the worker's own `reload_weights`, which repacks them for the
        CPU kernels and resets the runner's LoRA, encoder and multimodal state, exactly like an in-process reload
        from in-memory pairs. The engine's model directory stays what it was (vLLM's reload from a path would
        repoint it). Returns the number of tensors read."""
        from model.checkpoint import iter_safetensors

        count = 0

        def counted():
            nonlocal count
            for pair in iter_safetensors(path):
                count += 1
                yield pair

        self.reload_weights(weights_iterator=counted())  # type: ignore[attr-defined]
        return count
