"""Training data: rows checked against a schema, the resumable prompt stream, and the demo data sets."""

from .prompts import PromptDataset
from .rows import Row, RowError, load_rows

__all__ = ["PromptDataset", "Row", "RowError", "load_rows"]
