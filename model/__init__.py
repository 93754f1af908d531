"""MiniCPM-V 4.5 for training: the network (`MiniCPMV`), its configuration, its processor and checkpoints.

The names below load on first use (PEP 562), so that `model.targets` and other torch-free modules import without
torch (rl.config reads them on machines that only write configs)."""

import importlib

_LAZY = {"CheckpointError": ".checkpoint", "MiniCPMV": ".modeling", "MiniCPMVOutput": ".modeling",
         "MiniCPMVConfig": ".remote_code.configuration_minicpm"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
