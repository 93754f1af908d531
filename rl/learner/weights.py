"""A learner's weights coming out (sync payloads, exports) and its state going to disk and back.

Local (one process): LoRA as the PEFT adapter (+ trained vision/resampler weights in `extra/`), full weights as
safetensors, the optimizer with `torch.save`. Sharded (FSDP2): `torch.distributed.checkpoint`, each rank writing its
shards, readable by any number of ranks. Full tensors are gathered one at a time (every rank takes part, in the
same order), so the extra memory on a rank is one tensor, not a model copy. Full or merged weights for the rollout
workers stream from that gather into a staging folder (`stage`): rank 0 writes them bucket by bucket, the others
only take part in the gathers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from huggingface_hub import save_torch_state_dict
from peft import set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from torch.distributed.tensor import DTensor

from model.checkpoint import iter_safetensors, write_config
from model.lora import merged_state
from rollouts.transfer import TensorMeta, wire_dtype
from rollouts.weights import ShardWriter, Staging, stage_weights


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (an all-gather for a shard: every rank must call it, in the same order)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state(model: torch.nn.Module, keep=lambda name: True, cpu: bool = True, dtype: torch.dtype | None = None,
               cast=lambda name: True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor on the CPU) of the state dict's entries that `keep`, gathered one at a time (`cpu=False`:
    left where the gather put it, for a rank that only takes part). `dtype`: floating entries that `cast` are cast
    on each shard before the gather, so the gather moves (and the rank holds) the tensor in that dtype."""
    for name, t in model.state_dict().items():
        if keep(name):
            t = t.detach()
            if dtype is not None and t.is_floating_point() and cast(name):
                t = t.to(dtype)
            full = full_tensor(t)
            yield name, full.cpu() if cpu else full


def merged_stream(peft_model, cpu: bool = True, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The PEFT model's weights in the checkpoint's names with every LoRA delta merged (`model.lora.merged_state`,
    as `model.lora.merged_weights` for a local model), gathered one at a time and merged one LoRA layer at a time:
    a layer's entries (base weight, A, B: adjacent in the state dict) are held until the layer is complete.
    `dtype`: the other entries are gathered in it, a LoRA layer's are merged in their own and then cast."""
    base = peft_model.get_base_model()
    layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    owner, group = None, {}

    def merged(layer: str, entries: dict) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in _merge_layer(layers[layer], layer, entries):
            yield name, t.to(dtype) if dtype is not None and t.is_floating_point() else t

    for name, tensor in full_state(base, cpu=cpu, dtype=dtype, cast=lambda n: _lora_layer(n, layers) is None):
        layer = _lora_layer(name, layers)
        if group and layer != owner:
            yield from merged(owner, group)
            group = {}
        owner = layer
        if layer is None:
            yield name, tensor
        else:
            group[name[len(layer):]] = tensor
    if group:
        yield from merged(owner, group)


def stream_metas(model: torch.nn.Module, kind: str, dtype: str | None) -> list[TensorMeta]:
    """What `full_state` ("full") or `merged_stream` ("merged", `model` the PEFT model) will yield, in order, with
    the wire dtype (`dtype` for floating tensors) and the full shape, read from the state dict without a gather."""
    state = (model.get_base_model() if kind == "merged" else model).state_dict()
    return [TensorMeta(name.replace(".base_layer.", ".") if kind == "merged" else name,
                       str(wire_dtype(t, dtype)).removeprefix("torch."), list(t.shape))
            for name, t in state.items() if kind != "merged" or ".lora_" not in name]


def _lora_layer(name: str, layers: dict) -> str | None:
    """The LoRA layer a state-dict entry belongs to ("...q_proj" for "...q_proj.base_layer.weight" and
    "...q_proj.lora_A.default.weight"), or None."""
    for marker in (".base_layer.", ".lora_"):
        if marker in name and name.split(marker)[0] in layers:
            return name.split(marker)[0]
    return None


def _merge_layer(layer, prefix: str, entries: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """`merged_state` on one LoRA layer: in its own `named_modules` the layer is "", so its entries go in by their
    names relative to it (".base_layer.weight", ".lora_A.default.weight") and come out as ".weight"."""
    return [(prefix + name, t) for name, t in merged_state(layer, entries)]


def state_bytes(model: torch.nn.Module, dtype: str | None = None) -> int:
    """Bytes of the model's whole state (floating entries in `dtype` when given), from shapes alone: a bound on
    what `stage` writes (a LoRA model's adapters are counted too)."""
    cast = getattr(torch, dtype) if dtype else None
    return sum(t.numel() * (cast.itemsize if cast is not None and t.is_floating_point() else t.element_size())
               for t in model.state_dict().values())


def stage(pairs: Iterator[tuple[str, torch.Tensor]], staging: Staging, size: int, writer: bool) -> str | None:
    """Collective for a sharded model: every rank consumes `pairs` (each full tensor an all-gather, in the same
    order on every rank); the `writer` (rank 0) writes them bucket by bucket into a new staging folder
    (`rollouts.weights.stage_weights`) and returns it, the others return None."""
    if writer:
        return stage_weights(pairs, staging, size)
    for _ in pairs:
        pass
    return None


def save_adapter(peft_model, path: str | Path, rank0: bool = True) -> None:
    """The PEFT adapter folder (adapter_config.json + safetensors) vLLM loads as a LoRARequest."""
    lora = {name: t for name, t in full_state(peft_model, keep=lambda n: ".lora_" in n)}
    if rank0:
        peft_model.save_pretrained(str(path), state_dict=lora)


def write_weights(pairs: Iterator[tuple[str, torch.Tensor]], out: Path, config, dtype: torch.dtype,
                  bucket_bytes: int = 512 << 20, writer: bool = True) -> None:
    """`pairs`, consumed one at a time, as the safetensors shards of a standard checkpoint directory (with its
    index and config.json), in `dtype`, written bucket by bucket (`ShardWriter`: one bucket plus one tensor held at
    most). Collective for a sharded model: the ranks that are not the `writer` consume the pairs (their gathers)."""
    if not writer:
        for _ in pairs:
            pass
        return
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    shards = ShardWriter(str(out), bucket_bytes, dtype)
    for name, tensor in pairs:
        shards.add(name, tensor)
    shards.close()
    config.dtype = str(dtype).removeprefix("torch.")
    write_config(config, out)


# ---- state: one process ----
def save_local(model, optimizer, path: Path, lora: bool) -> None:
    if lora:
        model.save_pretrained(path / "adapter")
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
        if trained:  # trainable vision / resampler beside the adapter
            (path / "extra").mkdir()
            save_torch_state_dict({k: v.contiguous() for k, v in trained.items()}, str(path / "extra"))
    else:
        model.save_pretrained(path / "policy")
    torch.save(optimizer.state_dict(), path / "optimizer.pt")


def load_local(model, optimizer, path: Path, lora: bool) -> None:
    if lora:
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(path / "adapter" / "adapter_model.safetensors")))
        if (path / "extra").is_dir():
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, tensor in iter_safetensors(path / "extra"):
                    params[name].copy_(tensor)
    else:
        model.load_state_dict(dict(iter_safetensors(path / "policy")), strict=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))


# ---- state: sharded ----
def _options():
    """Only what trains (LoRA: the adapters): the frozen weights come from the base checkpoint, so loading is not
    strict about them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False)


def save_sharded(model, optimizer, path: Path) -> None:
    """Collective: each rank writes its shards of the trainable weights and the optimizer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))


def load_sharded(model, optimizer, path: Path) -> None:
    """Collective: read a `save_sharded` folder, on the same or another number of ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options())
