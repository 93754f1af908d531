"""Parity with TRL 1.16 (`trl.GRPOTrainer`, `trl.RLOOTrainer`): our functions vs TRL's own code, to 1e-6.

TRL is driven, not copied: a real `GRPOTrainer` / `RLOOTrainer` is built per configuration around a tiny randomly
initialised Qwen3 text model (config in this file, no download).
- Advantages: `trainer._generate_and_score_completions` runs end to end (the tiny model generates, a reward function
  hands back our seeded rewards, None for "cannot score"), and its `advantages` are compared with ours.
- Losses: `trainer._compute_loss` runs TRL's loss code on our seeded inputs; only the model forward
  (`_get_per_token_logps_and_entropies`) is replaced by a stub returning our leaf log-probs, so the scalar loss *and*
  its gradient w.r.t. every token's log-prob are compared. The trainer's model is in eval mode, so TRL applies no
  gradient-accumulation division (ours never needs one: see `rl/algos/aggregation.py`).

Configuration mapping (ours -> TRL):

| ours                                                   | TRL GRPOConfig                                             |
|--------------------------------------------------------|------------------------------------------------------------|
| grpo_advantages(std="sample", scale=S, eps=1e-4)       | scale_rewards=S for S in "group", "batch" (TRL eps 1e-4)  |
| dr_grpo_advantages  (== grpo scale="none")             | scale_rewards="none"                                      |
| rloo_advantages                                        | RLOOTrainer, normalize_advantages=False, beta=0           |
| ppo_clip(clip_low=e, clip_high=eh)                     | importance_sampling_level="token", epsilon=e,              |
|                                                        | epsilon_high=eh                                            |
| ppo_clip(dual_clip_c=c)                                | delta=c (equal loss and gradient when c > 1 + clip_high)  |
| gspo(clip_low, clip_high)                              | importance_sampling_level="sequence"                      |
| agg "seq-mean-token-mean"                              | loss_type="grpo"                                          |
| agg "token-mean" (num_tokens = this batch)             | loss_type="bnpo"                                          |
| agg "token-mean" (num_tokens = global token count)     | loss_type="dapo" (num_items_in_batch = global count)      |
| agg "seq-mean-token-sum"                               | loss_type="luspo"                                         |
| agg "seq-mean-token-sum-norm" (norm_length = L)        | loss_type="dr_grpo", max_completion_length=L              |
| + kl_coef * kl_penalty(kind="k3")                      | beta=kl_coef, use_bias_correction_kl=False                |
| + kl_coef * kl_penalty(kind="k3", old_logp=old_logp)   | beta=kl_coef, use_bias_correction_kl=True (TRL default)   |
| is_weights=w                                           | use_vllm, vllm_importance_sampling_correction,             |
|                                                        | inputs["importance_sampling_ratio"]=w                      |
| metrics.clip_fractions / entropy_mean / masked_mean(kl)| logged clip_ratio/{low,high,region}_mean, entropy, kl     |

Differences (deliberate or no counterpart):
- TRL's "bnpo", "grpo", "dr_grpo" under gradient accumulation divide each micro-batch's *local* mean by the number of
  micro-batches, which is not the full-batch value when micro-batches differ in tokens/sequences; ours takes global
  normalisers and is exact (tests/rl/algos/test_aggregation.py). Parity is therefore checked on one whole batch.
- TRL's dr_grpo divides by the *local* batch size x max_completion_length; ours by the global num_seqs x norm_length.
- Advantages of an all-equal group: ours are exactly 0 by rule (max == min); TRL divides (r - mean) by (0 + 1e-4),
  which is 0 only when the float mean is exact (true for the equal groups used here, e.g. four rewards of 1.0).
- Our grpo `std="population"` and any `eps` other than 1e-4 have no TRL counterpart (TRL: sample std, 1e-4).
- TRL-only, not implemented here: loss types "cispo", "sapo", "vespo"; `scale_rewards` with
  `multi_objective_aggregation="normalize_then_sum"`; `top_entropy_quantile` masking; off-policy sequence masking;
  `use_bias_correction_kl`; the entropy bonus. TRL's computation of the vLLM importance ratio itself runs inside its
  vLLM generation path and is covered by hand-computed tests instead (tests/rl/algos/test_importance.py); here the *use*
  of the weights in the loss is compared.
"""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos import (
    agg_loss,
    clip_fractions,
    compute_advantages,
    compute_policy_loss,
    entropy_from_logits,
    entropy_mean,
    kl_penalty,
    masked_mean,
    tis_weights,
)

