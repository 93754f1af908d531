"""`combine`: the weighted sum of named reward parts, with per-mode weights and group z-normalisation.

The default is the paper's R = R_acc + R_format + R_rep + 0.5 * z(R_rm):
parts acc (the row's verifier, see `rewards.acc`), format, repetition, reward_model; weights 1, 1, 1, 0.5;
reward_model z-normalised within the group (the samples of one prompt) before weighting.

None (a part that cannot score a row, or failed on it): with `none_policy="propagate"` (the default) the row's
total is None (the row is excluded from its group's baseline and counted in the metrics, and its error names the
part); with `"zero"` the part counts as 0. A part whose weight is 0 for the row's mode is ignored either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

from core.modes import FIXED_MODES

from .api import Outcome, RewardInput
from .reward_model import group_znorm


def _paper_parts() -> dict[str, str]:
    return {"acc": "acc", "format": "format", "repetition": "repetition", "reward_model": "reward_model"}


def _paper_weights() -> dict[str, float]:
    return {"acc": 1.0, "format": 1.0, "repetition": 1.0, "reward_model": 0.5}


@dataclass(frozen=True)
class CombineConfig:
    """The combined reward (defaults: the paper's)."""

    parts: Mapping[str, str] = field(default_factory=_paper_parts)
    """Part name -> reward spec (a built-in name, an entry point or a `module:function` path)."""
    part_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Part name -> options of its reward."""
    weights: Mapping[str, float] = field(default_factory=_paper_weights)
    """Part name -> weight (every part needs one)."""
    mode_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per-mode overrides of `weights`, e.g. {"short": {"format": 0.5}}; modes are `long` and `short`."""
    group_normalize: tuple[str, ...] = ("reward_model",)
    """Parts z-normalised within each group before weighting (see `rewards.reward_model.group_znorm`)."""
    none_policy: str = "propagate"
    """A None part: `propagate` (the total is None) or `zero` (it counts as 0)."""
    znorm_eps: float = 1e-6
    """A group whose std is at most this gets z = 0."""

    def __post_init__(self) -> None:
        missing = [p for p in self.parts if p not in self.weights]
        if missing:
            raise ValueError(f"parts without a weight: {missing}")
        unknown = [p for p in list(self.group_normalize) + list(self.part_options) if p not in self.parts]
        for overrides in self.mode_weights.values():
            unknown += [p for p in overrides if p not in self.parts]
        if unknown:
            raise ValueError(f"unknown parts named: {sorted(set(unknown))}")
        bad_modes = [m for m in self.mode_weights if m not in FIXED_MODES]
        if bad_modes:
            raise ValueError(f"mode_weights modes must be one of {', '.join(FIXED_MODES)}, got {bad_modes}")
        if self.none_policy not in ("propagate", "zero"):
            raise ValueError(f"none_policy must be propagate or zero, got {self.none_policy!r}")
        object.__setattr__(self, "group_normalize", tuple(self.group_normalize))

    def weight(self, part: str, mode: str) -> float:
        """The weight of a part for a row of this mode (`long` or `short`)."""
        return float(self.mode_weights.get(mode, {}).get(part, self.weights[part]))


def combine(parts: Mapping[str, Sequence[float | None]], modes: Sequence[str], groups: Sequence[Hashable],
            config: CombineConfig = CombineConfig()) -> list[float | None]:
    """The totals (pure). parts: part name -> one score per row; modes: `long`/`short` per row; groups: group id per
    row (the prompt the sample answers)."""
    n = len(modes)
    if len(groups) != n or any(len(v) != n for v in parts.values()):
        raise ValueError("every part, the modes and the groups need one entry per row")
    normed = {name: (group_znorm(values, groups, config.znorm_eps) if name in config.group_normalize else list(values))
              for name, values in parts.items()}
    totals: list[float | None] = []
    for i, mode in enumerate(modes):
        total: float | None = 0.0
        for name in config.parts:
            w = config.weight(name, mode)
            if w == 0:
                continue
            value = normed[name][i]
            if value is None:
                if config.none_policy == "propagate":
                    total = None
                    break
                value = 0.0
            total += w * value  # type: ignore[operator]
        totals.append(total)
    return totals


@dataclass(frozen=True)
class CombinedScores:
    """The totals and the raw parts of a batch."""

    total: list[Outcome]
    """One Outcome per row; a propagated None names the part and its error."""
    parts: dict[str, list[Outcome]]
    """Part name -> raw (not z-normalised) Outcomes."""


def score_combined(samples: Sequence[RewardInput], groups: Sequence[Hashable] | None = None,
                   config: CombineConfig = CombineConfig(), runner: Any = None) -> CombinedScores:
    """Score every part that has a non-zero weight in some mode, then combine. groups: None gives each row its own
    group (z-normalised parts are then 0). runner: a `RewardRunner` (a temporary one when None)."""
    from .runner import RewardRunner

    samples = list(samples)
    groups = list(range(len(samples))) if groups is None else list(groups)
    modes = [s.resolved_mode for s in samples]
    own = runner is None
    runner = runner or RewardRunner()
    try:
        parts: dict[str, list[Outcome]] = {}
        for name, spec in config.parts.items():
            if all(config.weight(name, m) == 0 for m in set(modes)):
                continue
            parts[name] = runner.score(spec, samples, **dict(config.part_options.get(name, {})))
    finally:
        if own:
            runner.close()
    totals = combine({k: [o.score for o in v] for k, v in parts.items()}, modes, groups,
                     _only(config, parts))
    outcomes = []
    for i, total in enumerate(totals):
        seconds = sum(v[i].seconds for v in parts.values())
        error = None
        if total is None:
            failed = [f"{k}: {v[i].error or 'cannot score'}" for k, v in parts.items()
                      if v[i].score is None and config.weight(k, modes[i]) != 0]
            error = "; ".join(failed) or None
        outcomes.append(Outcome(total, error, seconds))
    return CombinedScores(total=outcomes, parts=parts)


def _only(config: CombineConfig, parts: Mapping[str, Any]) -> CombineConfig:
    """The config restricted to the parts that were scored (the others have weight 0 in every mode here)."""
    keep = {k: v for k, v in config.parts.items() if k in parts}
    return CombineConfig(parts=keep, part_options={k: v for k, v in config.part_options.items() if k in keep},
                         weights={k: config.weights[k] for k in keep},
                         mode_weights={m: {k: w for k, w in o.items() if k in keep}
                                       for m, o in config.mode_weights.items()},
                         group_normalize=tuple(p for p in config.group_normalize if p in keep),
                         none_policy=config.none_policy, znorm_eps=config.znorm_eps)
