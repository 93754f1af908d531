"""Training data: rows checked against a schema (`schema`), loading and the resumable prompt stream (`loader`),
and demo data sets with verifiable answers (`demo`, imported on first use)."""

from ..config import DataConfig
from .loader import LoadReport, PromptDataset, load_rows, to_request
from .schema import Row, RowError, RowSchema, parse_row

_DEMO = ("DEFAULT_SETS", "DEMO_SETS", "make_demo_data", "write_demo")

__all__ = ["DataConfig", "LoadReport", "PromptDataset", "Row", "RowError", "RowSchema", "load_rows", "parse_row",
           "to_request", *_DEMO]


def __getattr__(name: str):
    if name in _DEMO:  # lazily: `python -m rl.data.demo` must not find the module imported already
        from . import demo

        return getattr(demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