trl = pytest.importorskip("trl")
pytestmark = [pytest.mark.filterwarnings("ignore:TRL currently supports vLLM"),  # TRL's lazy vLLM import, harmless
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

N_PROMPTS, G = 4, 4
MAX_COMPLETION = 12  # TRL's max_completion_length = our norm_length for Dr. GRPO
B, T = 6, 9  # loss tensors; T < MAX_COMPLETION on purpose (the constant must not be the padded width)


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Qwen3 LM, a word-level tokenizer and a one-column dataset: all TRL needs to build a trainer."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab = {f"w{i}": i for i in range(32)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="w0", eos_token="w1", unk_token="w0")
    config = Qwen3Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    dataset = Dataset.from_dict({"prompt": ["w2 w3 w4"] * N_PROMPTS})
    return model, tokenizer, dataset


def _trainer(tiny, tmp_path, reward_fn=None, cls="grpo", **config):
    model, tokenizer, dataset = tiny
    cfg_cls, tr_cls = (trl.GRPOConfig, trl.GRPOTrainer) if cls == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
    args = cfg_cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
                   logging_strategy="no", per_device_train_batch_size=N_PROMPTS * G, num_generations=G,
                   max_completion_length=MAX_COMPLETION, **config)
    reward_fn = reward_fn or (lambda completions, **_: [0.0] * len(completions))
    return tr_cls(model=model, reward_funcs=reward_fn, args=args, train_dataset=dataset, processing_class=tokenizer)


# ---------------------------------------------------------------- advantages

def _seeded_rewards(seed: int) -> list[float | None]:
    g = torch.Generator().manual_seed(seed)
    rewards: list[float | None] = torch.randn(N_PROMPTS * G, generator=g).tolist()
    rewards[1] = None  # an unscorable response inside an otherwise normal group 0
    rewards[4:8] = [1.0, 1.0, 1.0, 1.0]  # group 1: all equal (exact float mean)
    rewards[8:11] = [None, None, None]  # group 2: one scorable response only
    return rewards


def _trl_advantages(trainer, rewards) -> torch.Tensor:
    def reward_fn(completions, row, **_):
        return [rewards[r] for r in row]

    trainer.reward_funcs = [reward_fn]
    trainer.model.train()
    torch.manual_seed(0)
    inputs = [{"prompt": "w2 w3 w4", "row": i} for i in range(len(rewards))]  # rows i*G..i*G+G-1 = group i
    return trainer._generate_and_score_completions(inputs)["advantages"]


def _ours(rewards) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.tensor([math.nan if x is None else x for x in rewards], dtype=torch.float32)
    return r, torch.arange(N_PROMPTS).repeat_interleave(G)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_match_trl(tiny, tmp_path, scale):
    rewards = _seeded_rewards(1)
    trainer = _trainer(tiny, tmp_path, scale_rewards=scale)
    expected = _trl_advantages(trainer, rewards)
    r, gi = _ours(rewards)
    if scale == "none":
        ours = compute_advantages("dr_grpo", r, gi)
    else:
        ours = compute_advantages("grpo", r, gi, std="sample", scale=scale, eps=1e-4)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert (ours[4:12] == 0).all() and ours[1] == 0 and (ours != 0).sum() == 7  # the special cases are exercised


