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
