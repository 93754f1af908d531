"""Weight transport: numpy views through Ray's object store, and safetensors files written tensor by tensor."""

import os

import pytest
import torch
from safetensors import safe_open

from model.checkpoint import iter_safetensors
from rollouts.weights import (SAFETENSORS_FILE, from_shared, nbytes, staging_dir, to_shared,
                              write_safetensors)


def test_shared_weights_round_trip_unchanged():
    weights = [("a.weight", torch.randn(3, 4)), ("b.bias", torch.randn(5).to(torch.bfloat16))]
    packed = to_shared(weights)
    assert [(name, dtype) for name, dtype, _ in packed] == [("a.weight", "float32"), ("b.bias", "bfloat16")]
    back = list(from_shared(packed))
    assert [name for name, _ in back] == ["a.weight", "b.bias"]
    for (_, ours), (_, theirs) in zip(back, weights):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_streamed_safetensors_read_back_unchanged(tmp_path):
    weights = [("w", torch.randn(3, 4)), ("strided", torch.randn(4, 6)[:, ::2]), ("bf16", torch.randn(7).bfloat16()),
               ("half", torch.randn(2, 2).half()), ("ids", torch.arange(5)), ("mask", torch.tensor([True, False])),
               ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 3)),
               ("param", torch.nn.Parameter(torch.randn(2)))]  # requires grad
    size = write_safetensors(weights, tmp_path / SAFETENSORS_FILE)
    assert size == nbytes(weights)
    with safe_open(str(tmp_path / SAFETENSORS_FILE), framework="pt") as f:  # the reference reader accepts it
        assert set(f.keys()) == {n for n, _ in weights}
    back = dict(iter_safetensors(tmp_path))
    for name, tensor in weights:
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor.detach()), name


def test_streamed_safetensors_refuse_a_name_twice(tmp_path):
    with pytest.raises(ValueError, match="'a' given twice"):
        write_safetensors([("a", torch.zeros(1)), ("a", torch.ones(1))], tmp_path / "x.safetensors")


def test_staging_dir_prefers_shared_memory_when_it_has_room():
    small = staging_dir(1 << 20)
    huge = staging_dir(1 << 60)  # no /dev/shm holds an exabyte: the system's temporary directory
    try:
        assert os.path.isdir(small) and os.path.isdir(huge)
        if os.path.isdir("/dev/shm"):
            assert small.startswith("/dev/shm/")
        assert not huge.startswith("/dev/shm/")
    finally:
        os.rmdir(small)
        os.rmdir(huge)