def test_rloo_advantages_match_trl(tiny, tmp_path):
    rewards = _seeded_rewards(2)
    trainer = _trainer(tiny, tmp_path, cls="rloo", beta=0.0, normalize_advantages=False)
    expected = _trl_advantages(trainer, rewards)
    ours = compute_advantages("rloo", *_ours(rewards))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- losses

TRL_LOSS_TYPE = {"seq-mean-token-mean": "grpo", "token-mean": "bnpo", "token-mean-global": "dapo",
                 "seq-mean-token-sum": "luspo", "seq-mean-token-sum-norm": "dr_grpo"}


def _loss_inputs(seed: int, noise: float):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 1, 5, 0, 7, 3])  # a full row, a one-token row, an empty row
    mask = (torch.arange(T) < lengths[:, None]).long()  # TRL's completion_mask is an int tensor
    logp = -3 * torch.rand(B, T, generator=g)
    old_logp = logp + noise * torch.randn(B, T, generator=g)
    ref_logp = logp + 0.3 * torch.randn(B, T, generator=g)
    rollout_logp = old_logp + 0.4 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    entropies = 2 * torch.rand(B, T, generator=g)
    return dict(mask=mask, logp=logp, old_logp=old_logp, ref_logp=ref_logp, rollout_logp=rollout_logp, adv=adv,
                entropies=entropies)


def _trl_loss(trainer, x, *, is_weights=None, num_items=None):
    logp = x["logp"].clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logp, x["entropies"], None)
    trainer.model.eval()
    inputs = {"prompt_ids": torch.full((B, 2), 2), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.full((B, T), 3), "completion_mask": x["mask"], "advantages": x["adv"],
              "old_per_token_logps": x["old_logp"], "ref_per_token_logps": x["ref_logp"],
              "num_items_in_batch": torch.tensor(num_items if num_items is not None else 0)}
    if is_weights is not None:
        trainer.use_vllm = trainer.vllm_importance_sampling_correction = True  # only switches the loss's use of it
        inputs["importance_sampling_ratio"] = is_weights
    loss = trainer._compute_loss(trainer.model, inputs)
    (grad,) = torch.autograd.grad(loss, logp)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss.detach(), grad, metrics


def _our_loss(x, policy_loss, agg, *, kl_coef=0.0, kl_corrected=False, is_weights=None, **knobs):
    logp = x["logp"].clone().requires_grad_(True)
    mask = x["mask"].bool()
    loss_mat, aux = compute_policy_loss(policy_loss, logp, x["old_logp"], x["adv"], mask, is_weights=is_weights,
                                        **knobs)
    if kl_coef:
        loss_mat = loss_mat + kl_coef * kl_penalty(logp, x["ref_logp"], "k3", mask,
                                                   old_logp=x["old_logp"] if kl_corrected else None)
    normalisers = {"norm_length": MAX_COMPLETION}
    if agg == "token-mean-global":
        agg, normalisers["num_tokens"] = "token-mean", int(mask.sum())
    loss = agg_loss(loss_mat, mask, agg, **normalisers)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad, aux


