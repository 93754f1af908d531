"""Loading training rows (JSONL, Parquet; `datasets` folders, hub ids and Python data sets through
`rl/data/external.py`) and the run's resumable prompt stream.

    cfg = DataConfig(path="data/train.jsonl", on_bad_row="skip")  # rl.config.DataConfig
    data = PromptDataset.from_config(cfg)          # every row checked (rl/data/schema.py); bad ones counted
    print(data.report.summary())                   # "train.jsonl: 1000 rows read, 998 kept, 2 bad: ..."
    data = PromptDataset.from_config(cfg, processor=Processor.from_pretrained(ckpt))  # with data.max_prompt_tokens
    rows = data.take(8)                            # the next 8 rows of seeded, shuffled epochs
    requests = [to_request(r, mode="long", n=8) for r in rows]
    state = data.state_dict()                      # epoch and index: a resumed run continues exactly there

JSONL is read line by line here, so that a malformed line is a bad row named by its line number (rather than an
error of the whole file); Parquet is read through `datasets` (streamed, images not decoded). A bad row is skipped
and counted (`on_bad_row: skip`) or stops the load (`fail`): a malformed row, an image that does not decode (not an
image, truncated, zero size, over `data.max_image_pixels`: at load, or when first drawn with `check_images: lazy`),
or a prompt over `data.max_prompt_tokens` (counted with the model's processor, which is then needed at load).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from core.modes import FIXED_MODES
from rollouts.types import RolloutRequest

from ..config import DataConfig
from ..errors import DataError

from .schema import DEFAULT_MAX_IMAGE_PIXELS, MODES, Row, RowError, SchemaOptions, copy_messages, parse_row

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".parquet")


def schema_options(cfg: DataConfig) -> SchemaOptions:
    return SchemaOptions(default_reward=cfg.default_reward, allowed_rewards=tuple(cfg.allowed_rewards),
                         check_images=cfg.check_images,
                         max_image_pixels=cfg.max_image_pixels, video_sampling=cfg.video_sampling(),
                         system_prompt=cfg.system_prompt, prompt_template=cfg.prompt_template)


@dataclass
class LoadReport:
    """What a load read, kept and left out; nothing is lost silently."""

    files: list[str] = field(default_factory=list)
    """The files read, in order."""
    read: int = 0
    """Rows read (JSONL: non-blank lines)."""
    kept: int = 0
    """Valid rows kept."""
    bad: int = 0
    """Rows left out (all of them are counted)."""
    errors: list[str] = field(default_factory=list)
    """The first `max_errors` error messages: `FILE: row N: field 'X': problem`."""
    max_errors: int = 20

    def add_error(self, error: RowError | str) -> None:
        self.bad += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(str(error))

    def summary(self) -> str:
        text = f"{', '.join(self.files)}: {self.read} rows read, {self.kept} kept, {self.bad} bad"
        if self.errors:
            more = f" (+{self.bad - len(self.errors)} more)" if self.bad > len(self.errors) else ""
            text += ": " + "; ".join(self.errors[:3]) + ("; ..." if len(self.errors) > 3 else "") + more
        return text


def data_files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    """The data files a path names: a file, the .jsonl/.parquet files of a folder (sorted), or a list of these."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: no .jsonl or .parquet files in this folder")
            out.extend(found)
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise ValueError(f"{p}: unknown data format {p.suffix!r} (expected .jsonl or .parquet)")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: data file not found")
    return out


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-blank line; a malformed line yields a RowError instead of the object."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, RowError(str(path), number, None, f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                yield number, RowError(str(path), number, None, f"not valid JSON ({e.msg} at column {e.colno})")
            except RecursionError:
                yield number, RowError(str(path), number, None, "nested too deeply to read (JSON arrays or objects "
                                                                "inside each other beyond Python's recursion limit)")


