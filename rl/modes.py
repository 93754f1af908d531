"""The hybrid-mode schedule: which prompts are sampled in long mode (think first) and which in short mode, and the
measured benefit of thinking that the `benefit` schedule learns from.

Per prompt, not per sample: all n samples of a prompt share its mode. The paper assigns 50% of prompts to long
mode throughout; `schedule` can move that fraction over training. Rows whose data fixes a mode keep it.

Paired groups (`modes.paired_fraction`): a prompt sampled in both modes, two groups of n/2 (each its own advantage
group, so each mode is trained as in an unpaired group). The pair measures the prompt's benefit of thinking,

    delta = mean reward(long) - mean reward(short) - token_cost * (mean tokens(long) - mean tokens(short)) / token_scale

and `schedule: benefit` sends each other prompt to long mode with probability sigmoid(estimate / temperature),
clipped to [floor, 1 - floor], where the estimate is an exponential average of the prompt's deltas, else its
source's, else the data set's, else unknown (the prior `long_fraction`). The estimates are part of the checkpoint.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

from .config import ModeScheduleConfig
from .scoring import row_source

PAIRED = "paired"
"""`plan_modes`' word for a prompt sampled in both modes."""


def long_fraction_at(cfg: ModeScheduleConfig, step: int) -> float:
    """The scheduled long-mode share at `step` (for `benefit`: the prior of a prompt nothing is known about)."""
    if cfg.schedule in ("constant", "benefit"):
        return cfg.long_fraction
    if cfg.schedule == "step":
        return cfg.long_fraction if step < cfg.ramp_steps else cfg.long_fraction_end
    progress = 1.0 if cfg.ramp_steps == 0 else min(1.0, step / cfg.ramp_steps)
    return cfg.long_fraction + progress * (cfg.long_fraction_end - cfg.long_fraction)


def _share(indices: list[int], fraction: float, rng: random.Random) -> set[int]:
    """floor(f*k) of the k indices, plus one more with probability frac(f*k) (the expected share is exactly f and a
    batch never drifts from it by one or more), chosen uniformly."""
    frac = fraction * len(indices)
    count = math.floor(frac) + (1 if rng.random() < frac - math.floor(frac) else 0)
    return set(rng.sample(indices, count))


def assign_modes(row_modes: list[str | None], step: int, cfg: ModeScheduleConfig, rng: random.Random) -> list[str]:
    """One mode per prompt by the scheduled long share (`_share`); a row's own mode kept (respect_data_mode)."""
    free = [i for i, m in enumerate(row_modes) if not (cfg.respect_data_mode and m)]
    long = _share(free, long_fraction_at(cfg, step), rng)
    return [row_modes[i] if i not in free else ("long" if i in long else "short") for i in range(len(row_modes))]


@dataclass
class BenefitTracker:
    """The running estimates of the benefit of thinking: per prompt id, per source, and over the data set."""
    decay: float = 0.5
    prompts: dict[str, float] = field(default_factory=dict)
    sources: dict[str, float] = field(default_factory=dict)
    overall: float | None = None

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.decay) * old + self.decay * new

    def observe(self, prompt: str, source: str | None, delta: float) -> None:
        self.prompts[prompt] = self._average(self.prompts.get(prompt), delta)
        if source is not None:
            self.sources[source] = self._average(self.sources.get(source), delta)
        self.overall = self._average(self.overall, delta)

    def estimate(self, prompt: str, source: str | None) -> float | None:
        """The prompt's estimate, else its source's, else the data set's, else None (nothing measured yet)."""
        if prompt in self.prompts:
            return self.prompts[prompt]
        if source is not None and source in self.sources:
            return self.sources[source]
        return self.overall

    def state_dict(self) -> dict:
        return {"prompts": dict(self.prompts), "sources": dict(self.sources), "overall": self.overall}

    def load_state_dict(self, state: dict) -> None:
        self.prompts, self.sources = dict(state["prompts"]), dict(state["sources"])
        self.overall = state["overall"]


def long_probability(estimate: float | None, cfg: ModeScheduleConfig) -> float:
    """sigmoid(estimate / benefit_temperature) within [benefit_floor, 1 - benefit_floor]; the prior long_fraction
    for a prompt nothing is known about."""
    if estimate is None:
        return cfg.long_fraction
    p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, estimate / cfg.benefit_temperature))))
    return min(1.0 - cfg.benefit_floor, max(cfg.benefit_floor, p))