def _assert_match(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("agg", list(TRL_LOSS_TYPE))
def test_ppo_clip_loss_matches_trl(tiny, tmp_path, agg):
    x = _loss_inputs(seed=3, noise=0.4)
    trainer = _trainer(tiny, tmp_path, loss_type=TRL_LOSS_TYPE[agg], epsilon=0.2, epsilon_high=0.28)
    theirs = _trl_loss(trainer, x, num_items=int(x["mask"].sum()))
    ours = _our_loss(x, "ppo_clip", agg, clip_low=0.2, clip_high=0.28)
    _assert_match(ours, theirs)
    fr = clip_fractions(ours[2], x["mask"])
    assert fr["clip_frac_low"] > 0 and fr["clip_frac_high"] > 0 and fr["clip_frac"] < 0.6  # both regimes exercised
    for key, trl_key in [("clip_frac_low", "clip_ratio/low_mean"), ("clip_frac_high", "clip_ratio/high_mean"),
                         ("clip_frac", "clip_ratio/region_mean")]:
        assert float(fr[key]) == pytest.approx(theirs[2][trl_key], abs=1e-6)
    assert float(entropy_mean(x["entropies"], x["mask"])["entropy"]) == pytest.approx(theirs[2]["entropy"], abs=1e-6)


@pytest.mark.parametrize("agg", list(TRL_LOSS_TYPE))
def test_gspo_loss_matches_trl(tiny, tmp_path, agg):
    x = _loss_inputs(seed=4, noise=0.15)
    trainer = _trainer(tiny, tmp_path, loss_type=TRL_LOSS_TYPE[agg], importance_sampling_level="sequence",
                       epsilon=0.02, epsilon_high=0.02)
    theirs = _trl_loss(trainer, x, num_items=int(x["mask"].sum()))
    ours = _our_loss(x, "gspo", agg, clip_low=0.02, clip_high=0.02)
    _assert_match(ours, theirs)
    clipped = ours[2]["clipped_low"] | ours[2]["clipped_high"]
    assert clipped.any() and (~clipped & x["mask"].bool()).any()


def test_dual_clip_matches_trl_delta(tiny, tmp_path):
    x = _loss_inputs(seed=5, noise=1.0)  # wide ratios: some tokens with A < 0 and ratio > 3
    trainer = _trainer(tiny, tmp_path, loss_type="grpo", epsilon=0.2, delta=3.0)
    theirs = _trl_loss(trainer, x)
    ours = _our_loss(x, "ppo_clip", "seq-mean-token-mean", clip_low=0.2, clip_high=0.2, dual_clip_c=3.0)
    _assert_match(ours, theirs)
    assert ours[2]["dual_clipped"].any()


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_k3_kl_term_matches_trl_beta(tiny, tmp_path, agg, corrected):
    x = _loss_inputs(seed=6, noise=0.3)
    trainer = _trainer(tiny, tmp_path, loss_type=TRL_LOSS_TYPE[agg], epsilon=0.2, use_bias_correction_kl=corrected)
    trainer.beta = 0.04  # set after construction: with beta != 0 the constructor would load a reference model by
    #                      name; the loss only reads self.beta and inputs["ref_per_token_logps"]
    theirs = _trl_loss(trainer, x)
    ours = _our_loss(x, "ppo_clip", agg, kl_coef=0.04, kl_corrected=corrected, clip_low=0.2, clip_high=0.2)
    _assert_match(ours, theirs)
    kl = kl_penalty(x["logp"], x["ref_logp"], "k3", x["mask"], old_logp=x["old_logp"] if corrected else None)
    assert float(masked_mean(kl, x["mask"])) == pytest.approx(theirs[2]["kl"], abs=1e-6)


@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo"])
def test_tis_weights_in_loss_match_trl(tiny, tmp_path, policy_loss):
    x = _loss_inputs(seed=7, noise=0.3)
    w = tis_weights(x["old_logp"], x["rollout_logp"], x["mask"], cap=2.0)
    assert (w == 2.0).any() and (w < 2.0).any()
    level = "sequence" if policy_loss == "gspo" else "token"
    trainer = _trainer(tiny, tmp_path, loss_type="grpo", epsilon=0.2, importance_sampling_level=level)
    theirs = _trl_loss(trainer, x, is_weights=w)
    ours = _our_loss(x, policy_loss, "seq-mean-token-mean", is_weights=w, clip_low=0.2, clip_high=0.2)
    _assert_match(ours, theirs)


def test_entropy_matches_trl_utility():
    from trl.trainer.utils import entropy_from_logits as trl_entropy

    logits = 4 * torch.randn(3, 5, 50, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=4), trl_entropy(logits), rtol=0, atol=1e-6)
