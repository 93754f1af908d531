"""The sharded learner's model, loaded shard by shard, and the LoRA initialisation both learners share.

A rank of the sharded learner never holds the whole model: it builds it on the meta device (no memory), applies
LoRA and sets what trains and every dtype there (fp32 for what trains, the compute dtype for the frozen rest), shards
it with FSDP2, allocates only its local shards (`to_empty`) and fills each from the safetensors files, reading only
its slice of every tensor. The fp32 master copy is so made per shard: at 8.7B the rank never holds the 17.4 GB bf16
checkpoint, nor its 34.8 GB fp32 upcast (`load_sharded`). The slices (FSDP2 shards dim 0: a run of rows, contiguous
in the file) are read with plain reads, not through a memory map: the pages of a mapped file count in the reader's
resident memory as long as it is mapped, which would put half of the file back into each rank's.

The LoRA weights are not in the checkpoint, and a meta model draws none: `init_lora` draws them, on the local and on
the sharded learner alike, with PEFT's own formulas (A: kaiming_uniform_(a=sqrt(5)), B: zeros) from one seeded
generator, module by module in name order, each A drawn whole and each rank keeping its rows. The seed is drawn
from torch's global generator (`lora_seed`), so `torch.manual_seed(s)` before building a learner fixes its
adapters, as it did with PEFT's own initialisation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from model import MiniCPMV
from model.checkpoint import CheckpointError, load_config, open_safetensors, shard_files

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def lora_seed() -> int:
    """The seed of `init_lora`, drawn from torch's global generator."""
    return int(torch.randint(0, 2**62, (1,)).item())


@torch.no_grad()
def init_lora(model: torch.nn.Module, seed: int) -> None:
    """PEFT's default LoRA initialisation, deterministic for `seed` whatever the device (meta included) and the
    sharding: the LoRA modules in name order, A ~ kaiming_uniform_(a=sqrt(5)) drawn whole in fp32 on the CPU from
    one generator, B = 0; a sharded parameter keeps its own rows."""
    generator = torch.Generator().manual_seed(seed)
    for _, module in sorted(((n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)),
                            key=lambda item: item[0]):
        for adapter in sorted(module.lora_A):
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            full = torch.empty(tuple(a.shape))
            torch.nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=generator)
            _fill(a, lambda index, _, full=full: full[index])
            _fill(b, lambda index, _, shape=tuple(b.shape): torch.zeros(shape)[index])


def meta_model(ckpt: str | Path, dtype: torch.dtype, attn_implementation: str = "sdpa") -> MiniCPMV:
    """The checkpoint's architecture on the meta device, in `dtype` (nothing read but config.json)."""
    with torch.device("meta"):
        return MiniCPMV(load_config(ckpt), attn_implementation=attn_implementation).to(dtype)


@torch.no_grad()
def load_sharded(model: torch.nn.Module, base: MiniCPMV, ckpt: str | Path, device: torch.device,
                 compute: torch.dtype, lora_init_seed: int | None = None) -> None:
    """Materialise `model` (built by `meta_model`, maybe PEFT-wrapped around `base`, sharded by FSDP2) on
    `device`: each parameter's local shard read from its slice of the checkpoint, the LoRA weights drawn by
    `init_lora`, the non-persistent buffers rebuilt. Values as `MiniCPMV.from_pretrained(dtype=compute)`
    gives them, then cast to the parameter's dtype (fp32 where it trains)."""
    model.to_empty(device=device)
    files = shard_files(ckpt)
    wanted: dict[str, torch.nn.Parameter] = {}
    for name, param in base.named_parameters():
        if ".lora_" not in name:
            wanted[name.replace(".base_layer.", ".")] = param
    missing, unexpected = sorted(set(wanted) - set(files)), sorted(set(files) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: tensor names do not match the model: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")
    by_file: dict[Path, list[str]] = {}
    for name in wanted:
        by_file.setdefault(files[name], []).append(name)
    for file, names in by_file.items():
        with SafetensorsFile(file) as f:
            for name in names:
                param = wanted[name]
                if f.shape(name) != tuple(param.shape):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {f.shape(name)}, "
                                          f"the config implies {tuple(param.shape)}")
                _fill(param, lambda index, local, name=name, f=f: f.read(name, index, local, compute))
    if lora_init_seed is not None:
        init_lora(model, lora_init_seed)
    base._rebuild_buffers()  # the rotary frequencies (non-persistent), then as from_pretrained casts them
    base.llm.model.rotary_emb.to(device=device, dtype=compute)


class SafetensorsFile:
    """One safetensors file, its tensors' slices read with plain reads (no memory map, see above)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: missing (listed in the safetensors index)")
        self.file = open(self.path, "rb", buffering=0)  # noqa: SIM115  (closed by __exit__)
        try:
            size = int.from_bytes(self.file.read(8), "little")
            self.header = json.loads(self.file.read(size))
            self.start = 8 + size
        except (ValueError, OSError) as e:
            self.file.close()
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({e})") from e
        self._mapped = None  # safe_open, for a slice that is not a run of rows

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
        self._mapped = None

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.header:
            raise CheckpointError(f"{self.path}: no tensor {name!r} (the index lists it in this file)")
        return tuple(self.header[name]["shape"])

    def read(self, name: str, index: tuple[slice, ...], out: torch.Tensor | None = None,
             via: torch.dtype | None = None) -> torch.Tensor | None:
        """The tensor's `index` (one slice per dim), cast to `via`. A run of whole rows is read straight from the
        file, into `out` itself when it is a contiguous CPU tensor of the stored dtype (returns None then)."""
        info = self.header[name]
        dtype, shape = SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"])
        if any((s.start, s.stop) != (0, n) for s, n in zip(index[1:], shape[1:])):  # not whole rows
            if self._mapped is None:
                self._mapped = open_safetensors(self.path)
            return self._mapped.get_slice(name)[index].to(via or dtype)
        rows = index[0] if index else slice(0, 1)
        direct = (out is not None and out.device.type == "cpu" and out.dtype == dtype and out.is_contiguous()
                  and via in (None, dtype) and tuple(out.shape) == (rows.stop - rows.start, *shape[1:]))
        buffer = out if direct else torch.empty((rows.stop - rows.start, *shape[1:]), dtype=dtype)
        width = math.prod(shape[1:]) * buffer.element_size()
        view = memoryview(buffer.reshape(-1).view(torch.uint8).numpy()).cast("B")
        self.file.seek(self.start + info["data_offsets"][0] + rows.start * width)
        done = 0
        while done < len(view):
            got = self.file.readinto(view[done:])
            if not got:
                raise CheckpointError(f"{self.path}: tensor {name!r} ends early (a truncated file)")
            done += got
        return None if direct else buffer.reshape(shape if not index else buffer.shape).to(via or dtype)


def _fill(param: torch.Tensor, read) -> None:
    """Copy into `param`'s local shard (the whole tensor when not a DTensor) what `read(index, local)` returns for
    the shard's index (a tuple of slices into the full tensor; None: `read` filled `local` itself)."""
    if isinstance(param, DTensor):
        shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        local = param.to_local()
        if tuple(local.shape) != tuple(shape):
            raise RuntimeError(f"a local shard of shape {tuple(local.shape)}, its placement implies {shape}")
    else:
        shape, offset, local = tuple(param.shape), (0,) * param.dim(), param
    if local.numel() == 0:
        return
    value = read(tuple(slice(o, o + n) for o, n in zip(offset, shape)), local)
    if value is not None:
        local.copy_(value)
