"""Weight transport from the learner to the engines.

- Ray's object store: the pool packs full weights (`to_shared`), each worker unpacks them (`from_shared`).
- A safetensors file written tensor by tensor (`write_safetensors`, into `staging_dir`: /dev/shm when it has room):
  the pool's one-node "shm" transport, and how a worker hands in-memory weights to a vLLM engine that runs in
  other processes (vLLM's multiprocess engine: collective_rpc arguments travel as msgpack, which carries no
  Python iterators and decodes tensors as plain lists).
- Staged shards (`Staging`, `stage_weights`, `ShardWriter`): a learner writes full weights as it produces them, bucket
  by bucket, as a checkpoint directory of safetensors shards in a staging folder the workers read; only the folder's
  path travels. Staging folders record their creator, so one left by a killed run is removed (`sweep_stale`).
Every side imports this module, so none imports another.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from core.process import alive, start_time

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
SHM = "/dev/shm"
SAFETENSORS_FILE = "model.safetensors"
"""The single-file checkpoint name `model.checkpoint.iter_safetensors` reads."""
OWNER = ".pid"
"""A staging folder's name ends in `.pid<PID>-<START>@<HOST>`: the process that created it, and when it started (a
later process with the same pid is not its owner): `sweep_stale` reads it."""


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


def staging_dir(size: int, prefix: str = "minicpmv-rl-", fallback: str | None = None, shm: bool = True) -> str:
    """A new temporary directory for `size` bytes of weights: in /dev/shm (RAM, nothing touches a disk) when `shm`
    and it has room for them, else in `fallback` (created if missing; None: the system's temporary directory; a
    container's /dev/shm is often 64 MiB). Its name ends in its creator (`OWNER`), which `sweep_stale` reads. The
    caller removes it."""
    parent = fallback
    if shm and os.path.isdir(SHM) and shutil.disk_usage(SHM).free > size + (64 << 20):
        parent = SHM
    if parent is not None:
        os.makedirs(parent, exist_ok=True)
    me = os.getpid()
    return tempfile.mkdtemp(prefix=prefix, suffix=f"{OWNER}{me}-{start_time(me) or 'x'}@{socket.gethostname()}",
                            dir=parent)


def sweep_stale(parent: str = SHM, prefix: str = "minicpmv-rl-") -> list[str]:
    """Remove the staging folders in `parent` whose creator, a process on this host, is gone (a killed run's:
    weights in /dev/shm are RAM that nothing else frees). Folders of live processes, of other hosts (a shared
    /dev/shm under another hostname) and without an owner in their name are left alone. Returns those removed."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix) and OWNER in n]
    except OSError:
        return []
    removed = []
    for name in names:
        owner, _, host = name.rsplit(OWNER, 1)[1].partition("@")
        pid, _, start = owner.partition("-")
        if pid.isdigit() and host == socket.gethostname() and not alive(int(pid), start if start.isdigit() else None):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(os.path.join(parent, name))
    return removed


@dataclass
class Staging:
    """Where and how a learner stages full weights for the rollout workers: a new folder of safetensors shards."""
    fallback: str
    """The parent folder when /dev/shm is not used or lacks room: one every reader sees (the trainer's
    run.dir/.sync, on the shared file system of a multi-node run)."""
    shm: bool = True
    """Try /dev/shm first: only when every reader is on the writer's node (it is node-local RAM)."""
    bucket_mb: int = 512
    """Tensors are held and written as one shard per bucket of this size (a larger tensor is a shard alone)."""
    dtype: str | None = None
    """Floating tensors cast to this dtype ("bfloat16", ...): the engine's, which loads them in it anyway, so the
    copy is no larger than what the engine holds. None: as the learner holds them."""
    prefix: str = "minicpmv-rl-"


class ShardWriter:
    """A checkpoint directory of safetensors shards, written bucket by bucket: tensors (cast to `dtype`, copied to
    the CPU) are held until the next one would take the bucket past `bucket_bytes`, then written as one shard;
    a tensor that fills the bucket alone is written at once. So the writer never holds more than one bucket plus
    the tensor being added (`peak_bytes` records it). The index, written last (renamed into place), is what
    readers open: a folder without it is incomplete."""

    def __init__(self, folder: str, bucket_bytes: int, dtype: torch.dtype | None = None):
        self.folder, self.bucket_bytes, self.dtype = folder, max(1, bucket_bytes), dtype
        self.bucket: list[tuple[str, torch.Tensor]] = []
        self.held = 0
        self.peak_bytes = 0
        self.total_bytes = 0
        self.weight_map: dict[str, str] = {}
        self.names: set[str] = set()
        self.shards = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.names:
            raise ValueError(f"tensor {name!r} given twice")
        self.names.add(name)
        tensor = tensor.detach()
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        tensor = tensor.cpu()
        size = tensor.numel() * tensor.element_size()
        self.peak_bytes = max(self.peak_bytes, self.held + size)
        if self.bucket and self.held + size > self.bucket_bytes:
            self._flush()
        self.bucket.append((name, tensor))
        self.held += size
        if self.held >= self.bucket_bytes:
            self._flush()

    def _flush(self) -> None:
        self.shards += 1
        file = f"model-{self.shards:05d}.safetensors"
        write_safetensors(self.bucket, os.path.join(self.folder, file))
        self.weight_map.update({name: file for name, _ in self.bucket})
        self.total_bytes += self.held
        self.bucket, self.held = [], 0

    def close(self) -> int:
        """The last bucket and the index; returns the bytes of tensor data."""
        from model.checkpoint import INDEX

        if self.bucket:
            self._flush()
        index = {"metadata": {"total_size": self.total_bytes, "bucket_bytes": self.bucket_bytes,
                              "peak_bytes": self.peak_bytes}, "weight_map": self.weight_map}
        tmp = os.path.join(self.folder, INDEX + ".tmp")
        with open(tmp, "w") as f:
            json.dump(index, f)
        os.replace(tmp, os.path.join(self.folder, INDEX))
        return self.total_bytes


def stage_weights(weights: Iterable[tuple[str, torch.Tensor]], staging: Staging, size: int) -> str:
    """(name, tensor) pairs, consumed one at a time, as a new staging folder of shards (see `ShardWriter`) under
    /dev/shm or `staging.fallback` (room for `size` bytes decides, see `staging_dir`); returns the folder. On an
    error (a folder that cannot be made, a full disk) the rest of `weights` is still consumed (a sharded learner's
    other ranks are gathering the same tensors with this one), then the partial folder is removed and the error
    raised, naming the folder."""
    folder, error = None, None
    try:
        folder = staging_dir(size, staging.prefix, fallback=staging.fallback, shm=staging.shm)
        writer = ShardWriter(folder, staging.bucket_mb << 20, getattr(torch, staging.dtype) if staging.dtype else None)
    except Exception as e:  # noqa: BLE001 - raised below, once the stream is drained
        error = e
    for name, tensor in weights:
        if error is None:
            try:
                writer.add(name, tensor)
            except Exception as e:  # noqa: BLE001 - as above
                error = e
    if error is None:
        try:
            writer.close()
        except Exception as e:  # noqa: BLE001
            error = e
    if error is None:
        return folder
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    if isinstance(error, OSError):
        raise OSError(f"staging the weights in {folder or staging.fallback} failed: {error}") from error
    raise error