def read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row dict) of a Parquet file, streamed through `datasets`; images stay undecoded."""
    import datasets
    from datasets.utils import disable_progress_bars, enable_progress_bars, are_progress_bars_disabled

    quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        try:
            stream = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
            stream = stream.decode(False)
            rows = iter(stream)
            first = next(rows, None)
        except Exception as e:  # noqa: BLE001 - an unreadable file fails whatever on_bad_row says
            raise RowError(str(path), None, None, f"cannot read as Parquet ({type(e).__name__}: {e})") from None
        if first is None:
            return
        yield 1, first
        for number, row in enumerate(rows, start=2):
            yield number, row
    finally:
        if not quiet:
            enable_progress_bars()


def prompt_tokens(row: Row, processor: Any, mode: str | None = None,
                  max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, str]:
    """(tokens, mode): the length of the row's prompt, text and image tokens, as `processor` (a
    model.processor.Processor) builds it for `mode`, else the row's own mode, else the longer of short and long.

    Exactly `len(processor(messages, mode).input_ids)`, without the pixel work for images: they are read for their
    size (the header) alone, and each image pattern is expanded into the placeholder tokens the slicing gives that
    size. A row with a video is processed in full (its frames are sampled and packed).
    """
    fixed = mode if mode is not None else row.mode
    modes = [fixed] if fixed is not None else FIXED_MODES
    if row.videos():
        return max((len(processor(copy_messages(row.messages), m).input_ids), m) for m in modes)
    sizes = row.image_sizes(max_pixels)
    longest = (-1, "")
    for m in modes:
        text = processor.render(copy_messages(row.messages), m)
        expanded = processor.hf.expand_placeholders(text, sizes)
        longest = max(longest, (len(processor.tokenizer.encode(expanded, add_special_tokens=False)), m))
    return longest


def check_prompt_length(row: Row, processor: Any, max_tokens: int,
                        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """A RowError when the row's prompt (`prompt_tokens`) is over `max_tokens` or cannot be built."""
    try:
        tokens, mode = prompt_tokens(row, processor, max_pixels=max_pixels)
    except RowError:
        raise
    except Exception as e:  # noqa: BLE001 - a prompt the processor cannot build is the row's problem
        raise RowError(row.source, row.row, None, f"cannot build the prompt ({type(e).__name__}: {e})") from None
    if tokens > max_tokens:
        videos = row.videos()
        raise RowError(row.source, row.row, videos[0][0] if videos else None,
                       f"prompt of {tokens} tokens > data.max_prompt_tokens={max_tokens} ({mode} mode, "
                       + ("text, image and video tokens; fewer frames: data.video_fps, data.video_max_frames)"
                          if videos else "text and image tokens)"))


def sources(cfg: DataConfig, data: Any = None) -> Iterator[tuple[str, Path, Iterator[tuple[int, Any]], bool, bool]]:
    """(name, base folder, numbered raw rows, drop_none, external) per source: `data` (a `datasets` data set or any
    iterable of row dicts, from Python) when given, else each path of `cfg.path`: a `datasets` folder or hub id
    (rl/data/external.py), or the JSONL / Parquet files it names."""
    from . import external

    if data is not None:
        data = external.python_split(data, cfg.split)
        data = external.undecoded(data) if hasattr(data, "features") else data
        external.check_columns(cfg.columns, external.column_names(data), "the data set given")
        yield "python data", Path.cwd(), external.numbered(data), True, True
        return
    for path in [cfg.path] if isinstance(cfg.path, (str, Path)) else list(cfg.path):
        kind = external.hf_kind(str(path))
        if kind is not None:
            dataset = external.open_hf(str(path), kind, cfg.split)
            external.check_columns(cfg.columns, external.column_names(dataset), str(path))
            yield str(path), Path(path) if kind == "disk" else Path.cwd(), external.numbered(dataset), True, True
            continue
        for file in data_files(path):
            reader = read_parquet(file) if file.suffix == ".parquet" else read_jsonl(file)
            yield str(file), file.parent, reader, file.suffix == ".parquet", False


def read_row(raw: Any, cfg: DataConfig, options: SchemaOptions, source: str, number: int, base: Path,
             external: bool) -> Row:
    """One raw row (or the RowError its reader found) shaped by `data.columns` / sources and checked: a Row, or a
    RowError naming the file, the row and the field."""
    from .external import shape_row

    if isinstance(raw, RowError):
        raise raw
    if cfg.columns or cfg.reward_by_source or external:
        raw = shape_row(raw, cfg.columns, source, number, cfg.reward_by_source, cfg.source_column)
    return parse_row(raw, source, number, base, options)


def preview(cfg: DataConfig, rows: int = 8) -> list[str]:
    """What `rl-train --check` finds in the first `rows` rows of each source, read as the run reads them (the column
    mapping, sources, rewards and the lists a row's verifier must be in; not the prompt-token count, which needs the
    model): one line per problem. A source that does not open, or a mapping that names a column it lacks, is a
    problem; so is a source whose every previewed row is bad, or any bad row with `data.on_bad_row=fail`."""
    import itertools

    options, problems = schema_options(cfg), []
    try:
        for source, base, reader, drop_none, external in sources(cfg):
            options.drop_none = drop_none
            errors, good = [], 0
            for number, raw in itertools.islice(reader, rows):
                try:
                    read_row(raw, cfg, options, source, number, base, external)
                    good += 1
                except RowError as e:
                    errors.append(str(e))
            if errors and (cfg.on_bad_row == "fail" or not good):
                problems.append(errors[0] if cfg.on_bad_row == "fail" else
                                f"the first {len(errors)} rows of {source} are all bad; the first: {errors[0]}")
    except (DataError, ValueError, OSError) as e:
        problems.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return problems


