"""The KL reference: the base checkpoint's weights, frozen, whatever trained and whether or not the run resumed;
none is built when KL is off."""

import pytest
import torch

from rl.config import AlgoConfig, LearnerConfig
from rl.learner import LocalLearner

KL = AlgoConfig(kl="k3", kl_coef=0.1)


def base_logprobs(ckpt, samples) -> list[torch.Tensor]:
    """Log-probs of the untouched checkpoint (a learner that never stepped, KL off)."""
    return LocalLearner(ckpt, LearnerConfig(lora=False), AlgoConfig(), device="cpu").logprobs(samples)


def assert_equal(xs, ys, atol=1e-6):
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def test_no_reference_without_kl(tiny_ckpt):
    for cfg in (LearnerConfig(lora=False), LearnerConfig(lora=True, train_vision=True)):
        learner = LocalLearner(tiny_ckpt, cfg, AlgoConfig(), device="cpu")
        assert learner._ref_model is None and learner._ref_vision is None
        if not cfg.lora:
            with pytest.raises(RuntimeError, match="KL is on"), learner._as_reference():
                pass


@pytest.mark.parametrize("cfg", [
    LearnerConfig(lora=False, lr=1e-3),
    LearnerConfig(lora=True, lr=5e-2, train_vision=True, train_resampler=True),
    LearnerConfig(lora=True, lr=5e-2),
], ids=["full", "lora+vision", "lora"])
def test_the_reference_is_the_base_checkpoint_after_training(tiny_ckpt, samples, cfg):
    learner = LocalLearner(tiny_ckpt, cfg, KL, device="cpu")
    base = base_logprobs(tiny_ckpt, samples)
    first = learner.step(samples)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    learner.step(samples)
    reference, policy = learner.logprobs(samples, reference=True), learner.logprobs(samples)
    assert_equal(reference, base)
    assert any((p - b).abs().max() > 1e-4 for p, b in zip(policy, base))  # the policy moved, the reference not
    if cfg.train_vision:  # adapters disabled alone (the old reference) keeps the trained vision tower: not the base
        with learner.model.disable_adapter():
            adapters_off = learner.logprobs(samples)
        image = [i for i, s in enumerate(samples) if s.prompt.pixel_values]
        assert image and any((adapters_off[i] - base[i]).abs().max() > 1e-6 for i in image)


def test_kl_four_steps_straight_equal_two_then_resume_then_two(tiny_ckpt, samples, tmp_path):
    cfg = LearnerConfig(lora=False, lr=1e-3)
    torch.manual_seed(0)
    straight = LocalLearner(tiny_ckpt, cfg, KL, device="cpu")
    rows = [straight.step(samples) for _ in range(4)]
    torch.manual_seed(0)
    first = LocalLearner(tiny_ckpt, cfg, KL, device="cpu")
    for _ in range(2):
        first.step(samples)
    first.save_state(tmp_path / "ckpt")
    resumed = LocalLearner(tiny_ckpt, cfg, KL, device="cpu")
    resumed.load_state(tmp_path / "ckpt")
    later = [resumed.step(samples) for _ in range(2)]
    assert rows[2]["kl"] > 1e-6  # the KL grew, and carries on after the resume (it restarted at 0 before)
    for a, b in zip(rows[2:], later):
        for key in ("kl", "loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    mine, theirs = dict(straight.sync_payload("full")[1]), dict(resumed.sync_payload("full")[1])
    for name, tensor in mine.items():
        torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-7, msg=name)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora+vision"])
def test_two_ranks_with_kl_equal_the_local_learner(tiny_ckpt, samples, local_ray, lora):
    """Full weights: the reference is sharded like the policy; LoRA with a trained vision tower: the base's vision
    side is replicated on each rank and swapped in for the reference pass."""
    from rl.learner.sharded import ShardedLearner

    cfg = LearnerConfig(lora=lora, lr=5e-2 if lora else 1e-3, adam_eps=1e-3, entropy_metric=False,
                        micro_batch_tokens=256, train_vision=lora)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, KL, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, KL, ranks=2, seed=0)
    try:
        for _ in range(3):
            a, b = local.step(samples), sharded.step(samples)
            for key in ("kl", "loss"):
                assert b[key] == pytest.approx(a[key], abs=1e-6), key
        assert a["kl"] > 1e-6
        assert_equal(sharded.logprobs(samples, reference=True), base_logprobs(tiny_ckpt, samples), atol=1e-5)
    finally:
        sharded.close()
