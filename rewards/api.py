"""The reward contract: what a reward receives, what it returns, and how one is found by name.

A reward is a plain callable `fn(sample: RewardInput) -> float | None` (or a small class with `__call__`).
None means "cannot score": the row is excluded from its group's baseline and counted in the metrics.
Batched form: `fn(samples: list[RewardInput]) -> list[float | None]`, declared with `batched=True`.
TRL's form, found by its signature: `fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]`
(or `fn(completions, **kwargs)`), with the rows' reference as `answer`, their `mode` and the keys of their `meta`
as further keyword columns (`trl_batch`).
Async form: an `async def` of either shape (found by `inspect.iscoroutinefunction`).

Rewards are found by `get_reward(spec)`, where spec is
  - a built-in name (`math`, `choice`, `number`, `exact`, `regex`, `format`, `repetition`, `overlong`, `prob`,
    `reward_model`, `acc`),
  - an entry-point name in the group `minicpmv_rl.rewards` (a package's `[project.entry-points."minicpmv_rl.rewards"]`),
  - a `module:function` path (`my_pkg.rewards:score`) or a file path (`path/to/file.py:score`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Union, runtime_checkable

# The modes and think tags are core.modes' (re-exported here: plugins import them from rewards.api).
from core.modes import MODES, THINK_CLOSE, THINK_OPEN, resolve_mode, split_completion  # noqa: F401
from core.plugins import absolute_spec, load_callable

ENTRY_POINT_GROUP = "minicpmv_rl.rewards"

Score = Union[float, None]


@dataclass(frozen=True)
class RewardInput:
    """One row to score. Build it with `RewardInput.make(...)`, which splits the completion by mode."""

    completion: str
    """The full completion text as generated (reasoning, `</think>` and answer in long mode)."""
    answer_text: str
    """The final-answer part: after the last `</think>` in long mode, the whole completion in short mode."""
    reference: Any = None
    """The reference answer (usually a string); None for reference-free rewards."""
    mode: str = "auto"
    """`long`, `short` or `auto` (the model chose: long if the completion holds `</think>`)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Per-row metadata: options of a choice question, token counts, log-probs for `prob`, a group id..."""
    thinking: str | None = None
    """The reasoning part (None in short mode)."""

    @classmethod
    def make(cls, completion: str, reference: Any = None, mode: str = "auto",
             meta: Mapping[str, Any] | None = None) -> "RewardInput":
        thinking, answer = split_completion(completion, mode)
        return cls(completion=completion, answer_text=answer, reference=reference, mode=mode,
                   meta=dict(meta or {}), thinking=thinking)

    @property
    def resolved_mode(self) -> str:
        """`long` or `short`: `auto` resolved by the presence of `</think>`."""
        return resolve_mode(self.completion, self.mode)


@runtime_checkable
class Reward(Protocol):
    """A per-row reward. Batched rewards take and return lists instead."""

    def __call__(self, sample: RewardInput) -> Score: ...


@dataclass(frozen=True)
class Outcome:
    """The result of one reward call on one row."""

    score: float | None
    """The reward, or None (cannot score, or failed: then `error` says why)."""
    error: str | None = None
    """None, or a one-line message: the exception, a timeout, a dead worker, a bad return value."""
    seconds: float = 0.0
    """Wall-clock seconds of the call (a batched call's time is shared evenly among its rows)."""


@dataclass(frozen=True)
class RewardFn:
    """A resolved reward: the callable and how to call it."""

    name: str
    """The spec it was resolved from (a name, an entry point or a path)."""
    fn: Callable[..., Any]
    """The callable, with options already bound."""
    batched: bool = False
    """Takes a list of samples and returns a list of scores."""
    is_async: bool = False
    """A coroutine function."""
    sandbox: bool = True
    """Run in the sandbox's workers (time and memory bounds); False: in-process (trusted, e.g. a GPU scorer)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The options it was built with."""
    source: str | None = None
    """The spec string it was resolved from (None for a callable): a worker rebuilds it from (source, options)."""
    check_reference: Callable[[Any, Mapping[str, Any]], str | None] | None = None
    """Its check of a data row's reference answer, `fn(answer, meta) -> problem or None` (see `check_reference`)."""


_REGISTRY: dict[str, Callable[..., Any]] = {}
_BUILTIN_MODULES = ("rewards.math", "rewards.choice", "rewards.text", "rewards.format", "rewards.repetition",
                    "rewards.overlong", "rewards.prob", "rewards.reward_model", "rewards.acc")


def register_reward(name: str | None = None, *, batched: bool = False, sandbox: bool = True,
                    config: type | None = None,
                    check_reference: Callable[[Any, Mapping[str, Any]], str | None] | None = None,
                    ) -> Callable[[Callable], Callable]:
    """Decorator: mark a callable as a reward and, when `name` is given, register it under that name.

    batched: the callable takes a list of samples and returns a list. sandbox: run it in the sandbox's workers
    (the default; set False only for trusted in-process scorers). config: a dataclass whose fields are the reward's
    options; `get_reward(name, **options)` then calls `fn(sample, config=Config(**options))`.
    check_reference: `fn(answer, meta) -> problem or None`, how a data row's reference answer is checked before
    a run (the answer as the row gives it: a string, or a list of strings); None: any single answer, no list.
    """

    def deco(fn: Callable) -> Callable:
        fn.__reward__ = {"batched": batched, "sandbox": sandbox, "config": config,  # type: ignore[attr-defined]
                         "check_reference": check_reference}
        if name is not None:
            old = _REGISTRY.get(name)
            if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
                where = f"{old.__module__}.{old.__qualname__}"
                raise ValueError(f"a reward named {name!r} is already registered ({where})")
            _REGISTRY[name] = fn
        return fn

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def builtin_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_path(spec: str) -> Callable:
    try:
        return load_callable(spec)
    except ValueError as e:
        raise ValueError(f"reward path: {e}") from None


def _entry_point(name: str) -> Callable | None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def normalize_spec(spec: str) -> str:
    """The spec with a file path made absolute, so that a worker process in another directory finds it."""
    return absolute_spec(spec)


def _lookup(name: str) -> Any:
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _load_path(name)
    found = _entry_point(name)
    if found is None:
        raise KeyError(f"unknown reward {name!r}: not a built-in ({', '.join(builtin_names())}), not an entry "
                       f"point of the group {ENTRY_POINT_GROUP!r}, and not a 'module:function' path")
    return found


TRL_ARGS = ("prompts", "completions", "completion_ids")
"""The argument names of a TRL reward function, `f(prompts, completions, completion_ids, **kwargs) -> list`."""


def is_trl_style(obj: Any) -> bool:
    """A plain function that takes `completions` (TRL's reward signature) rather than one RewardInput."""
    if not inspect.isfunction(obj) or getattr(obj, "__reward__", None):
        return False
    params = list(inspect.signature(obj).parameters)
    return "completions" in params and params[0] in ("prompts", "completions")


def takes_trl_columns(spec: str) -> bool:
    """Whether the reward at `spec` has TRL's signature (then the trainer gives its rows the prompt and the
    completion ids, which it leaves out otherwise: they are large)."""
    if spec not in _TRL_SPECS:  # resolved once per spec: the trainer asks at every step (an entry point is slow)
        try:
            _TRL_SPECS[spec] = is_trl_style(_lookup(normalize_spec(spec)))
        except Exception:  # noqa: BLE001 - a spec that does not resolve fails where it is scored, with its message
            _TRL_SPECS[spec] = False
    return _TRL_SPECS[spec]


_TRL_SPECS: dict[str, bool] = {}


def trl_batch(fn: Callable, samples: list) -> dict[str, list]:
    """TRL's keyword arguments for a batch of RewardInputs: prompts (the prompt as the model saw it, when the
    trainer passed it), completions (the full completion text), completion_ids, answer (the reference), mode, and
    each key of the rows' `meta` (the data set's own fields) as a column; only those `fn` accepts unless it takes
    **kwargs."""
    keys = sorted({k for s in samples for k in s.meta} - {"prompt", "completion_ids"})
    columns = {"prompts": [s.meta.get("prompt") for s in samples], "completions": [s.completion for s in samples],
               "completion_ids": [s.meta.get("completion_ids") for s in samples],
               "answer": [s.reference for s in samples], "mode": [s.resolved_mode for s in samples]}
    for key in keys:
        columns.setdefault(key, [s.meta.get(key) for s in samples])
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return columns
    return {k: v for k, v in columns.items() if k in params}


def trl_reward(fn: Callable, options: Mapping[str, Any] | None = None) -> Callable:
    """A TRL reward function as this project's batched reward (`get_reward` wraps one found by its signature);
    `options` are passed as further keyword arguments."""

    @functools.wraps(fn)
    def batched(samples: list) -> list:
        return list(fn(**{**trl_batch(fn, list(samples)), **dict(options or {})}))

    batched.__reward__ = {"batched": True, "sandbox": True, "config": None, "check_reference": None}  # type: ignore
    return batched


def registered_names(spec: str) -> list[str]:
    """The names the reward at `spec` (a path or an entry point) registered itself under with
    `@register_reward("name")`, once its module is imported (importing it is what registers them)."""
    obj = _lookup(normalize_spec(spec))
    return [name for name, fn in _REGISTRY.items() if fn is obj and name != spec]


def get_reward(spec: str | Callable | RewardFn, **options: Any) -> RewardFn:
    """Resolve a reward: a built-in name, an entry-point name, a `module:function` or `file.py:function` path,
    or a callable. `options` are bound to it: a registered config's fields (`fn(sample, config=Config(**options))`),
    a class's constructor arguments, or a plugin function's keyword arguments."""
    if isinstance(spec, RewardFn):
        if options:
            raise ValueError("options cannot be added to an already resolved reward")
        return spec
    if isinstance(spec, str):
        name = normalize_spec(spec)
        obj = _lookup(name)
    elif callable(spec):
        name, obj = getattr(spec, "__qualname__", type(spec).__name__), spec
    else:
        raise TypeError(f"a reward spec is a name, a path or a callable, got {type(spec).__name__}")
    trl = is_trl_style(obj)
    if trl:  # TRL's signature: a batched reward over keyword columns, the options as more keywords
        obj = trl_reward(obj, options)
    info = dict(getattr(obj, "__reward__", None) or {})
    if trl:
        fn = obj
    elif inspect.isclass(obj):  # a small class: its constructor takes the options
        fn = obj(**options)
    elif options:
        config = info.get("config")
        fn = functools.partial(obj, config=config(**options)) if config else functools.partial(obj, **options)
    else:
        fn = obj
    call = fn.func if isinstance(fn, functools.partial) else fn
    if not (inspect.isfunction(call) or inspect.ismethod(call)):
        call = getattr(call, "__call__", call)
    return RewardFn(name=name, fn=fn, batched=bool(info.get("batched", False)),
                    is_async=inspect.iscoroutinefunction(call), sandbox=bool(info.get("sandbox", True)),
                    options=dict(options), source=name if isinstance(spec, str) else None,
                    check_reference=info.get("check_reference"))


def single_answer(answer: Any, name: str) -> str | None:
    """The check of a reward that declares none: one reference answer, not a list (only `exact` takes a list)."""
    if isinstance(answer, list):
        return f"a list of answers is only for reward 'exact', not {name!r}"
    return None


_CHECKS: dict[str, Callable[[Any, Mapping[str, Any]], str | None] | None] = {}


def check_reference(spec: str, answer: Any, meta: Mapping[str, Any] | None = None) -> str | None:
    """Why `answer` cannot be a data row's reference for the reward `spec` (a one-line problem), or None.

    The reward's declared check decides (`register_reward(check_reference=...)`); a reward that declares none
    takes any single answer (`single_answer`). A spec that does not resolve raises as `get_reward` does."""
    key = normalize_spec(spec)
    if key not in _CHECKS:  # resolved once per spec: an entry-point lookup is slow, and this runs per row
        _CHECKS[key] = get_reward(key).check_reference
    check = _CHECKS[key]
    return check(answer, dict(meta or {})) if check is not None else single_answer(answer, spec)


def check_score(value: Any) -> float | None:
    """A reward's return value as a float or None; raises for anything else (a string, NaN, infinity)."""
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d tensor or array
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"reward returned {type(value).__name__}, expected a float or None")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"reward returned a non-finite score ({out})")
    return out

