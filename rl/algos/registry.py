"""Name -> function registries for the RL math (verl `core_algos` pattern).

Four tables, one per kind of function; a config names an entry (`advantage: grpo`, `policy_loss: ppo_clip`,
`loss_agg: token-mean`, `kl: k3`) or a user's function by path (`advantage: my_algos.py:my_estimator`, with the
signature of the built-ins of its kind) and the learner looks it up here. Registering a name twice is an error (two
modules silently shadowing each other is exactly the kind of mistake these tables exist to prevent).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any, Callable, Mapping, TypeVar

from core.plugins import absolute_spec, is_path_spec, load_callable

F = TypeVar("F", bound=Callable)

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}
LOSS_AGGS: dict[str, Callable] = {}
KL_ESTIMATORS: dict[str, Callable] = {}


ENTRY_POINT_GROUPS = {"ADVANTAGE_ESTIMATORS": "minicpmv_rl.advantages", "POLICY_LOSSES": "minicpmv_rl.policy_losses",
                      "LOSS_AGGS": "minicpmv_rl.loss_aggs", "KL_ESTIMATORS": "minicpmv_rl.kl_estimators"}
"""Table -> the entry-point group a package adds its functions to, named as rewards are (`minicpmv_rl.rewards`):
`[project.entry-points."minicpmv_rl.advantages"] my_adv = "my_pkg.algos:my_estimator"`, then
`algo.advantage: my_adv`."""


def entry_point(table_name: str, name: str) -> Callable | None:
    """The function an installed package gives as entry point `name` of the table's group, or None."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[table_name]):
        if ep.name == name:
            return ep.load()
    return None


def _registrar(table: dict[str, Callable], kind: str) -> Callable[[str], Callable[[F], F]]:
    def register(name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in table and table[name] is not fn:
                raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__module__}."
                                 f"{table[name].__qualname__})")
            table[name] = fn
            return fn
        return decorator
    register.__doc__ = f"Decorator: register a {kind} under `name`."
    return register


def _getter(table: dict[str, Callable], kind: str, table_name: str) -> Callable[[str], Callable]:
    group = ENTRY_POINT_GROUPS[table_name]
    loaded: dict[str, Callable] = {}  # by path or entry point, once per process (the table lists registered names)

    def get(name: str) -> Callable:
        if name in table:
            return table[name]
        if name not in loaded:
            fn = load_callable(absolute_spec(name)) if is_path_spec(name) else entry_point(table_name, name)
            if fn is not None and not callable(fn):
                raise KeyError(f"{kind} {name!r} is not a function")
            if fn is not None:
                loaded[name] = fn
        try:
            return loaded[name]
        except KeyError:
            raise KeyError(f"unknown {kind} {name!r}; registered: {sorted(table)} (or a 'module:function' or "
                           f"'file.py:function' path, or an entry point of the group {group!r})") from None
    get.__doc__ = (f"The {kind} registered under `name`, the function a `module:function` / `file.py:function` "
                   f"path names, or an installed entry point of {group!r} (KeyError listing the known names "
                   "otherwise).")
    return get


register_advantage = _registrar(ADVANTAGE_ESTIMATORS, "advantage estimator")
register_policy_loss = _registrar(POLICY_LOSSES, "policy loss")
register_loss_agg = _registrar(LOSS_AGGS, "loss aggregation")
register_kl = _registrar(KL_ESTIMATORS, "KL estimator")

get_advantage = _getter(ADVANTAGE_ESTIMATORS, "advantage estimator", "ADVANTAGE_ESTIMATORS")
get_policy_loss = _getter(POLICY_LOSSES, "policy loss", "POLICY_LOSSES")
get_loss_agg = _getter(LOSS_AGGS, "loss aggregation", "LOSS_AGGS")
get_kl = _getter(KL_ESTIMATORS, "KL estimator", "KL_ESTIMATORS")


def options_for(fn: Callable, options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options `fn` declares, taken from a config section by name: each keyword-only parameter of `fn`
    found in `options` with a value other than None (None leaves the function's own default). So every registered
    function reads its own knobs (`grpo` takes std and eps, `rloo` none; `ppo_clip` takes dual_clip_c) and the
    caller never switches on the name."""
    params = inspect.signature(fn).parameters
    return {name: options[name] for name, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and options.get(name) is not None}
