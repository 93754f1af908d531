"""YAML files plus dotted `a.b=value` overrides -> a checked `TrainConfig`; and the resolved tree back to YAML.

Validation is pydantic's (the constraints are declared on the fields in `sections.py`); this module only turns its
errors into one line per problem that names the key: `learner.lr: Input should be greater than 0 (got -1)`,
`rollout.nn: unknown key (known here: auto, cpus_per_worker, ...)`. The resolved tree is saved as YAML in the run
directory and loads back to the same config.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import TypeAdapter, ValidationError

from .sections import TrainConfig


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's scalars: `1e-4` is a float (YAML 1.1 wants `1.0e-4` and gives the
    string "1e-4" otherwise, which a typed field converts but a free-form mapping such as a reward part's options
    keeps as a string), and only true/false are booleans (YAML 1.1 also reads on/off/yes/no as booleans, so
    `algo.kl: off` or `run.async_mode: off` would be False)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


MAX_VALUES = 100_000
"""The most values (scalars, lists and mappings, each alias counted at every use) a config may expand to: YAML
aliases can make a short file expand exponentially (the "billion laughs"); a real config has a few hundred."""


def read_yaml(text: str) -> Any:
    tree = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    _bounded(tree)
    return tree


def _bounded(tree: Any) -> None:
    """A yaml.YAMLError when `tree`, with every alias expanded, holds more than MAX_VALUES values."""
    count, stack = 0, [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise yaml.YAMLError(f"expands to more than {MAX_VALUES:,} values (aliases of aliases?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def set_dotted(tree: dict, dotted: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML: numbers, booleans, lists) to a nested dict."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r}: expected key=value")
    key, raw = dotted.split("=", 1)
    try:
        value = read_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())  # one line: PyYAML's message spans several, with a caret
        raise ConfigError(f"override {key.strip()}={raw}: the value is not valid YAML ({problem}); quote a string "
                          "that holds YAML punctuation") from None
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def _section_type(cls: Any, loc: Sequence[Any]) -> Any:
    for part in loc:
        fields = getattr(cls, "__pydantic_fields__", None) or {}
        if part not in fields:
            return None
        cls = fields[part].annotation
    return cls


def _key(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _elsewhere(root: type, name: str) -> list[str]:
    """Sections of the tree that have a field `name` (a key given in the wrong section)."""
    fields = getattr(root, "__pydantic_fields__", {})
    return [f"{section}.{name}" for section, info in fields.items()
            if name in getattr(info.annotation, "__dataclass_fields__", {})]


def _messages(error: ValidationError, root: type) -> list[str]:
    out = []
    sections = tuple(f"{name}." for name in getattr(root, "__pydantic_fields__", {}))
    for e in error.errors():
        key = _key(e["loc"])
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            hint = _elsewhere(root, str(e["loc"][-1])) if len(e["loc"]) == 2 else []
            known = sorted(getattr(_section_type(root, e["loc"][:-1]), "__dataclass_fields__", {}))
            out.append(f"{key}: unknown key" + (f"; did you mean {' or '.join(hint)}?" if hint else
                                                (f" (known here: {', '.join(known)})" if known else "")))
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "value_error" and msg.startswith(sections):
            out.append(msg)  # a section's own check, which names its keys
        elif e["type"] == "value_error":
            out.append(f"{key}: {msg}")
        elif e["type"] in ("dataclass_type", "dataclass_args_type", "model_type"):
            out.append(f"{key}: expected a mapping, got {e.get('input')!r}")
        else:
            got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
            out.append(f"{key}: {msg}{got}")
    return out


def build(tree: dict, source: str = "config") -> TrainConfig:
    """A TrainConfig from a nested mapping; ConfigError naming every bad key."""
    try:
        return TypeAdapter(TrainConfig).validate_python(tree)
    except ValidationError as e:
        lines = _messages(e, TrainConfig)
        raise ConfigError(f"{source}: " + ("\n  ".join(lines) if lines else str(e))) from None


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """`path` (YAML; None: the embedded defaults) with dotted overrides applied, checked.

    The overrides apply to the resolved tree (the file with every default filled in), so `data.seed=3` keeps the
    rest of the data section and `reward.combine.weights.acc=2` the other weights; the file itself replaces what it
    names (its `reward.combine.parts` are the parts)."""
    tree: dict = {}
    source = str(path) if path is not None else "config"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    if not overrides:
        return build(tree, source)
    try:
        resolved = to_dict(build(tree, source))
    except ConfigError:  # the file alone does not hold: the overrides may be what mends it
        resolved = tree
    for item in overrides:
        set_dotted(resolved, item)
    return build(resolved, source)


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def save(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def dump(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
