"""The combined reward: the pure weighted sum, per-mode weights, None handling, and scoring a batch end to end."""

import pytest

from rewards.combine import CombineConfig, combine, score_combined

PARTS = {"acc": [1.0, 0.0, 1.0, 1.0], "format": [1.0, 1.0, 0.0, 1.0], "repetition": [0.0, 0.0, 0.0, -1.0],
         "reward_model": [3.0, 1.0, 2.0, 2.0]}


def test_paper_default():
    config = CombineConfig()
    assert dict(config.weights) == {"acc": 1.0, "format": 1.0, "repetition": 1.0, "reward_model": 0.5}
    assert config.group_normalize == ("reward_model",) and config.none_policy == "propagate"
    totals = combine(PARTS, ["long"] * 4, [0, 0, 0, 0], config)
    # reward_model in one group: mean 2, population std sqrt(0.5) -> z = [1.414, -1.414, 0, 0]
    z = 2 ** 0.5
    assert totals == pytest.approx([2 + 0.5 * z, 1 - 0.5 * z, 1.0, 1.0])


def test_groups_are_normalised_separately():
    totals = combine({"reward_model": [1.0, 3.0, 100.0, 300.0]}, ["short"] * 4, ["a", "a", "b", "b"],
                     CombineConfig(parts={"reward_model": "reward_model"}, weights={"reward_model": 1.0}))
    assert totals == pytest.approx([-1.0, 1.0, -1.0, 1.0])


def test_mode_weights():
    config = CombineConfig(mode_weights={"short": {"format": 0.0, "acc": 2.0}})
    totals = combine(PARTS, ["long", "short", "short", "long"], [0, 1, 2, 3], config)  # groups of one: z = 0
    assert totals == [2.0, 0.0, 2.0, 1.0]
    assert config.weight("format", "short") == 0.0 and config.weight("format", "long") == 1.0


def test_none_policies():
    parts = {"acc": [None, 1.0], "format": [1.0, None]}
    base = dict(parts={"acc": "acc", "format": "format"}, weights={"acc": 1.0, "format": 1.0}, group_normalize=())
    assert combine(parts, ["long", "long"], [0, 1], CombineConfig(**base)) == [None, None]
    assert combine(parts, ["long", "long"], [0, 1], CombineConfig(**base, none_policy="zero")) == [1.0, 1.0]
    # a None part with weight 0 in the row's mode is ignored
    config = CombineConfig(**base, mode_weights={"short": {"acc": 0.0}})
    assert combine(parts, ["short", "long"], [0, 1], config) == [1.0, None]


def test_config_validation():
    with pytest.raises(ValueError, match="without a weight"):
        CombineConfig(parts={"acc": "acc"}, weights={})
    with pytest.raises(ValueError, match="unknown parts"):
        CombineConfig(group_normalize=("nope",))
    with pytest.raises(ValueError, match="mode_weights modes must be one of short, long"):
        CombineConfig(mode_weights={"auto": {"acc": 1.0}})
    with pytest.raises(ValueError, match="none_policy"):
        CombineConfig(none_policy="skip")
    with pytest.raises(ValueError, match="one entry per row"):
        combine({"acc": [1.0]}, ["long", "long"], [0, 1],
                CombineConfig(parts={"acc": "acc"}, weights={"acc": 1}, group_normalize=()))


def test_score_combined_end_to_end(runner, mk):
    rows = [
        mk("Add them.</think>\n\nThe answer is \\boxed{4}.", "4", "long"),  # right, well formed
        mk("Add them.</think>\n\n\\boxed{5}", "4", "long"),  # wrong
        mk("I add " * 40 + "</think>\n\n\\boxed{4}", "4", "long"),  # right but repetitive
        mk("<think>x</think>\\boxed{4}", "4", "short"),  # thinking in short mode: format 0 (the answer counts)
        mk("4", None, "short"),  # no reference: acc cannot score
    ]
    scored = score_combined(rows, groups=["q", "q", "q", "s", "s"], runner=runner)
    parts = {k: [o.score for o in v] for k, v in scored.parts.items()}
    assert parts["acc"] == [1.0, 0.0, 1.0, 1.0, None]
    assert parts["format"] == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert parts["repetition"] == [0.0, 0.0, -1.0, 0.0, 0.0]
    totals = [o.score for o in scored.total]
    assert totals[4] is None and "acc: cannot score" in scored.total[4].error
    expected = combine({k: parts[k] for k in parts}, ["long", "long", "long", "short", "short"],
                       ["q", "q", "q", "s", "s"])
    assert totals == pytest.approx(expected)
    assert totals[0] > totals[1] and totals[0] > totals[2]


def test_score_combined_skips_parts_weighted_zero(runner, mk):
    config = CombineConfig(weights={"acc": 1.0, "format": 1.0, "repetition": 1.0, "reward_model": 0.0})
    scored = score_combined([mk("\\boxed{1}", "1", "short")], config=config, runner=runner)
    assert "reward_model" not in scored.parts and scored.total[0].score == 2.0
