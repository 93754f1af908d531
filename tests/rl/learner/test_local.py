"""The learner: packing, micro-batch invariance of the gradient, what an update changes, sync to a worker."""

import pytest
import torch

from model.synthetic import shapes_image
from rl.config import AlgoConfig, LearnerConfig
from rl.learner import LocalLearner, TrainSample
from rl.packing import pack_by_budget, pad_by_budget, pad_by_count, padding_fraction


def test_pack_by_budget_by_hand():
    # longest first: 7 -> bin0 (room 3), 5 -> bin1 (5), 4 -> bin1 (1), 3 -> bin0 (0), 2 -> bin2, 1 -> bin1 (0)
    assert pack_by_budget([3, 7, 2, 5, 4, 1], budget=10) == [[1, 0], [3, 4, 5], [2]]
    assert pack_by_budget([12, 3], budget=10) == [[0], [1]]  # too long for the budget: alone
    with pytest.raises(ValueError):
        pack_by_budget([1], 0)


def test_pad_by_budget_by_hand():
    # longest first: 9 alone (2 x 9 = 18 > 16); 8 then 5 (2 x 8 = 16); 4 opens a batch (3 x 8 > 16), 1 joins it
    assert pad_by_budget([5, 9, 1, 8, 4], budget=16) == [[1], [3, 0], [4, 2]]


def test_padding_fraction_by_hand():
    lengths = [10, 2, 2, 10]
    # padded pairs: (10, 2) -> 20 computed, (2, 10) -> 20 computed: 24 real of 40
    assert padding_fraction(lengths, pad_by_count(lengths, 2), packed=False) == pytest.approx(1 - 24 / 40)
    assert padding_fraction(lengths, pack_by_budget(lengths, 12), packed=True) == 0.0


def gradients(ckpt, samples, loss_agg="token-mean", norm_length=None, **overrides):
    torch.manual_seed(0)
    learner = LocalLearner(ckpt, LearnerConfig(lora=False, entropy_metric=False, **overrides),
                      AlgoConfig(loss_agg=loss_agg, norm_length=norm_length), device="cpu")
    learner.accumulate(samples)
    return {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_does_not_depend_on_micro_batching_or_packing(tiny_ckpt, samples, agg):
    extra = {"norm_length": 64} if agg == "seq-mean-token-sum-norm" else {}
    one = gradients(tiny_ckpt, samples, loss_agg=agg, micro_batch_tokens=100_000, **extra)  # one packed row
    for other in (gradients(tiny_ckpt, samples, loss_agg=agg, micro_batch_tokens=200, **extra),  # many rows
                  gradients(tiny_ckpt, samples, loss_agg=agg, packing=False, sort_by_length=False,
                            padded_batch_size=2, **extra),
                  gradients(tiny_ckpt, samples, loss_agg=agg, packing=False, sort_by_length=False,
                            padded_batch_size=5, **extra),
                  gradients(tiny_ckpt, samples, loss_agg=agg, packing=False, micro_batch_tokens=300, **extra),
                  gradients(tiny_ckpt, samples, loss_agg=agg, micro_batch_tokens=200, gradient_checkpointing=True,
                            **extra)):
        for name, grad in one.items():
            torch.testing.assert_close(other[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in one.values())


def test_cpu_bf16_autocast_is_opt_in(tiny_ckpt, samples):
    """fp32 on the CPU by default (log-probs as an fp32 engine's); `cpu_bf16` runs the forward under bf16 autocast:
    close, not equal."""
    fp32 = LocalLearner(tiny_ckpt, LearnerConfig(lora=False), device="cpu").logprobs(samples)
    again = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, bf16=True), device="cpu").logprobs(samples)
    bf16 = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, cpu_bf16=True), device="cpu").logprobs(samples)
    assert all(torch.equal(a, b) for a, b in zip(fp32, again))
    diff = torch.cat([(a - b).abs() for a, b in zip(fp32, bf16)])
    assert 0 < diff.max() < 0.5


def test_full_update_changes_every_trainable_parameter_and_nothing_frozen(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, lr=1e-3), device="cpu")
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    metrics = learner.step(samples)
    for n, p in learner.model.named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, n
    assert not any(p.requires_grad for n, p in learner.model.named_parameters() if not n.startswith("llm."))
    assert metrics["grad_norm"] > 0 and metrics["micro_batches"] >= 1 and learner.version == 1


