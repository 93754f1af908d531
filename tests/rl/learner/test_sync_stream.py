"""Full and merged weights stream from the sharded learner (2 gloo ranks, FSDP2) into a staging folder, bucket by
bucket, and the rollout workers load them from there: only the folder's path comes back to the driver."""

import json
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch

from model.checkpoint import INDEX, iter_safetensors
from model.lora import merged_weights
from rl.config import LearnerConfig
from rl.learner import LocalLearner, TrainSample
from rl.learner import weights as weights_io
from rl.learner.sharded import ShardedLearner
from rollouts.weights import SHM, Staging
from tests.rollouts.helpers import SAMPLING, learner_diff, requests


def engine_against_learner(learner, results) -> float:
    """max |engine log-prob - learner log-prob| over every sampled token: the learner scores the engine's samples."""
    pairs = [(r, s) for r in results for s in r.samples]
    ours = learner.logprobs([TrainSample(r.prompt, s.completion_token_ids, 0.0) for r, s in pairs])
    return max(float((lp - torch.tensor(s.logprobs)).abs().max()) for lp, (_, s) in zip(ours, pairs))


@pytest.mark.vllm
def test_full_weights_stream_from_two_ranks_to_the_workers(tiny_ckpt, tiny_model, samples, local_ray, tmp_path):
    from rollouts.pool import RolloutPool

    cfg = LearnerConfig(lora=False, lr=1e-2, adam_eps=1e-3, entropy_metric=False)
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    pool, folders = None, []
    try:
        sharded.step(samples)
        staging = Staging(str(tmp_path / "sync"), bucket_mb=1)  # the tiny model's 3.9 MB: several buckets
        kind, folder = sharded.sync_payload("full", staging=staging)
        folders.append(folder)
        assert kind == "path" and isinstance(folder, str) and len(pickle.dumps(folder)) < 1024  # nothing but a path
        if os.path.isdir(SHM):
            assert folder.startswith(SHM + "/")  # one node, room in /dev/shm
        index = json.loads((Path(folder) / INDEX).read_text())
        held = dict(sharded.sync_payload("full")[1])  # the learner's weights, gathered as pairs
        biggest = max(t.numel() * t.element_size() for t in held.values())
        meta = index["metadata"]
        assert len(set(index["weight_map"].values())) >= 3 and meta["bucket_bytes"] == 1 << 20
        assert meta["peak_bytes"] <= meta["bucket_bytes"] + biggest  # one bucket plus one tensor, at most
        staged = dict(iter_safetensors(folder))
        assert staged.keys() == held.keys()
        assert all(torch.equal(staged[n], t) for n, t in held.items())

        pool = RolloutPool(str(tiny_ckpt), num_workers=1, mode_sampling=SAMPLING, dtype="float32",
                           max_model_len=2048)
        pool.sync_weights(1, path=folder, owned=True)
        results = pool.generate(requests(3, prefix="a"))
        assert all(r.ok and r.policy_version == 1 for r in results)
        assert engine_against_learner(sharded, results) <= 1e-4  # the bar of the other sync tests
        assert learner_diff(tiny_model, results).max() > 1e-3  # not the starting weights

        sharded.step(samples)
        _, newer = sharded.sync_payload("full", staging=staging)
        folders.append(newer)
        pool.sync_weights(2, path=newer, owned=True)
        assert not os.path.exists(folder) and os.path.isdir(newer)  # gone once every worker has the next one

        os.kill(pool.pids()[0], signal.SIGKILL)  # its replacement loads the folder the pool kept
        results = pool.generate(requests(3, prefix="b"))
        assert pool.load()[0]["restarts"] == 1 and pool.versions() == [2]
        assert all(r.ok and r.policy_version == 2 for r in results)
        assert engine_against_learner(sharded, results) <= 1e-4
    finally:
        if pool is not None:
            pool.shutdown()
        sharded.close()
    assert not any(os.path.exists(f) for f in folders)  # the pool removed the last one at shutdown