def load_rows(cfg: DataConfig | str | Path | Sequence[str | Path], processor: Any = None, data: Any = None,
              **overrides: Any) -> tuple[list[Row], LoadReport]:
    """The valid rows of the data and the load report; `on_bad_row="fail"` raises the first RowError.

    `cfg` is a DataConfig, or the path(s) with DataConfig fields as keyword arguments. `processor` (a
    model.processor.Processor) counts prompt tokens; it is needed when `max_prompt_tokens` is set, unused otherwise.
    `data`: rows from Python instead of `cfg.path` (a `datasets.Dataset`, or any iterable of row dicts).
    """
    if not isinstance(cfg, DataConfig):
        cfg = DataConfig(path=str(cfg) if isinstance(cfg, (str, Path)) else [str(p) for p in cfg], **overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    if cfg.max_prompt_tokens is not None and processor is None:
        raise ValueError(f"data.max_prompt_tokens={cfg.max_prompt_tokens}: counting prompt tokens needs the model's "
                         "processor: PromptDataset.from_config(cfg, processor=Processor.from_pretrained(checkpoint)) "
                         "(model.processor.Processor)")
    options = schema_options(cfg)
    report = LoadReport(max_errors=cfg.max_errors)
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for source, base, reader, drop_none, external in sources(cfg, data):
        report.files.append(source)
        options.drop_none = drop_none
        for number, raw in reader:
            report.read += 1
            try:
                row = read_row(raw, cfg, options, source, number, base, external)
                if row.id in seen:
                    raise RowError(source, number, "id", f"{row.id!r} is already the id of {seen[row.id]}")
                if cfg.max_prompt_tokens is not None:
                    check_prompt_length(row, processor, cfg.max_prompt_tokens, cfg.max_image_pixels)
            except RowError as e:
                if cfg.on_bad_row == "fail":
                    raise
                report.add_error(e)
                continue
            seen[row.id] = row.where
            rows.append(row)
            if cfg.max_rows and len(rows) >= cfg.max_rows:
                break
        if cfg.max_rows and len(rows) >= cfg.max_rows:
            break
    report.kept = len(rows)
    return rows, report


def to_request(row: Row, mode: str | None = None, n: int = 8, request_id: str | None = None) -> RolloutRequest:
    """The rollout request of a row: `mode` if given, else the row's own mode, else "auto".

    meta: answer (the reference), reward (the verifier), reward_meta (the row's meta, for the reward), id, row,
    source. The messages are a fresh copy (image paths and bytes are shared).
    """
    mode = mode if mode is not None else (row.mode or "auto")
    if mode not in MODES:
        raise ValueError(f"{row.where}: mode={mode!r}, expected one of {MODES}")
    meta = {"answer": row.answer, "reward": row.reward, "reward_meta": dict(row.meta), "id": row.id,
            "row": row.row, "source": row.source}
    return RolloutRequest(request_id=request_id if request_id is not None else row.id,
                          messages=copy_messages(row.messages), mode=mode, n=n, meta=meta)


class PromptDataset:
    """The prompt stream of a run: seeded shuffled epochs over the valid rows, resumable, as rollout requests.

    `take(k)` returns the next k rows, crossing epoch boundaries; `state_dict()` / `load_state_dict()` save and
    restore the position (epoch, index), so a resumed run draws exactly the rows the uninterrupted run would have.
    """

    def __init__(self, rows: list[Row], report: LoadReport | None = None, shuffle: bool = True, seed: int = 0,
                 eval_holdout: int = 0, on_bad_row: str = "skip",
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
        if len(rows) <= eval_holdout:
            summary = f" ({report.summary()})" if report else ""
            raise DataError(f"{len(rows)} valid rows: not enough to train on after holding out {eval_holdout} "
                             f"for evaluation{summary}")
        self.report = report or LoadReport(read=len(rows), kept=len(rows))
        self.shuffle, self.seed, self.on_bad_row = shuffle, seed, on_bad_row
        self.max_image_pixels = max_image_pixels  # the limit of images decoded when first drawn (lazy check)
        held = set(random.Random(seed).sample(range(len(rows)), eval_holdout) if shuffle else range(eval_holdout))
        self.eval = [r for i, r in enumerate(rows) if i in held]
        self.rows = [r for i, r in enumerate(rows) if i not in held]
        self.epoch, self.index = 0, 0
        self._order_cache: tuple[int, list[int]] | None = None
        self._checked: set[int] = set()
        self._bad: dict[int, str] = {}  # rows found bad when drawn (lazy image check) -> their error

    @classmethod
    def from_config(cls, cfg: Any, seed: int | None = None, eval_holdout: int = 0,
                    processor: Any = None, data: Any = None) -> "PromptDataset":
        """Load `cfg.path` (a DataConfig, or any object with its fields); generate the demo set there if asked.

        `processor` (model.processor.Processor of the policy checkpoint) counts prompt tokens for
        `cfg.max_prompt_tokens`; needed when that is set, unused otherwise."""
        if not isinstance(cfg, DataConfig):
            known = DataConfig.__dataclass_fields__
            cfg = DataConfig(**{k: getattr(cfg, k) for k in known if hasattr(cfg, k)})  # checked like rl-train's
        seed = (cfg.seed if cfg.seed is not None else 0) if seed is None else seed
        path = Path(cfg.path) if isinstance(cfg.path, (str, Path)) else None
        if data is None and path is not None and cfg.demo and not path.exists():
            from .demo import write_demo

            write_demo(cfg.demo, path, rows=cfg.demo_rows, seed=seed)
        rows, report = load_rows(cfg, processor=processor, data=data)
        for message in report.errors[:5]:
            log.warning("bad row skipped: %s", message)
        if report.bad:
            log.warning("%s", report.summary())
        return cls(rows, report, shuffle=cfg.shuffle, seed=seed, eval_holdout=eval_holdout,
                   on_bad_row=cfg.on_bad_row, max_image_pixels=cfg.max_image_pixels)

    # ---- counts ----
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def bad_rows(self) -> int:
        """Rows left out: at load, and those whose images failed when first drawn (lazy check)."""
        return self.report.bad + len(self._bad)

    @property
    def errors(self) -> list[str]:
        """The first error messages (load, then draw), `FILE: row N: field 'X': problem`."""
        return self.report.errors + list(self._bad.values())[: max(0, self.report.max_errors - len(self.report.errors))]

    # ---- order ----
    def order(self, epoch: int) -> list[int]:
        """The row indices of an epoch, in draw order (seeded by `seed` and the epoch)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = list(range(len(self.rows)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _usable(self, i: int) -> bool:
        if i in self._bad:
            return False
        if i not in self._checked:
            try:
                self.rows[i].check_images(self.max_image_pixels)
            except RowError as e:
                if self.on_bad_row == "fail":
                    raise
                self._bad[i] = str(e)
                log.warning("bad row skipped: %s", e)
                if len(self._bad) == len(self.rows):
                    raise ValueError(f"every row is bad; last: {e}") from None
                return False
            self._checked.add(i)
        return True

    def next_row(self) -> Row:
        """The next row; a new shuffled epoch starts after the last one."""
        while True:
            order = self.order(self.epoch)
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                continue
            i = order[self.index]
            self.index += 1
            if self._usable(i):
                return self.rows[i]

    def take(self, k: int) -> list[Row]:
        """The next k rows (across epoch boundaries)."""
        return [self.next_row() for _ in range(k)]

    def __iter__(self) -> Iterator[Row]:
        """Endless: epoch after epoch (stop with `itertools.islice`)."""
        while True:
            yield self.next_row()

    def eval_rows(self, k: int) -> list[Row]:
        """k held-out rows (the first training rows when nothing was held out)."""
        return (self.eval or self.rows)[:k]

    to_request = staticmethod(to_request)

    # ---- resume ----
    def fingerprint(self) -> int:
        """A checksum of the training rows' ids and places: a checkpoint refuses to resume on other data."""
        return zlib.crc32("\n".join(f"{r.id}\t{r.source}\t{r.row}" for r in self.rows).encode())

    def first_video(self) -> tuple | None:
        """(row, field) of the first video part of the training or held-out rows, or None."""
        for row in self.rows + self.eval:
            for name, _ in row.videos():
                return row, name
        return None

    def state_dict(self) -> dict:
        """The position in the stream (plain Python values)."""
        return {"epoch": self.epoch, "index": self.index, "rows": len(self.rows), "fingerprint": self.fingerprint(),
                "seed": self.seed, "shuffle": self.shuffle, "bad": {str(i): e for i, e in self._bad.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where `state` was taken; a ValueError when the data or the order changed."""
        if state.get("rows") != len(self.rows) or state.get("fingerprint", self.fingerprint()) != self.fingerprint():
            raise ValueError(f"the data changed since the checkpoint: {state.get('rows')} training rows then, "
                             f"{len(self.rows)} now (or other ids); resume on the same data")
        for key in ("seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"data {key} is {getattr(self, key)!r} but the checkpoint was taken with "
                                 f"{state[key]!r}; resume with the same value")
        if not (0 <= state["index"] <= len(self.rows)) or state["epoch"] < 0:
            raise ValueError(f"bad data position in the checkpoint: epoch {state['epoch']}, index {state['index']}")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._bad = {int(i): e for i, e in state.get("bad", {}).items()}
