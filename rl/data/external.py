"""Data sets in other shapes: `datasets` folders (`save_to_disk`), hub ids, Python data sets, other column names.

    data:
      path: data/geometry3k              # a save_to_disk folder, or a hub id (owner/name) with data.split
      split: train
      columns: {question: problem, answer: solution}   # this schema's field: the data set's column
      source_column: data_source         # with reward_by_source: a reward per source, for mixed sets
      reward_by_source: {geometry3k: math, scienceqa: choice}

What needs no code: an `image` column (one image) or an `images` list, as `datasets` Image features, PIL images,
bytes or paths; a `choices` list, which becomes lettered options after the question (`A. ...`) and
`meta["options"]` for the `choice` verifier (an answer that is an option's index becomes its letter); answers as
strings or numbers. Columns the schema does not know are left out (a data set's own ids, sources, metadata...);
map one to `meta` to hand it to the rewards. A column named in `data.columns` that the data set lacks is an error
naming the key and the columns present.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import DataError
from .schema import FIELDS, RowError

DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
SHAPED = {"image", "choices"}
"""Columns shaped into schema fields (`images`, options in the question and `meta`), besides FIELDS."""


PYTHON_DATA = "<python data>"
"""What a run started with rows from Python records as data.path (`Trainer(cfg, data=...)`): they are not on disk."""
ORIGIN_FILE = "data_origin.json"
"""Beside config.yaml in such a run: where the rows came from, as far as they say (`origin`)."""


def origin(data: Any) -> dict:
    """What rows from Python say of where they came from: their type and size; for a `datasets.Dataset` its
    fingerprint, info (builder, config, version), split and the Arrow files behind it, and the `save_to_disk` folder
    that holds them, when one does (what `rl-eval --data` takes)."""
    out: dict[str, Any] = {"type": f"{type(data).__module__}.{type(data).__qualname__}"}
    for key in ("num_rows", "column_names"):
        if getattr(data, key, None) is not None:
            out[key] = getattr(data, key)
    if getattr(data, "_fingerprint", None):
        out["fingerprint"] = data._fingerprint
    if getattr(data, "split", None) is not None:
        out["split"] = str(data.split)
    info = getattr(data, "info", None)
    if info is not None:
        out["info"] = {k: str(v) for k in ("builder_name", "dataset_name", "config_name", "version", "homepage")
                       if (v := getattr(info, k, None))}
    files = [c["filename"] for c in getattr(data, "cache_files", None) or []]
    if files:
        out["files"] = files
        folders = {str(Path(f).parent) for f in files}
        if len(folders) == 1 and hf_kind(next(iter(folders))) == "disk":
            out["folder"] = next(iter(folders))
    return out


def origin_hint(found: dict) -> str:
    """The sentence that tells a user what to pass to evaluate on the rows of `found` (an `origin`)."""
    what = found.get("type", "rows")
    facts = [f"{found['num_rows']} rows" if "num_rows" in found else "",
             f"fingerprint {found['fingerprint']}" if "fingerprint" in found else "",
             ", ".join(f"{k} {v}" for k, v in found.get("info", {}).items())]
    said = f"{what} ({'; '.join(f for f in facts if f)})" if any(facts) else what
    if "folder" in found:
        return f"{said}, saved in {found['folder']}: pass --data {found['folder']}"
    if "files" in found:
        return (f"{said}, from the Arrow files {', '.join(found['files'][:3])}: pass --data with the same data set "
                "(its save_to_disk folder or hub id), or run_eval(..., data=dataset) from Python")
    return f"{said}, made in memory: pass --data with the same rows, or run_eval(..., data=rows) from Python"


def python_split(data: Any, split: str | None) -> Any:
    """Rows from Python with `data.split` applied: a `DatasetDict`'s split (`split`; else its only one, else
    "train"), as for a folder; a single `Dataset` or list is one split already, so a `data.split` is an error
    unless it names the data set's own split."""
    import datasets

    if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return one_split(data, split, "the data set given", DataError)
    own = getattr(data, "split", None)
    if split is not None and (own is None or str(own) != split):
        said = f"its {str(own)!r} split" if own is not None else "one set of rows, of no named split"
        raise DataError(f"data.split={split!r}: the data set given is {said}; pass the split you want (or a "
                        "DatasetDict), or leave data.split unset")
    return data


def hf_kind(path: str) -> str | None:
    """"disk" for a `save_to_disk` folder, "hub" for an `owner/name` id that is no local path, else None."""
    p = Path(path)
    if p.is_dir() and any((p / marker).is_file() for marker in DISK_MARKERS):
        return "disk"
    if not p.exists() and p.suffix not in (".jsonl", ".parquet") and HUB_ID.fullmatch(path):
        return "hub"
    return None