def test_lora_update_changes_only_the_adapter(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, lr=1e-2), device="cpu")
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    trainable = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    learner.step(samples)
    changed = {n for n, p in learner.model.named_parameters() if not torch.equal(p, before[n])}
    # B starts at zero, so the first step moves every B and no A (its gradient is B^T ...); the second moves all
    assert changed == {n for n in trainable if "lora_B" in n}
    learner.step(samples)
    changed = {n for n, p in learner.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable


def test_trainable_vision_and_resampler_are_updated_and_synced_merged(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, train_vision=True, train_resampler=True, lr=1e-3),
                      device="cpu")
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if ".resampler." in n}
    learner.step(samples)
    assert all(not torch.equal(p, before[n]) for n, p in learner.model.named_parameters() if n in before)
    kind, payload = learner.sync_payload()
    assert kind == "weights" and any(n.startswith("resampler.") for n, _ in payload)


def test_kl_to_the_reference_starts_at_zero_and_grows(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, lr=5e-2), AlgoConfig(kl="k3", kl_coef=0.1), device="cpu")
    first = learner.step(samples)
    learner.step(samples)
    second = learner.step(samples)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    assert second["kl"] > 1e-6


def test_rollout_logprobs_give_tis_metrics(tiny_ckpt, samples):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True), device="cpu")
    exact = learner.logprobs(samples)
    shifted = [TrainSample(s.prompt, s.completion_ids, s.advantage, (lp + 0.1).tolist()) for s, lp in zip(samples, exact)]
    metrics = learner.step(shifted)
    assert metrics["rollout_learner_logp_abs_diff_mean"] == pytest.approx(0.1, abs=1e-4)
    assert metrics["tis_weight_mean"] == pytest.approx(torch.exp(torch.tensor(-0.1)).item(), abs=1e-4)


@pytest.mark.vllm
def test_lora_adapter_sync_gives_the_worker_the_learners_logprobs(tiny_ckpt, samples, tmp_path):
    from rollouts.types import RolloutRequest, SamplingConfig
    from rollouts.vllm.worker import RolloutWorker
    from tests.rollouts.helpers import learner_diff

    # rank 24: not one of vLLM's max_lora_rank values; the worker serves it with 32 (rollouts.vllm.engine.engine_lora_rank)
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, lora_rank=24, lr=5e-2), device="cpu")
    learner.step(samples)
    learner.step(samples)
    kind, path = learner.sync_payload(adapter_dir=str(tmp_path / "adapter"))
    assert kind == "adapter" and path == str(tmp_path / "adapter")
    worker = RolloutWorker(str(tiny_ckpt), dtype="float32", max_model_len=2048, enable_lora=True,
                           max_lora_rank=24, mode_sampling={m: SamplingConfig(16) for m in ("short", "long", "auto")})
    worker.load_lora(learner.version, path)
    results = worker.generate([RolloutRequest("q", [{"role": "user", "content": [
        {"type": "image", "image": shapes_image(2)}, {"type": "text", "text": "Count."}]}], mode="long", n=3)])
    learner.model.eval()
    assert results[0].policy_version == learner.version
    assert learner_diff(learner.model, results).max() <= 1e-4


def test_one_mini_batch_one_epoch_is_one_plain_update(tiny_ckpt, samples):
    cfg = LearnerConfig(lora=False, lr=1e-3, entropy_metric=False)
    torch.manual_seed(0)
    stepped = LocalLearner(tiny_ckpt, cfg, AlgoConfig(), device="cpu")
    stepped.step(samples)
    torch.manual_seed(0)
    by_hand = LocalLearner(tiny_ckpt, cfg, AlgoConfig(), device="cpu")
    by_hand.accumulate(samples)  # the old logp is the current one: no old-log-prob pass
    torch.nn.utils.clip_grad_norm_(by_hand.params, cfg.max_grad_norm)
    by_hand.optimizer.step()
    for (n, a), b in zip(stepped.model.named_parameters(), by_hand.model.parameters()):
        assert torch.equal(a, b), n


def test_mini_batches_and_epochs_move_the_ratio_and_the_clip_acts(tiny_ckpt, samples):
    algo = AlgoConfig(mini_batches=2, ppo_epochs=2, clip_low=0.01, clip_high=0.01)
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, lr=3e-3, entropy_metric=False), algo, device="cpu")
    metrics = learner.step(samples)
    assert metrics["updates"] == 4 and learner.version == 1
    assert learner.scheduler.last_epoch == 1  # the schedule counts training steps, not the 4 optimizer updates
    assert metrics["ratio_max"] > 1.0 + 1e-3 or metrics["ratio_min"] < 1.0 - 1e-3  # later updates are off-policy
    assert metrics["clip_frac"] > 0  # and the clip acts on them
    assert learner.micro_batches(samples)  # the batch is still whole for the next step


def test_lora_targets_that_match_nothing_are_one_error_naming_the_key(tiny_ckpt):
    from rl.errors import RunError

    with pytest.raises(RunError, match=r"learner\.lora_targets='nothing': Target modules nothing not found"):
        LocalLearner(tiny_ckpt, LearnerConfig(lora=True, lora_targets="nothing"), device="cpu")