def plan_modes(rows: list, step: int, cfg: ModeScheduleConfig, rng: random.Random,
               tracker: BenefitTracker | None = None) -> list[str]:
    """One plan per row (anything with `mode`, `id` and `source`): "short", "long", "auto" or PAIRED. A row's own
    mode is kept (respect_data_mode); of the others, `paired_fraction` are paired, then `auto_fraction` of the rest
    go to auto mode, and the rest are assigned by the schedule: the long share (`assign_modes`), or under `benefit`
    each by its own long-mode probability."""
    free = [i for i, r in enumerate(rows) if not (cfg.respect_data_mode and r.mode)]
    paired = _share(free, cfg.paired_fraction, rng) if cfg.paired_fraction else set()
    auto = _share([i for i in free if i not in paired], cfg.auto_fraction, rng) if cfg.auto_fraction else set()
    rest = [i for i in free if i not in paired and i not in auto]
    if cfg.schedule == "benefit":
        tracker = tracker or BenefitTracker(cfg.benefit_decay)
        estimates = {i: tracker.estimate(rows[i].id, row_source({"source": rows[i].source})) for i in rest}
        long = {i for i in rest if rng.random() < long_probability(estimates[i], cfg)}
    else:
        long = _share(rest, long_fraction_at(cfg, step), rng)
    return [rows[i].mode if i not in free else PAIRED if i in paired else "auto" if i in auto else
            "long" if i in long else "short" for i in range(len(rows))]


@dataclass
class PairMeasure:
    """One paired prompt's measurement."""
    prompt: str
    source: str | None
    delta: float
    reward: dict[str, float]
    """Mean reward per mode."""
    tokens: dict[str, float]
    """Mean completion tokens per mode."""


def measure_pairs(scored: list, cfg: ModeScheduleConfig) -> list[PairMeasure]:
    """The benefit of each paired prompt whose two groups were both scored (`meta["pair"]` joins them), from the
    samples with a reward."""
    halves: dict[str, dict[str, tuple]] = {}
    for result, totals, _ in scored:
        pair = result.request.meta.get("pair")
        if pair is None:
            continue
        rewards = [t for t in totals if t is not None]
        tokens = [len(s.completion_token_ids) for s, t in zip(result.samples, totals) if t is not None]
        if rewards:
            halves.setdefault(pair, {})[result.request.mode] = (result.request.meta, rewards, tokens)
    out = []
    for pair, by_mode in halves.items():
        if set(by_mode) != {"short", "long"}:
            continue
        reward = {m: statistics.fmean(by_mode[m][1]) for m in by_mode}
        tokens = {m: statistics.fmean(by_mode[m][2]) for m in by_mode}
        delta = reward["long"] - reward["short"] - cfg.token_cost * (tokens["long"] - tokens["short"]) / cfg.token_scale
        meta = by_mode["long"][0]
        out.append(PairMeasure(str(meta.get("id", pair)), row_source(meta), delta, reward, tokens))
    return out


def plan_metrics(pairs: list[PairMeasure], rows: list[dict], tracker: BenefitTracker) -> dict[str, float]:
    """A step's mode metrics: the share of samples drawn in long mode per data source (what the schedule did), how
    often auto mode chose to think (overall and per source), the paired prompts measured and their benefit (mean,
    min, max), and how many prompts the tracker knows. rows: `rl.scoring.metric_rows` of the step's groups."""
    out: dict[str, float] = {}
    by_source: dict[str, list[bool]] = {}
    for r in rows:  # (the overall share is rl.metrics.mode_metrics' mode/long_share)
        if r["source"] is not None:
            by_source.setdefault(r["source"], []).append(r["mode"] == "long")
    out.update({f"mode/long_share/source/{k}": sum(v) / len(v) for k, v in by_source.items()})
    auto = [r for r in rows if r["mode"] == "auto"]
    if auto:  # how often the model chooses to think where it may
        out["think_rate/auto"] = sum(r["thinks"] for r in auto) / len(auto)
        for source in sorted({r["source"] for r in auto if r["source"] is not None}):
            chosen = [r["thinks"] for r in auto if r["source"] == source]
            out[f"think_rate/auto/source/{source}"] = sum(chosen) / len(chosen)
    out["mode/paired"] = len(pairs)
    if pairs:
        deltas = [p.delta for p in pairs]
        out.update({"mode/benefit/mean": statistics.fmean(deltas), "mode/benefit/min": min(deltas),
                    "mode/benefit/max": max(deltas)})
    out["mode/benefit/prompts_known"] = len(tracker.prompts)
    return out