def open_hf(path: str, kind: str, split: str | None):
    """The `datasets` data set at `path` (one split), images left undecoded; errors name the path and the split."""
    import datasets

    if kind == "disk":
        try:
            loaded = datasets.load_from_disk(path)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"data.path={path}: cannot load this `datasets` folder ({type(e).__name__}: {e})") from e
    else:
        try:
            loaded = datasets.load_dataset(path, split=split, streaming=True) if split else \
                datasets.load_dataset(path, streaming=True)
        except Exception as e:  # noqa: BLE001 - offline, unknown id, gated...
            raise ValueError(f"data.path={path}: cannot load the Hugging Face dataset {path!r} "
                             f"({type(e).__name__}: {e}). Without internet only data sets already in the local "
                             "`datasets` cache load: fetch it on a connected machine (or save_to_disk it and give "
                             "that folder)") from e
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = one_split(loaded, split, path, ValueError)
    return undecoded(loaded)


def one_split(splits: Any, split: str | None, where: str, error: type[Exception]) -> Any:
    """The split `split` of a `DatasetDict` (None: its only split, else "train"); `error` naming `where` and the
    splits it has otherwise."""
    names = list(splits)
    name = split or (names[0] if len(names) == 1 else "train")
    if name not in names:
        raise error(f"data.split={split!r}: {where} has the splits {', '.join(names)}")
    return splits[name]


def undecoded(dataset):
    """A `datasets` data set whose Image features yield {"bytes", "path"} cells rather than decoded images."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        return dataset.decode(False)
    for name, feature in (dataset.features or {}).items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):  # a list of images
            dataset = dataset.cast_column(name, datasets.Sequence(datasets.Image(decode=False)))
    return dataset


def column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    return list(names) if names else None


def check_columns(columns: dict[str, str], present: list[str] | None, source: str) -> None:
    """A DataError for a column `data.columns` names that the data set lacks, listing the columns it has."""
    if present is None:
        return
    for field_name, column in columns.items():
        if column not in present:
            raise DataError(f"data.columns.{field_name}: column {column!r} is not in {source} (its columns: "
                             f"{', '.join(present)})")


def numbered(rows: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    return enumerate(rows, start=1)


def shape_row(raw: Any, columns: dict[str, str], source: str, number: int,
              reward_by_source: dict[str, str] | None = None, source_column: str | None = None) -> Any:
    """One external row as this schema's row (module docstring); other values pass through for parse_row to judge."""
    if not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for field_name in (*FIELDS, *SHAPED):
        column = columns.get(field_name, field_name)
        if column in raw:
            out[field_name] = raw[column]
        elif field_name in columns:
            raise RowError(source, number, column, f"missing: data.columns.{field_name} names this column, the "
                                                    f"row has {', '.join(map(str, raw))}")
    if "image" in out:
        image = out.pop("image")
        if image is not None:
            out["images"] = [image] + list(out.get("images") or [])
    if "images" in out and out["images"] is not None and not isinstance(out["images"], (list, tuple)):
        out["images"] = [out["images"]]
    choices = out.pop("choices", None)
    if choices is not None:
        _add_choices(out, list(choices), source, number)
    if reward_by_source and source_column:
        if source_column not in raw:
            raise RowError(source, number, source_column, "missing: data.source_column names this column")
        reward = reward_by_source.get(str(raw[source_column]))
        if reward is None:
            raise RowError(source, number, source_column, f"{raw[source_column]!r} is not a key of "
                                                          f"data.reward_by_source ({', '.join(reward_by_source)})")
        out["reward"] = reward
    return out


def _add_choices(out: dict, choices: list, source: str, number: int) -> None:
    """Options lettered after the question, `meta["options"]`, and an index answer turned into its letter."""
    if len(choices) > len(string.ascii_uppercase):
        raise RowError(source, number, "choices", f"{len(choices)} options: at most 26")
    letters = string.ascii_uppercase
    listing = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
    if isinstance(out.get("question"), str):
        out["question"] = f"{out['question']}\n{listing}"
    else:
        raise RowError(source, number, "choices", "options need a `question` column to be listed after")
    meta = dict(out.get("meta") or {})
    meta["options"] = [str(c) for c in choices]
    out["meta"] = meta
    answer = out.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise RowError(source, number, "answer", f"option index {answer} with {len(choices)} choices")
        out["answer"] = letters[answer]
    out.setdefault("reward", "choice")
