"""The hybrid-mode schedule: which prompts are sampled in long mode (think first) and which in short mode.

Per prompt, not per sample: all n samples of a prompt share its mode. The paper assigns 50% of prompts to long
mode throughout; `schedule` can move that fraction over training. Rows whose data fixes a mode keep it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "step")


@dataclass
class ModeScheduleConfig:
    """Long-mode share of prompts over training (paper: a constant 0.5)."""
    long_fraction: float = 0.5
    """Share of prompts assigned to long mode (at step 0 for linear/step schedules)."""
    schedule: str = "constant"
    """constant | linear (from long_fraction to long_fraction_end over ramp_steps) | step (switch at ramp_steps)."""
    long_fraction_end: float = 0.5
    ramp_steps: int = 0
    respect_data_mode: bool = True
    """A row with its own `mode` keeps it; False assigns every row by the schedule."""

    def __post_init__(self):
        for name in ("long_fraction", "long_fraction_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: expected one of {SCHEDULES}")
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps={self.ramp_steps}: must be >= 0")


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
