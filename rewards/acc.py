"""`acc`: R_acc of the recipe: each row's accuracy verifier, chosen by the row's metadata.

`meta["verifier"]` names it (`math`, `choice`, `number`, `exact`, `regex`, `prob`, or another reward in `allowed`);
a row that names none uses `choice` when it has `meta["options"]`, else `default`. The paper: rule-based verifiers
for short answers (numbers, choices, math), RLPR's `prob` for free-form answers. Data may only name verifiers in
`allowed` (`data.allowed_rewards` of a run): the config lists a plugin (a `file.py:function` or `module:function`
path, an entry point), and rows name it by that spec or by the name it registers with `@register_reward("name")`;
a code path that is not listed is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .api import RewardFn, RewardInput, get_reward, register_reward, registered_names

VERIFIERS: tuple[str, ...] = ("math", "choice", "number", "exact", "regex", "prob")
"""The verifiers a data row may name (`acc`'s `allowed` and the data schema's default): the one list of them."""


@dataclass(frozen=True)
class AccConfig:
    """Options of the `acc` router."""

    key: str = "verifier"
    """The meta key that names a row's verifier."""
    default: str = "math"
    """The verifier of rows that name none and have no `options`."""
    allowed: tuple[str, ...] = VERIFIERS
    """Verifiers a row may name (built-in or entry-point names; paths are refused)."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options per verifier, e.g. {"math": {"rel_tol": 0.001}}."""


_CACHE: dict[str, RewardFn] = {}


_TABLES: dict[tuple[str, ...], dict[str, str]] = {}


def allowed_table(allowed) -> dict[str, str]:
    """What a row may name -> the reward spec to resolve: every entry of `allowed`, and for a plugin listed by
    path or entry point, the names it registers (its module is imported here: the config listed it)."""
    key = tuple(allowed)
    if key not in _TABLES:
        table = {spec: spec for spec in key}
        for spec in key:
            if spec not in VERIFIERS:
                for alias in registered_names(spec):
                    table.setdefault(alias, spec)
        _TABLES[key] = table
    return _TABLES[key]


def verifier_name(sample: RewardInput, config: AccConfig = AccConfig()) -> str:
    """The reward spec of the verifier a row asks for (a listed name, or a listed plugin's registered name)."""
    name = sample.meta.get(config.key)
    if name is None:
        name = "choice" if sample.meta.get("options") else config.default
    name = str(name)
    table = allowed_table(config.allowed)
    if name not in table or name == "acc":
        raise ValueError(f"row asks for verifier {name!r}, not one of {sorted(table)}")
    return table[name]


@register_reward("acc", config=AccConfig)
def acc_reward(sample: RewardInput, config: AccConfig = AccConfig()) -> float | None:
    """The score of the row's own verifier."""
    name = verifier_name(sample, config)
    options = dict(config.options.get(name, {}))
    key = f"{name}|{sorted(options.items())!r}"
    if key not in _CACHE:
        _CACHE[key] = get_reward(name, **options)
    reward = _CACHE[key]
    if reward.is_async:
        raise ValueError(f"acc routes to synchronous verifiers only; {name!r} is async")
    if reward.batched:  # a batched verifier (a TRL-style function) on a batch of one
        (score,) = reward.fn([sample])
        return score
    return reward.fn(sample)
