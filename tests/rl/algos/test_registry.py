"""The name registries: contents, lookups, duplicate protection."""

from __future__ import annotations

import pytest
import torch

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


def test_an_installed_packages_entry_point_is_found_by_name(tmp_path, monkeypatch):
    """A package adds an estimator under the group `minicpmv_rl.advantages` (as reward packages do under
    `minicpmv_rl.rewards`): `algo.advantage: halved` resolves to it, in the config check and in the learner's
    lookup; a name nothing provides lists the group."""
    from rl.algos import ENTRY_POINT_GROUPS
    from rl.config import ConfigError, load

    (tmp_path / "my_algos_pkg.py").write_text("def halved(rewards, group_index, *, eps=1e-6):\n"
                                              "    return rewards / 2\n")
    info = tmp_path / "my_algos-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-algos\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUPS['ADVANTAGE_ESTIMATORS']}]\n"
                                           "halved = my_algos_pkg:halved\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load("configs/tiny_cpu.yaml", ["algo.advantage=halved"]).algo.advantage == "halved"
    fn = get_advantage("halved")
    assert fn.__module__ == "my_algos_pkg" and fn(torch.tensor([2.0]), torch.tensor([0])).item() == 1.0
    assert "halved" not in ADVANTAGE_ESTIMATORS  # loaded, not registered: the table lists what is registered
    with pytest.raises(ConfigError, match=r"'quartered' is not a registered advantage estimator; allowed: .* or an "
                                          r"entry point of the group 'minicpmv_rl.advantages'"):
        load("configs/tiny_cpu.yaml", ["algo.advantage=quartered"])
    with pytest.raises(KeyError, match="entry point of the group 'minicpmv_rl.advantages'"):
        get_advantage("quartered")
