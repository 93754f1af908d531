"""The sharded learner (2 gloo ranks, FSDP2) computes what the local learner computes, and both keep fp32 masters."""

import pytest
import torch
from safetensors.torch import load_file

from model.tiny import build_tiny_checkpoint
from rl.config import AlgoConfig, LearnerConfig
from rl.learner import LocalLearner
from rl.learner.sharded import ShardedLearner


def trainable(learner, lora: bool, folder) -> dict[str, torch.Tensor]:
    """Every trainable tensor of a learner, through its interface: the adapter for LoRA, the full weights else."""
    if lora:
        learner.sync_payload("adapter", str(folder))
        return load_file(str(folder / "adapter_model.safetensors"))
    return {n: t.clone() for n, t in learner.sync_payload("full")[1]}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_ranks_equal_the_local_learner(tiny_ckpt, samples, local_ray, tmp_path, lora):
    # Adam's first steps are ~lr x sign(g): an entry whose gradient is rounding noise (|g| ~ 1e-7, a different
    # summation order) would move by +-lr. adam_eps=1e-3 damps those to ~1e-7 x lr / eps while the true steps stay
    # near lr; a gradient scaled wrongly (a mean over ranks, not a sum) is caught by grad_norm.
    cfg = LearnerConfig(lora=lora, lr=1e-2 if lora else 1e-3, adam_eps=1e-3, entropy_metric=False,
                        micro_batch_tokens=256)
    algo = AlgoConfig()
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, algo, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, algo, ranks=2, seed=0)
    try:
        start = trainable(local, lora, tmp_path / "a0")
        for _ in range(3):
            a, b = local.step(samples), sharded.step(samples)
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
            assert b["completion_tokens"] == a["completion_tokens"]
        assert sharded.version == local.version == 3
        mine, theirs = trainable(local, lora, tmp_path / "a"), trainable(sharded, lora, tmp_path / "b")
        assert mine.keys() == theirs.keys() and mine
        for name, tensor in mine.items():
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)
        assert any(not torch.equal(mine[n], start[n]) for n in mine)  # they trained
        lp_local, lp_sharded = local.logprobs(samples), sharded.logprobs(samples)
        for x, y in zip(lp_local, lp_sharded):
            torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    finally:
        sharded.close()


def test_merged_sync_and_fewer_samples_than_ranks(tiny_ckpt, samples, local_ray):
    cfg = LearnerConfig(lora=True, lr=1e-2, adam_eps=1e-3, entropy_metric=False, train_resampler=True)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=3, seed=0)
    try:
        few = samples[:2]  # the third rank gets none and only keeps in step
        local.step(few)
        sharded.step(few)
        mine, theirs = dict(local.sync_payload("merged")[1]), dict(sharded.sync_payload("merged")[1])
        assert mine.keys() == theirs.keys()
        for name, tensor in mine.items():
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)
    finally:
        sharded.close()


@pytest.fixture(scope="module")
def bf16_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bf16") / "ckpt", seed=0, dtype=torch.bfloat16)


@pytest.mark.parametrize("ranks", [1, 2], ids=["local", "sharded"])
def test_a_bf16_checkpoint_trains_in_fp32(bf16_ckpt, samples, local_ray, tmp_path, ranks):
    """At the paper's lr 1e-6 an Adam step is far below bf16's spacing: bf16 weights would not move."""
    cfg = LearnerConfig(lora=False, lr=1e-6, entropy_metric=False)
    torch.manual_seed(0)
    learner = LocalLearner(bf16_ckpt, cfg, device="cpu") if ranks == 1 else ShardedLearner(bf16_ckpt, cfg, ranks=2)
    try:
        before = trainable(learner, False, None)
        assert all(t.dtype == torch.float32 for t in before.values())
        learner.step(samples)
        after = trainable(learner, False, None)
        # what the batch's gradient reaches: the LLM, less the embedding rows of tokens the batch does not hold
        reached = [n for n in before if n.startswith("llm.") and "embed_tokens" not in n]
        moved = sum(int((after[n] != before[n]).sum()) for n in reached)
        total = sum(before[n].numel() for n in reached)
        assert moved / total > 0.99
        learner.export(tmp_path / "export")
        stored = load_file(str(next((tmp_path / "export").glob("*.safetensors"))))
        assert {t.dtype for t in stored.values()} == {torch.bfloat16}  # the export keeps the release's dtype
    finally:
        learner.close()


def test_two_ranks_equal_the_local_learner_with_mini_batches_and_epochs(tiny_ckpt, samples, local_ray, tmp_path):
    cfg = LearnerConfig(lora=True, lr=1e-2, adam_eps=1e-3, entropy_metric=False)
    algo = AlgoConfig(mini_batches=2, ppo_epochs=2, clip_high=0.05)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, algo, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, algo, ranks=2, seed=0)
    try:
        a, b = local.step(samples), sharded.step(samples)
        assert a["updates"] == b["updates"] == 4
        for key in ("loss", "clip_frac", "ratio_max"):  # ratio_max ~ 30-60 here: a few fp32 ulps are > 1e-5
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key
        mine, theirs = trainable(local, True, tmp_path / "a"), trainable(sharded, True, tmp_path / "b")
        for name, tensor in mine.items():
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)
    finally:
        sharded.close()


def test_a_rank_that_dies_is_named_at_once(tiny_ckpt, samples, local_ray):
    """A rank killed (as the OOM killer would) is one error naming it, as soon as Ray knows, while the other rank
    still waits for it in a collective."""
    import time

    import ray

    from rl.errors import LearnerRankLost

    cfg = LearnerConfig(lora=True, lr=1e-2, entropy_metric=False, micro_batch_tokens=256)
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    try:
        sharded.step(samples)
        ray.kill(sharded.ranks[1], no_restart=True)  # its process is killed at once, as by the OOM killer
        start = time.monotonic()
        with pytest.raises(LearnerRankLost, match=r"learner rank 1 of 2 died during step \(.*\); continue from the "
                                                  r"latest checkpoint with --resume"):
            sharded.step(samples)
        assert time.monotonic() - start < 60  # not gloo's collective timeout
    finally:
        sharded.close()
