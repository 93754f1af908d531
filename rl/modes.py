"""The hybrid-mode schedule: which prompts are sampled in long mode (think first) and which in short mode.

Per prompt, not per sample: all n samples of a prompt share its mode. The paper assigns 50% of prompts to long
mode throughout; `schedule` can move that fraction over training. Rows whose data fixes a mode keep it.
"""

from __future__ import annotations

import math
import random

from .config import ModeScheduleConfig


def long_fraction_at(cfg: ModeScheduleConfig, step: int) -> float:
    if cfg.schedule == "constant":
        return cfg.long_fraction
    if cfg.schedule == "step":
        return cfg.long_fraction if step < cfg.ramp_steps else cfg.long_fraction_end
    progress = 1.0 if cfg.ramp_steps == 0 else min(1.0, step / cfg.ramp_steps)
    return cfg.long_fraction + progress * (cfg.long_fraction_end - cfg.long_fraction)


def assign_modes(row_modes: list[str | None], step: int, cfg: ModeScheduleConfig, rng: random.Random) -> list[str]:
    """One mode per prompt. Of the k prompts the schedule assigns, floor(f*k) go long, plus one more with
    probability frac(f*k) (so the expected share is exactly f and a batch never drifts from it by a prompt or
    more); which prompts go long is a uniform random choice."""
    free = [i for i, m in enumerate(row_modes) if not (cfg.respect_data_mode and m)]
    frac = long_fraction_at(cfg, step) * len(free)
    n_long = math.floor(frac) + (1 if rng.random() < frac - math.floor(frac) else 0)
    long = set(rng.sample(free, n_long))
    return [row_modes[i] if i not in free else ("long" if i in long else "short") for i in range(len(row_modes))]
