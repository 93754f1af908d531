"""Staged weights (`rollouts/weights.py`): the bucketed shard writer's memory bound and read-back, and the sweep of
staging folders a killed run left in /dev/shm."""

import json
import os
import subprocess
import sys

import pytest
import torch

from model.checkpoint import INDEX, iter_safetensors
from rollouts.weights import ShardWriter, Staging, stage_weights, staging_dir, sweep_stale


def weights(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Tensors of mixed sizes and dtypes: several much smaller than a 64 KiB bucket, two larger than one."""
    g = torch.Generator().manual_seed(seed)
    sizes = [100, 3000, 9000, 40000, 700, 16384, 20000, 5, 12000]
    out = [(f"t{i}", torch.randn(n, generator=g)) for i, n in enumerate(sizes)]
    return out + [("ids", torch.arange(300)), ("half", torch.randn(50, generator=g).bfloat16())]


def test_the_writer_holds_one_bucket_plus_one_tensor_and_reads_back(tmp_path):
    pairs = weights()
    bucket = 64 << 10
    writer = ShardWriter(str(tmp_path), bucket)
    held = []
    add = writer.add

    def watched(name, tensor):  # what the writer holds after each call, from outside
        add(name, tensor)
        held.append(sum(t.numel() * t.element_size() for _, t in writer.bucket))

    writer.add = watched
    for name, tensor in pairs:
        writer.add(name, tensor)
    total = writer.close()
    biggest = max(t.numel() * t.element_size() for _, t in pairs)
    assert total == sum(t.numel() * t.element_size() for _, t in pairs)
    assert max(held) < bucket  # between calls, less than one bucket is held
    assert biggest < writer.peak_bytes <= bucket + biggest  # during a call: one bucket plus the tensor being added
    index = json.loads((tmp_path / INDEX).read_text())
    assert index["metadata"]["peak_bytes"] == writer.peak_bytes and index["metadata"]["total_size"] == total
    assert writer.shards == len(set(index["weight_map"].values())) >= 4
    back = list(iter_safetensors(tmp_path))
    assert [n for n, _ in back] == [n for n, _ in pairs]  # the order they came in
    for (_, ours), (_, theirs) in zip(back, pairs):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_the_writer_casts_floating_tensors_only(tmp_path):
    writer = ShardWriter(str(tmp_path), 1 << 20, dtype=torch.bfloat16)
    for name, tensor in weights():
        writer.add(name, tensor)
    writer.close()
    back = dict(iter_safetensors(tmp_path))
    assert back["ids"].dtype == torch.int64 and back["t0"].dtype == torch.bfloat16
    assert torch.equal(back["t3"], dict(weights())["t3"].bfloat16())


def test_a_failed_stage_consumes_every_tensor_and_leaves_no_folder(tmp_path):
    """A sharded learner's other ranks gather every tensor with the writer: it must go on consuming after an
    error, or they would wait for it forever."""
    consumed = []

    def pairs():
        for name, tensor in weights() + [("t0", torch.zeros(1))]:  # a name twice: the writer refuses it
            consumed.append(name)
            yield name, tensor

    with pytest.raises(ValueError, match="'t0' given twice"):
        stage_weights(pairs(), Staging(str(tmp_path / "sync"), shm=False), size=1 << 20)
    assert len(consumed) == len(weights()) + 1
    assert not any((tmp_path / "sync").iterdir())  # the partial folder went

    (tmp_path / "file").write_text("")  # a fallback that cannot be a folder
    consumed.clear()
    with pytest.raises(OSError, match="staging the weights in .*file"):
        stage_weights(pairs(), Staging(str(tmp_path / "file" / "sync"), shm=False), size=1 << 20)
    assert len(consumed) == len(weights()) + 1


def test_a_killed_runs_staging_folder_is_swept_and_a_live_ones_kept(tmp_path):
    parent = str(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "from rollouts.weights import staging_dir; "
                           f"print(staging_dir(0, fallback={parent!r}, shm=False))"],
                          capture_output=True, text=True, check=True, cwd=os.getcwd()).stdout.strip()
    live = staging_dir(0, fallback=parent, shm=False)
    foreign = tmp_path / "minicpmv-rl-x.pid1@another-host"
    other = tmp_path / "minicpmv-rl-no-owner"
    foreign.mkdir()
    other.mkdir()
    assert os.path.isdir(dead) and ".pid" in os.path.basename(dead)
    assert sweep_stale(parent) == [dead]
    assert not os.path.exists(dead) and os.path.isdir(live) and foreign.is_dir() and other.is_dir()
