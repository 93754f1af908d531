"""A finite step or no step: tokens with a non-finite log-prob are masked and counted, an update whose gradient norm
is not finite is skipped (and `learner.max_skipped_steps` in a row stop the run), and the schedule counts steps."""

import math

import pytest
import torch

from rl.config import AlgoConfig, LearnerConfig, TrainConfig
from rl.errors import NonFiniteUpdates
from rl.learner import LocalLearner, TrainSample, learner_settings


def trained(learner):
    return {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}


def all_finite(learner) -> bool:
    return all(torch.isfinite(p).all() for p in learner.params)


def test_a_token_outside_the_nucleus_with_k3_leaves_every_weight_finite_and_the_next_step_trains(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, lr=1e-3, entropy_metric=False),
                           AlgoConfig(kl="k3", kl_coef=0.1), device="cpu")
    # drawn at top-k 1: every sampled token but the argmax is outside the learner's set, its log-prob -inf; the
    # other samples of the batch are ordinary
    narrow = [TrainSample(s.prompt, s.completion_ids, s.advantage, None, "long", 1.0, 1 if i % 2 else 0, 1.0)
              for i, s in enumerate(samples)]
    assert any(torch.isinf(lp).any() for lp in learner.logprobs(narrow))
    before = trained(learner)
    metrics = learner.step(narrow)
    assert metrics["nonfinite_tokens"] > 0 and math.isfinite(metrics["loss"]) and metrics["skipped_steps"] == 0
    assert all_finite(learner)
    middle = trained(learner)
    assert any(not torch.equal(before[n], middle[n]) for n in before)  # the finite tokens still trained
    metrics = learner.step(samples)  # a clean batch
    assert metrics["nonfinite_tokens"] == 0 and math.isfinite(metrics["grad_norm"])
    assert all_finite(learner) and any(not torch.equal(middle[n], p) for n, p in trained(learner).items())


def test_an_update_with_a_non_finite_gradient_is_skipped_and_too_many_in_a_row_stop(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, lr=1e-2, max_skipped_steps=2, entropy_metric=False),
                           device="cpu")
    poisoned = [TrainSample(s.prompt, s.completion_ids, math.inf if i == 0 else s.advantage)
                for i, s in enumerate(samples)]
    before = trained(learner)
    metrics = learner.step(poisoned)
    assert metrics["skipped_steps"] == 1 and math.isnan(metrics["grad_norm"])
    assert all(torch.equal(before[n], p) for n, p in trained(learner).items())  # nothing moved
    assert all(p.grad is None for p in learner.params)  # and nothing is left for the next update
    assert learner.step(samples)["skipped_steps"] == 0  # a clean step resets the count
    assert any(not torch.equal(before[n], p) for n, p in trained(learner).items())
    learner.step(poisoned)
    with pytest.raises(NonFiniteUpdates, match="2 optimizer updates in a row.*max_skipped_steps=2"):
        learner.step(poisoned)


def test_reference_log_probs_are_computed_once_per_step(tiny_ckpt, samples, monkeypatch):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, entropy_metric=False),
                           AlgoConfig(kl="k3", kl_coef=0.1, mini_batches=2, ppo_epochs=2), device="cpu")
    calls = []
    original = learner.logprobs
    monkeypatch.setattr(learner, "logprobs", lambda part, reference=False: (
        calls.append((reference, len(part))), original(part, reference))[1])
    assert learner.step(samples)["updates"] == 4
    assert [len for ref, len in calls if ref] == [3, 2]  # one pass per mini-batch, not per epoch x mini-batch


def test_the_lr_schedule_counts_training_steps_and_its_length_is_run_steps(tiny_ckpt, samples):
    cfg = TrainConfig(run={"steps": 3}, learner={"schedule": "cosine", "lora": False})
    learner_cfg, _ = learner_settings(cfg)
    assert learner_cfg.total_steps == 3
    learner = LocalLearner(tiny_ckpt, learner_cfg, AlgoConfig(mini_batches=2), device="cpu")
    lrs = [learner.step(samples)["lr"] for _ in range(3)]
    assert lrs[0] == pytest.approx(learner_cfg.lr * 0.75) and lrs[-1] == pytest.approx(0.0)  # 4 updates a step
    one_step_off = TrainConfig(run={"steps": 3, "async_mode": "one_step_off"})
    assert learner_settings(one_step_off)[1].kl_importance and not learner_settings(cfg)[1].kl_importance
    with pytest.raises(ValueError, match="learner.total_steps=1000 disagrees with run.steps=3"):
        TrainConfig(run={"steps": 3}, learner={"total_steps": 1000})