def test_merging_layer_by_layer_equals_merging_the_whole_state(tiny_ckpt):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, train_resampler=True), device="cpu")
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_B" in name:  # B starts at zero: a delta to merge
                p.normal_(std=0.1)
    ours, whole = list(weights_io.merged_stream(learner.model)), merged_weights(learner.model)
    assert [n for n, _ in ours] == [n for n, _ in whole]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ours, whole))
    base = dict(learner.base_model(learner.model).state_dict())
    assert not torch.equal(dict(ours)["llm.model.layers.0.self_attn.q_proj.weight"],
                           base["llm.model.layers.0.self_attn.q_proj.base_layer.weight"])


def test_merged_weights_stream_from_two_ranks_into_the_shared_folder(tiny_ckpt, samples, local_ray, tmp_path):
    cfg = LearnerConfig(lora=True, lr=1e-2, adam_eps=1e-3, entropy_metric=False, train_resampler=True)
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    try:
        sharded.step(samples)
        merged = sharded.sync_payload("merged")[1]
        # several nodes: no /dev/shm (node-local), the folder every node sees; cast to the engine's dtype
        kind, folder = sharded.sync_payload("merged", staging=Staging(str(tmp_path / "sync"), shm=False,
                                                                        dtype="bfloat16"))
        assert kind == "path" and Path(folder).parent == tmp_path / "sync"
        staged = list(iter_safetensors(folder))
        assert [n for n, _ in staged] == [n for n, _ in merged] and not any(".lora_" in n for n, _ in staged)
        for (name, ours), (_, theirs) in zip(staged, merged):
            assert torch.equal(ours, theirs.bfloat16() if theirs.is_floating_point() else theirs), name

        # a rank 0 that cannot write still takes part in every gather: the error comes back, nothing hangs, and
        # the ranks stay in step for what follows
        (tmp_path / "file").write_text("")
        with pytest.raises(Exception, match="staging the weights in .*file"):
            sharded.sync_payload("merged", staging=Staging(str(tmp_path / "file" / "sync"), shm=False))
        sharded.step(samples)
        assert sharded.sync_payload("merged", staging=Staging(str(tmp_path / "sync"), shm=False))[0] == "path"
    finally:
        sharded.close()


@pytest.mark.vllm
def test_full_and_merged_weights_go_from_two_ranks_to_the_engine_in_memory(tiny_ckpt, tiny_model, samples, local_ray):
    """The sharded learner's rank 0 opens the group with the engine and broadcasts; both ranks gather each tensor
    (cast to the wire dtype on the shards first); the engine then samples from the learner's weights."""
    from rollouts.pool import RolloutPool
    from rollouts.transfer import TransferPlan

    pool = RolloutPool(str(tiny_ckpt), num_workers=1, mode_sampling=SAMPLING, dtype="float32", max_model_len=2048)
    try:
        for version, (kind, cfg) in enumerate([
                ("full", LearnerConfig(lora=False, lr=1e-2, adam_eps=1e-3, entropy_metric=False)),
                ("merged", LearnerConfig(lora=True, lr=1e-2, adam_eps=1e-3, entropy_metric=False,
                                         train_resampler=True))], start=1):
            sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
            try:
                sharded.step(samples)
                report = sharded.send_weights(kind, TransferPlan("gloo", pool.members(), version, "float32", 1 << 20))
                pool.transferred(version)
                assert report.verified and report.workers == 1 and report.tensors == len(tiny_model.state_dict())
                results = pool.generate(requests(3, prefix=f"{kind}-"))
                assert all(r.ok and r.policy_version == version for r in results)
                assert engine_against_learner(sharded, results) <= 1e-4
                assert learner_diff(tiny_model, results).max() > 1e-3  # not the starting weights
            finally:
                sharded.close()
    finally:
        pool.shutdown()
