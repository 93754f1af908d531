"""Name -> function registries for the RL math (verl `core_algos` pattern).

Four tables, one per kind of function; a config names an entry (`advantage: grpo`, `policy_loss: ppo_clip`,
`loss_agg: token-mean`, `kl: k3`) or a user's function by path (`advantage: my_algos.py:my_estimator`, with the
signature of the built-ins of its kind) and the learner looks it up here. Registering a name twice is an error (two
modules silently shadowing each other is exactly the kind of mistake these tables exist to prevent).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, TypeVar

from core.plugins import absolute_spec, is_path_spec, load_callable

F = TypeVar("F", bound=Callable)

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}
LOSS_AGGS: dict[str, Callable] = {}
KL_ESTIMATORS: dict[str, Callable] = {}


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


def _getter(table: dict[str, Callable], kind: str) -> Callable[[str], Callable]:
    def get(name: str) -> Callable:
        if name not in table and is_path_spec(name):  # a user's function by path, loaded once per process
            fn = load_callable(absolute_spec(name))
            if not callable(fn):
                raise KeyError(f"{kind} {name!r} is not a function")
            table[name] = fn
        try:
            return table[name]
        except KeyError:
            raise KeyError(f"unknown {kind} {name!r}; registered: {sorted(table)} (or a 'module:function' or "
                           "'file.py:function' path)") from None
    get.__doc__ = (f"The {kind} registered under `name`, or the function a `module:function` / `file.py:function` "
                   "path names (KeyError listing the known names otherwise).")
    return get


register_advantage = _registrar(ADVANTAGE_ESTIMATORS, "advantage estimator")
register_policy_loss = _registrar(POLICY_LOSSES, "policy loss")
register_loss_agg = _registrar(LOSS_AGGS, "loss aggregation")
register_kl = _registrar(KL_ESTIMATORS, "KL estimator")

get_advantage = _getter(ADVANTAGE_ESTIMATORS, "advantage estimator")
get_policy_loss = _getter(POLICY_LOSSES, "policy loss")
get_loss_agg = _getter(LOSS_AGGS, "loss aggregation")
get_kl = _getter(KL_ESTIMATORS, "KL estimator")


def options_for(fn: Callable, options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options `fn` declares, taken from a config section by name: each keyword-only parameter of `fn`
    found in `options` with a value other than None (None leaves the function's own default). So every registered
    function reads its own knobs (`grpo` takes std and eps, `rloo` none; `ppo_clip` takes dual_clip_c) and the
    caller never switches on the name."""
    params = inspect.signature(fn).parameters
    return {name: options[name] for name, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and options.get(name) is not None}
