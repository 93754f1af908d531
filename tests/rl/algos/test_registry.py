"""The name registries: contents, lookups, duplicate protection."""

from __future__ import annotations

import pytest

from rl.algos import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGGS,
    POLICY_LOSSES,
    get_advantage,
    get_kl,
    get_loss_agg,
    get_policy_loss,
    grpo_advantages,
    register_advantage,
    register_policy_loss,
)


def test_registered_names():
    assert sorted(ADVANTAGE_ESTIMATORS) == ["dr_grpo", "grpo", "rloo"]
    assert sorted(POLICY_LOSSES) == ["gspo", "ppo_clip"]
    assert sorted(LOSS_AGGS) == ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                                 "token-mean"]
    assert sorted(KL_ESTIMATORS) == ["k1", "k2", "k3"]
    assert get_advantage("grpo") is grpo_advantages
    for get, table in [(get_policy_loss, POLICY_LOSSES), (get_loss_agg, LOSS_AGGS), (get_kl, KL_ESTIMATORS)]:
        for name, fn in table.items():
            assert get(name) is fn


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="ppo_clip"):
        get_policy_loss("ppo")


def test_duplicate_registration_is_an_error():
    register_advantage("grpo")(grpo_advantages)  # the same function again: harmless (module re-import)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda rewards, group_index: rewards)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("gspo")(lambda *a, **k: None)
    assert get_advantage("grpo") is grpo_advantages
