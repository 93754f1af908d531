"""Each rank of the sharded learner gets its share of a batch, once, and no PIL images (rl/learner/sharded.py:
`pack_share`); a rank whose share is empty still steps with the others (its filler is made on the rank)."""

import dataclasses
import math
import pickle

import pytest
import torch

from rl.config import LearnerConfig
from rl.learner import LocalLearner, TrainSample
from rl.learner.sharded import MB, ShardedLearner, pack_share, unpack_share


def test_a_share_travels_without_images_and_a_group_keeps_one_prompt(samples):
    group = [dataclasses.replace(samples[0], advantage=a) for a in (1.0, -1.0, 0.5, -0.5)]  # one prompt object
    blob = pack_share(group)
    assert b"PIL" not in blob
    back, parts = unpack_share(blob)
    assert parts is None and len(back) == 4
    assert all(s.prompt is back[0].prompt for s in back)  # one copy of the prompt, as the learner's batch has it
    assert back[0].prompt.images == back[0].prompt.stills == back[0].prompt.videos == []
    assert [s.advantage for s in back] == [1.0, -1.0, 0.5, -0.5]
    original = samples[0].prompt
    assert original.images  # the caller's samples keep theirs
    for got, want in zip(back[0].prompt.pixel_values, original.pixel_values, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(back[0].prompt.image_bound, original.image_bound)
    assert back[0].prompt.input_ids == original.input_ids
    assert len(blob) < 1.05 * len(pack_share(group[:1]))  # four samples of one prompt: the pixels once
    assert len(pickle.dumps(group)) - len(blob) > 0.9 * len(pickle.dumps(original.images))  # the image stayed


def test_each_rank_gets_its_share_once_and_an_empty_rank_steps(tiny_ckpt, samples, local_ray):
    cfg = LearnerConfig(lora=False, lr=1e-3, adam_eps=1e-3, entropy_metric=False, micro_batch_tokens=256)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    try:
        shares = sharded.shares(samples)
        assert sorted(i for mine, _ in shares for i in mine) == list(range(len(samples)))  # each sample once
        whole = len(pack_share(samples))
        sizes = []
        for mine, parts in shares:
            blob = pack_share([samples[i] for i in mine], parts)
            alone = len(pack_share([samples[i] for i in mine]))
            assert alone <= len(blob) <= alone + 256  # its samples and the index lists, nothing else
            assert len(blob) < 0.8 * whole and b"PIL" not in blob
            sizes.append(len(blob))
        assert sum(sizes) < 1.05 * whole  # no second copy (only a prompt whose group is split goes twice)

        a, b = local.step(samples), sharded.step(samples)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["dispatch_mb"] == pytest.approx(sum(sizes) / MB, rel=1e-3)  # what the ranks received
        assert b["peak_mb"] > 100 and a["peak_mb"] > 100  # each process holds a model (the largest rank's, sharded)

        one = samples[:1]  # one sample on two ranks: the other's share is empty, its filler made on the rank
        assert [len(mine) for mine, _ in sharded.shares(one)] == [1, 0]
        a, b = local.step(one), sharded.step(one)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        torch.testing.assert_close(sharded.logprobs(one)[0], local.logprobs(one)[0], rtol=0, atol=1e-5)

        # a non-finite gradient on one rank: every rank skips the update (the weights compared below stay equal)
        poisoned = [TrainSample(s.prompt, s.completion_ids, math.inf if i == 0 else s.advantage)
                    for i, s in enumerate(samples)]
        assert [0 in mine for mine, _ in sharded.shares(poisoned)].count(True) == 1
        assert sharded.step(poisoned)["skipped_steps"] == 1 == local.step(poisoned)["skipped_steps"]
        mine = {n: t.clone() for n, t in local.sync_payload("full")[1]}
        theirs = {n: t.clone() for n, t in sharded.sync_payload("full")[1]}
        assert mine.keys() == theirs.keys()
        for name, tensor in mine.items():
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)
    finally:
        sharded.close()
