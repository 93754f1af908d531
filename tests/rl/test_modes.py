import math
import random

import pytest

from rl.modes import ModeScheduleConfig, assign_modes, long_fraction_at


def test_paper_default_is_half_long_per_prompt():
    rng = random.Random(0)
    modes = assign_modes([None] * 128, step=0, cfg=ModeScheduleConfig(), rng=rng)
    assert modes.count("long") == 64 and modes.count("short") == 64


def test_rows_with_a_mode_keep_it():
    modes = assign_modes(["long", None, "short", None], 0, ModeScheduleConfig(long_fraction=0.0), random.Random(0))
    assert modes == ["long", "short", "short", "short"]
    forced = assign_modes(["long", "long"], 0, ModeScheduleConfig(long_fraction=0.0, respect_data_mode=False),
                          random.Random(0))
    assert forced == ["short", "short"]


def test_fractional_share_is_unbiased():
    rng = random.Random(1)
    cfg = ModeScheduleConfig(long_fraction=0.3)
    counts = [assign_modes([None] * 5, 0, cfg, rng).count("long") for _ in range(4000)]
    assert set(counts) == {1, 2}  # 1.5 expected: never 0 or 3
    assert sum(counts) / len(counts) == pytest.approx(1.5, abs=0.05)


def test_schedules_by_hand():
    linear = ModeScheduleConfig(long_fraction=0.2, long_fraction_end=0.6, schedule="linear", ramp_steps=4)
    assert [round(long_fraction_at(linear, s), 6) for s in (0, 1, 2, 4, 10)] == [0.2, 0.3, 0.4, 0.6, 0.6]
    step = ModeScheduleConfig(long_fraction=1.0, long_fraction_end=0.5, schedule="step", ramp_steps=3)
    assert [long_fraction_at(step, s) for s in (0, 2, 3, 9)] == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="long_fraction"):
        ModeScheduleConfig(long_fraction=1.5)
    with pytest.raises(ValueError, match="schedule"):
        ModeScheduleConfig(schedule="cyclic")


class Row:
    def __init__(self, id, mode=None, source="d.jsonl"):
        self.id, self.mode, self.source = id, mode, source


def test_paired_prompts_are_a_share_of_the_free_rows():
    from rl.modes import PAIRED, plan_modes

    rows = [Row(str(i)) for i in range(8)] + [Row("fixed", mode="long")]
    cfg = ModeScheduleConfig(paired_fraction=0.25, long_fraction=0.5)
    plans = plan_modes(rows, 0, cfg, random.Random(0))
    assert plans.count(PAIRED) == 2 and plans[-1] == "long"  # a row's own mode is never paired
    assert plans.count("long") == 1 + 3 and plans.count("short") == 3  # half of the 6 unpaired, plus the fixed one
    plain = plan_modes(rows, 0, ModeScheduleConfig(), random.Random(0))  # no pairs: the paper's schedule as before
    assert plain == assign_modes([r.mode for r in rows], 0, ModeScheduleConfig(), random.Random(0))


def test_the_tracker_falls_back_from_prompt_to_source_to_data_set_and_round_trips():
    from rl.modes import BenefitTracker

    tracker = BenefitTracker(decay=0.5)
    assert tracker.estimate("a", "s") is None
    tracker.observe("a", "s", 1.0)
    tracker.observe("a", "s", 0.0)
    assert tracker.estimate("a", "s") == 0.5  # (1 - 0.5) * 1.0 + 0.5 * 0.0
    tracker.observe("b", "t", -1.0)
    assert tracker.estimate("new", "s") == 0.5 and tracker.estimate("new", "t") == -1.0
    assert tracker.estimate("new", "unseen") == tracker.overall == pytest.approx(-0.25)
    again = BenefitTracker(decay=0.5)
    again.load_state_dict(tracker.state_dict())
    assert again == tracker


def test_the_benefit_schedule_sends_prompts_that_gain_from_thinking_to_long_mode():
    from rl.modes import BenefitTracker, long_probability, plan_modes

    cfg = ModeScheduleConfig(schedule="benefit", paired_fraction=0.0, benefit_temperature=0.1, benefit_floor=0.05,
                             long_fraction=0.5)
    assert long_probability(None, cfg) == 0.5  # nothing known: the prior
    assert long_probability(0.2, cfg) == pytest.approx(1 / (1 + math.exp(-2)))
    assert long_probability(5.0, cfg) == 0.95 and long_probability(-5.0, cfg) == 0.05  # the floor on both sides
    tracker = BenefitTracker()
    for i in range(200):
        tracker.observe(f"hard{i}", "hard", 1.0)
        tracker.observe(f"easy{i}", "easy", -1.0)
    rows = [Row(f"hard{i}", source="hard") for i in range(200)] + [Row(f"easy{i}", source="easy") for i in range(200)]
    plans = plan_modes(rows, 0, cfg, random.Random(0), tracker)
    assert 0.9 <= plans[:200].count("long") / 200 <= 0.99 and 0.01 <= plans[200:].count("long") / 200 <= 0.1


def test_a_pair_measures_reward_minus_the_price_of_its_tokens():
    from types import SimpleNamespace as NS

    from rl.modes import measure_pairs

    def group(mode, rewards, lengths, pair="p"):
        request = NS(mode=mode, meta={"pair": pair, "id": "row-7", "source": "/data/geo.jsonl"})
        samples = [NS(completion_token_ids=[0] * n) for n in lengths]
        return (NS(request=request, samples=samples), rewards, [{}] * len(rewards))

    cfg = ModeScheduleConfig(paired_fraction=0.5, token_cost=0.5, token_scale=1000)
    scored = [group("short", [0.0, 1.0], [10, 30]), group("long", [1.0, None], [800, 5000]),
              group("long", [1.0, 1.0], [5, 5], pair="alone")]  # its short half was not scored: no measure
    [pair] = measure_pairs(scored, cfg)
    assert pair.prompt == "row-7" and pair.source == "geo.jsonl"
    assert pair.reward == {"short": 0.5, "long": 1.0} and pair.tokens == {"short": 20.0, "long": 800.0}
    assert pair.delta == pytest.approx(1.0 - 0.5 - 0.5 * (800 - 20) / 1000)  # the unscored sample left out


def test_a_share_of_prompts_goes_to_auto_mode_before_the_long_short_split():
    from rl.modes import plan_modes

    rows = [Row(str(i)) for i in range(10)] + [Row("fixed", mode="short")]
    plans = plan_modes(rows, 0, ModeScheduleConfig(auto_fraction=0.4, long_fraction=0.5), random.Random(0))
    assert plans.count("auto") == 4 and plans[-1] == "short"
    assert plans[:10].count("long") == 3 and plans[:10].count("short") == 3
