"""Full weights through Ray's object store: the pool packs them (`to_shared`), each worker unpacks them
(`from_shared`). Both sides import this module, so neither imports the other."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


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
