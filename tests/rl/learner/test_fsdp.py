"""FSDP2 units (rl/learner/fsdp.py): the LM head stays in the root unit, so the chunked log-prob head, which runs a
different number of chunks on each rank, gathers it once per forward on every rank and the ranks stay in step."""

import pytest
import torch

from model import MiniCPMV, MiniCPMVConfig
from model.tiny import tiny_config
from rl.config import LearnerConfig
from rl.learner import LocalLearner
from rl.learner.fsdp import shard_units
from rl.learner.sharded import ShardedLearner


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_the_lm_head_is_in_the_root_unit(tied):
    config: MiniCPMVConfig = tiny_config(1000, 1, 2, 0, tie_word_embeddings=tied)
    with torch.device("meta"):
        model = MiniCPMV(config)
    model.llm.tie_weights()
    assert (model.llm.lm_head.weight is model.llm.model.embed_tokens.weight) == tied
    units = shard_units(model)
    assert model.llm.lm_head not in units
    assert (model.llm.model.embed_tokens in units) == (not tied)  # one parameter, one unit
    assert all(layer in units for layer in model.llm.model.layers)


def test_two_ranks_with_a_different_number_of_chunks_equal_the_local_learner(tiny_ckpt, samples, local_ray):
    cfg = LearnerConfig(lora=False, lr=1e-3, adam_eps=1e-3, entropy_metric=True, micro_batch_tokens=256,
                        logprob_chunk_tokens=5)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    try:
        scored = [sum(len(samples[i].completion_ids) for i in part) for part in sharded.split(samples)]
        assert len(set(scored)) == 2  # the ranks score different numbers of tokens: different chunk counts
        for _ in range(2):
            a, b = local.step(samples), sharded.step(samples)
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        mine = {n: t.clone() for n, t in local.sync_payload("full")[1]}
        theirs = {n: t.clone() for n, t in sharded.sync_payload("full")[1]}
        assert mine.keys() == theirs.keys()
        for name, tensor in mine.items():  # the LM head included: its gradient reached every rank's shard
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)
    finally:
        sharded.close()
