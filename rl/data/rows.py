"""Training rows: JSONL or Parquet, checked against a schema; a bad row is named by file, row and field.

A row:  {"id": ..., "question": "..." | "messages": [...], "images": [path | file:// URL | bytes, ...],
         "answer": "...", "reward": "number", "mode": "short" | "long" | "auto" (optional), "meta": {...}}
With `question`, the images come first, then the text (MiniCPM-V's own layout). Relative image paths are resolved
against the data file's folder. Only local files: any URL scheme but file:// is refused.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from model.processor import InputError, load_image

MODES = ("short", "long", "auto")
FIELDS = {"id", "question", "messages", "images", "answer", "reward", "mode", "meta"}


class RowError(ValueError):
    """FILE: row N: field 'X': problem."""


@dataclass
class Row:
    id: str
    messages: list[dict]
    answer: Any
    reward: str
    mode: str | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""
    line: int = 0


def _image(value: Any, base: Path, where: str) -> Any:
    if isinstance(value, (bytes, bytearray)):
        image = value
    elif isinstance(value, dict) and "bytes" in value:  # Parquet / datasets Image feature
        image = value["bytes"] if value["bytes"] is not None else value.get("path")
    elif isinstance(value, str):
        url = urlparse(value)
        if url.scheme == "file":
            image = url.path
        elif url.scheme and len(url.scheme) > 1:
            raise RowError(f"{where}: only local files (a path or file:// URL), got {value!r}")
        else:
            image = value
        image = str(Path(image) if Path(image).is_absolute() else base / image)
    else:
        raise RowError(f"{where}: expected a path, a file:// URL or bytes, got {type(value).__name__}")
    try:
        load_image(image, where)  # decodable now, not halfway through a run
    except InputError as e:
        raise RowError(str(e)) from e
    return image


def parse_row(raw: Any, source: str, line: int, base: Path, default_reward: str, known_rewards) -> Row:
    where = f"{source}: row {line}"
    if not isinstance(raw, dict):
        raise RowError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise RowError(f"{where}: field {unknown[0]!r}: unknown field (known: {', '.join(sorted(FIELDS))})")
    if ("question" in raw) == ("messages" in raw):
        raise RowError(f"{where}: field 'question'/'messages': give exactly one of them")
    if raw.get("answer") is None:
        raise RowError(f"{where}: field 'answer': missing")
    mode = raw.get("mode")
    if mode is not None and mode not in MODES:
        raise RowError(f"{where}: field 'mode': {mode!r} is not one of {MODES}")
    reward = raw.get("reward", default_reward)
    if not isinstance(reward, str) or reward not in known_rewards:
        raise RowError(f"{where}: field 'reward': {reward!r} is not a verifier rows may name ({sorted(known_rewards)})")
    images = raw.get("images") or []
    if not isinstance(images, list):
        raise RowError(f"{where}: field 'images': expected a list")
    images = [_image(v, base, f"{where}: field 'images[{k}]'") for k, v in enumerate(images)]
    if "question" in raw:
        if not isinstance(raw["question"], str) or not raw["question"].strip():
            raise RowError(f"{where}: field 'question': expected a non-empty string")
        content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": raw["question"]}]
        messages = [{"role": "user", "content": content if images else raw["question"]}]
    else:
        messages = raw["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise RowError(f"{where}: field 'messages': expected a list of {{role, content}} objects")
        if images:
            raise RowError(f"{where}: field 'images': with 'messages', put images in the content parts")
        for i, m in enumerate(messages):
            for j, part in enumerate(m.get("content") if isinstance(m.get("content"), list) else []):
                if part.get("type") == "image":
                    part["image"] = _image(part.get("image"), base, f"{where}: field 'messages[{i}].content[{j}]'")
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise RowError(f"{where}: field 'meta': expected an object")
    return Row(id=str(raw.get("id", f"{Path(source).name}:{line}")), messages=messages, answer=raw["answer"],
               reward=reward, mode=mode, meta=meta, source=source, line=line)


def read_raw(path: Path) -> list[tuple[int, Any]]:
    """(row number, raw row or the JSON error) of a JSONL or Parquet file; row numbers start at 1."""
    if path.suffix == ".parquet":
        from datasets import Dataset

        return list(enumerate(Dataset.from_parquet(str(path)).to_list(), start=1))
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((line_no, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((line_no, RowError(f"{path}: row {line_no}: not valid JSON ({e.msg} at column {e.colno})")))
    return out


def load_rows(path: str | Path, on_bad_row: str = "skip", default_reward: str = "math",
              known_rewards=("math", "choice", "number", "exact", "regex", "prob")) -> tuple[list[Row], list[str]]:
    """Valid rows and the errors of the bad ones. on_bad_row="fail" raises on the first bad row."""
    if on_bad_row not in ("skip", "fail"):
        raise ValueError(f"on_bad_row={on_bad_row!r}: expected skip or fail")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    rows, errors = [], []
    for line, raw in read_raw(path):
        try:
            if isinstance(raw, RowError):
                raise raw
            rows.append(parse_row(raw, str(path), line, path.parent, default_reward, set(known_rewards)))
        except RowError as e:
            if on_bad_row == "fail":
                raise
            errors.append(str(e))
    return rows, errors
