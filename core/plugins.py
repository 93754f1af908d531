"""A user's function named by a path: `module:function` (an importable module) or `path/to/file.py:function` (a
file, loaded once per process under a name of its own). Reward plugins (`rewards.api`) and the RL math's registries
(`rl.algos.registry`: advantage estimators, policy losses, loss aggregations, KL estimators) resolve specs with it.
Only specs the user's config or code names are loaded: never a name taken from data or model output."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any


def is_path_spec(spec: str) -> bool:
    """Whether `spec` names a function by path (`module:function` or `file.py:function`)."""
    module, sep, attr = spec.rpartition(":")
    return bool(sep and module and attr)


def absolute_spec(spec: str) -> str:
    """The spec with a file path made absolute (a worker process in another directory finds it)."""
    module, sep, attr = spec.rpartition(":")
    if sep and (module.endswith(".py") or "/" in module or os.sep in module):
        return os.path.abspath(module) + ":" + attr
    return spec


def load_callable(spec: str) -> Any:
    """The object `spec` names (see the module docstring); ValueError for a malformed spec or a missing file."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise ValueError(f"expected 'module:function' or 'file.py:function', got {spec!r}")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        path = os.path.abspath(module_part)
        if not os.path.isfile(path):
            raise ValueError(f"file not found: {module_part}")
        name = "_plugin_" + hashlib.sha1(path.encode()).hexdigest()[:16]
        module = sys.modules.get(name)
        if module is None:
            file_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(file_spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            try:
                file_spec.loader.exec_module(module)  # type: ignore[union-attr]
            except BaseException:
                del sys.modules[name]
                raise
    else:
        module = importlib.import_module(module_part)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
