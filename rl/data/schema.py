"""The row schema of training data, and its check: every problem names the file, the 1-based row and the field.

A row (one JSONL line, or one Parquet row):

    {"id": "q17",                                    # optional; default "FILE:ROW"
     "question": "How many red circles?",            # or "messages": [...] (exactly one of the two)
     "images": ["img/17.png", "file:///data/x.png"], # optional: paths, file:// URLs or bytes
     "videos": ["clips/17.mp4"],                     # optional: video files or folders of frame images
     "answer": "3",                                  # required: the reference (a string or a number)
     "reward": "number",                             # optional: the verifier; default from the config
     "mode": "short",                                # optional: short | long | auto; default: the hybrid schedule
     "meta": {"options": ["cat", "dog"]}}            # optional: given to the reward (e.g. choice options)

With `question`, the images are placed before the text in one user message (MiniCPM-V's own layout), or where the
text's `<image>` / `<video>` placeholders put them (one per image or video, in order: hub sets such as geometry3k). With
`messages`, images are embedded in the content parts (`{"type": "image", "image": PATH}`), or the parts are bare
placeholders (`{"type": "image"}`) filled from `images` in order, or, with no image part at all, `images` go
before the text of the first user message. Videos work the same way (`{"type": "video", "video": PATH}` parts,
bare `{"type": "video"}` placeholders filled from `videos`, else before the images); their frames are sampled as
the release samples them (`model/video.py`, the `data.video_*` settings). Relative paths are resolved against the
data file's folder. Only local files: a URL with any scheme but `file://` (to this machine) is refused, since
nothing is downloaded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

import PIL.Image

from core.modes import MODES
from model.processor import DEFAULT_MAX_IMAGE_PIXELS, InputError, load_image
from model.video import load_video
from rewards import VERIFIERS, check_reference, get_reward
from rewards.acc import allowed_table

ROLES: tuple[str, ...] = ("system", "user", "assistant")


class RowError(ValueError):
    """A bad row: `FILE: row N: field 'X': problem` (field and row are omitted where they do not apply)."""

    def __init__(self, source: str, row: int | None, field_name: str | None, problem: str):
        self.source, self.row, self.field, self.problem = source, row, field_name, problem
        where = [source] + ([f"row {row}"] if row is not None else []) + (
            [f"field {field_name!r}"] if field_name is not None else [])
        super().__init__(": ".join(where + [problem]))

    def __reduce__(self):  # picklable (Ray, multiprocessing) despite the custom __init__
        return (RowError, (self.source, self.row, self.field, self.problem))


@dataclass
class RowSchema:
    """The fields a data row may have (the file format); `Row` is what a valid one becomes."""

    answer: Any
    """Required: the reference answer, a string or a number (a list of strings for `exact`)."""
    question: str | None = None
    """The prompt text; give exactly one of `question` and `messages`."""
    messages: list[dict] | None = None
    """Chat messages (role, content: a string or text/image parts); give exactly one of these and `question`."""
    images: list[Any] | None = None
    """Images: paths (relative to the data file), file:// URLs or bytes; placed before the question's text."""
    videos: list[Any] | None = None
    """Videos: video files or folders of frame images (paths or file:// URLs); placed before the images."""
    id: str | None = None
    """A unique id; default `FILE:ROW`."""
    reward: str | None = None
    """The verifier that checks the answer (one of `rewards.VERIFIERS`); default from the config."""
    mode: str | None = None
    """short | long | auto: fixes the row's mode; absent: the hybrid schedule decides."""
    meta: dict | None = None
    """Extra fields for the reward (choice `options`, regex `pattern`, ...)."""


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RowSchema))


@dataclass
class Row:
    """A validated row: ready to become a rollout request."""

    id: str
    """Unique over the loaded files."""
    messages: list[dict]
    """Chat messages; image parts hold an absolute path or bytes."""
    answer: str | list[str]
    """The reference answer (numbers as their decimal string)."""
    reward: str
    """The verifier's name."""
    mode: str | None = None
    """The mode the data fixes, or None (the hybrid schedule decides)."""
    meta: dict = field(default_factory=dict)
    """Given to the reward as `RewardInput.meta`."""
    source: str = ""
    """The data file."""
    row: int = 0
    """The 1-based row (JSONL: line) number in `source`."""
    image_fields: list[str] = field(default_factory=list)
    """The field each image part came from (`images[0]`, `messages[0].content[1].image`), in order."""
    video_fields: list[str] = field(default_factory=list)
    """The field each video part came from (`videos[0]`, `messages[0].content[0].video`), in order."""

    @property
    def where(self) -> str:
        return f"{self.source}: row {self.row}"

    def images(self) -> list[tuple[str, Any]]:
        """(field, image) of every image part, in order: the field as a row error names it."""
        return self._media("image", self.image_fields)

    def videos(self) -> list[tuple[str, Any]]:
        """(field, video path) of every video part, in order."""
        return self._media("video", self.video_fields)

    def _media(self, kind: str, fields: list[str]) -> list[tuple[str, Any]]:
        parts = [part for message in self.messages if isinstance(message.get("content"), list)
                 for part in message["content"] if part.get("type") == kind]
        names = fields if len(fields) == len(parts) else [f"{kind} {k}" for k in range(len(parts))]
        return [(name, part[kind]) for name, part in zip(names, parts)]

    def check_images(self, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        """Decode every image; a RowError naming the file, row and field for the first that fails (whatever the
        failure: not an image, truncated, zero size, over `max_pixels` (data.max_image_pixels; None: no limit))."""
        for name, image in self.images():
            try:
                load_image(image, name, max_pixels)
            except InputError as e:
                raise RowError(self.source, self.row, name, _image_problem(e, name)) from None

    def image_sizes(self, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list[tuple[int, int]]:
        """(width, height) of every image part, from the headers alone (no pixel is decoded); a RowError naming the
        field for one that cannot be read or is over `max_pixels`."""
        sizes = []
        for name, image in self.images():
            try:
                sizes.append(tuple(load_image(image, name, max_pixels, decode=False).size))
            except InputError as e:
                raise RowError(self.source, self.row, name, _image_problem(e, name)) from None
        return sizes


@dataclass
class SchemaOptions:
    """What the check needs to know beyond the row itself."""

    default_reward: str = "math"
    """The verifier of rows that name none."""
    allowed_rewards: tuple[str, ...] = VERIFIERS
    """Reward names a row may give (data.allowed_rewards): a row names no code the config does not."""
    check_images: str = "load"
    """load: decode every image now; lazy: check they exist and are non-empty now, decode when first drawn."""
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    """The most pixels an image may have (a decompression-bomb guard, checked on the header); None: no limit."""
    drop_none: bool = False
    """Treat None values in `meta` and in content parts as absent (Parquet fills missing struct keys with None)."""
    video_sampling: dict = field(default_factory=dict)
    """`model.video.load_video`'s options, for decoding videos at load (check_images=load)."""
    system_prompt: str | None = None
    """A system message put first in rows that have none (data.system_prompt)."""
    prompt_template: str | None = None
    """The user text from a template, `{question}` standing for the question (data.prompt_template)."""


_resolved_rewards: dict[str, str | None] = {}


def reward_problem(name: Any, allowed: tuple[str, ...]) -> str | None:
    """Why `name` cannot be a row's reward, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"expected a reward name, got {name!r}"
    try:
        table = allowed_table(allowed)
    except Exception as e:  # noqa: BLE001 - a listed plugin that does not import: every row names the problem
        return f"data.allowed_rewards does not resolve ({type(e).__name__}: {e})"
    if name not in table:  # checked before anything is resolved: a row never makes this process import code
        return f"{name!r} is not a reward rows may name (allowed: {', '.join(sorted(table))})"
    name = table[name]
    if name not in _resolved_rewards:
        try:
            get_reward(name)
            _resolved_rewards[name] = None
        except Exception as e:  # noqa: BLE001 - any failure to resolve is the row's problem
            _resolved_rewards[name] = f"{name!r} does not resolve to a reward ({type(e).__name__}: {e})"
    return _resolved_rewards[name]


def _strip_where(message: str, where: str) -> str:
    return message[len(where) + 2:] if message.startswith(where + ": ") else message


def _image_problem(error: InputError, where: str) -> str:
    """The problem of a load_image error, without its `where:` prefix, naming the setting a size limit comes from."""
    problem = _strip_where(str(error), where)
    return problem + "; data.max_image_pixels sets the limit" if "over the limit of" in problem else problem


def _answer(value: Any) -> str | list[str]:
    if isinstance(value, bool):
        raise ValueError(f"expected a string or a number, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("empty")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise ValueError(f"expected a string or a number, got {type(value).__name__}")


def _image_value(value: Any, base: Path, check: str, where: str,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """An image as an absolute path string or bytes, checked; ValueError(problem) if bad."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # a `datasets` Image feature cell
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        image: Any = bytes(value)
        if not image:
            raise ValueError("empty bytes")
    elif isinstance(value, PIL.Image.Image):
        image = value
    elif isinstance(value, (str, os.PathLike)):
        path = _local_path(value, base)
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"file is empty (0 bytes): {path}")
        image = str(path)
    else:
        raise ValueError(f"expected a path, a file:// URL or bytes, got {type(value).__name__}")
    if check == "load" or isinstance(image, (bytes, PIL.Image.Image)):
        try:
            load_image(image, where, max_pixels)
        except InputError as e:
            raise ValueError(_image_problem(e, where)) from None
    return image


def _local_path(value: str | os.PathLike, base: Path) -> Path:
    """A path or file:// URL as an absolute local path (relative ones against `base`); ValueError if not local."""
    text = os.fspath(value)
    if not text.strip():
        raise ValueError("empty path")
    url = urlparse(text)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise ValueError(f"file URL on another host ({url.netloc!r}); only local files: {text!r}")
        text = unquote(url.path)
    elif len(url.scheme) > 1:  # one letter: a Windows drive
        raise ValueError(f"only local files (a path or a file:// URL); {url.scheme}:// is not fetched: {text!r}")
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _video_value(value: Any, base: Path, check: str, where: str, sampling: dict,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """A video as an absolute path (a file or a folder of frames), checked; ValueError(problem) if bad. With
    check=load its frames are sampled and decoded now (missing, undecodable, frameless videos are bad rows)."""
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"expected a path to a video file or a folder of frames, got {type(value).__name__}")
    path = _local_path(value, base)
    if not path.exists():
        raise ValueError(f"not found: {path}")
    if check == "load":
        try:
            load_video(str(path), where, max_pixels=max_pixels, **sampling)
        except InputError as e:
            raise ValueError(_strip_where(str(e), where)) from None
    elif path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"file is empty (0 bytes): {path}")
    return str(path)


NUL_PROBLEM = ("contains a NUL character (\\x00): the tokenizer and the rollout engine read it differently, so the "
               "learner would score other tokens than were sampled")


def _content(content: Any, i: int, drop_none: bool) -> str | list[dict]:
    if isinstance(content, str):
        if "\x00" in content:
            raise RowError("", None, f"messages[{i}].content", NUL_PROBLEM)
        return content
    if not isinstance(content, list) or not content:
        raise RowError("", None, f"messages[{i}].content", "expected a string or a non-empty list of parts")
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise RowError("", None, f"messages[{i}].content[{j}]", f"expected an object, got {type(part).__name__}")
        part = {k: v for k, v in part.items() if not (drop_none and v is None)}
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RowError("", None, f"messages[{i}].content[{j}].text", "expected a string")
            if "\x00" in part["text"]:
                raise RowError("", None, f"messages[{i}].content[{j}].text", NUL_PROBLEM)
        elif kind not in ("image", "video"):
            raise RowError("", None, f"messages[{i}].content[{j}].type",
                           f"{kind!r}: expected 'text', 'image' or 'video'")
        parts.append(part)
    return parts


PLACEHOLDER = re.compile(r"<(image|video)>")
"""A media placeholder in a question's text (hub data sets such as geometry3k write `<image>` where the image goes)."""


def _placed(question: str, parts: list[dict], bad) -> list[dict]:
    """The question's content with each `<image>` / `<video>` placeholder replaced by the next image / video of the
    row, in order; the text between them kept (trimmed). Placeholders and media must agree in number per kind."""
    for kind in ("image", "video"):
        marks = len(re.findall(f"<{kind}>", question))
        given = sum(1 for p in parts if p["type"] == kind)
        if marks != given:
            raise bad("question", f"{marks} <{kind}> placeholder(s) in the text for {given} {kind}(s) in "
                                  f"'{kind}s': each placeholder marks where one goes")
    queues = {kind: [p for p in parts if p["type"] == kind] for kind in ("image", "video")}
    content: list[dict] = []
    for k, piece in enumerate(PLACEHOLDER.split(question)):
        if k % 2:  # a placeholder's kind
            content.append(queues[piece].pop(0))
        elif piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    return content


def _messages(raw: Any, drop_none: bool) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise RowError("", None, "messages", "expected a non-empty list of {role, content} objects")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise RowError("", None, f"messages[{i}]", f"expected an object, got {type(message).__name__}")
        if message.get("role") not in ROLES:
            raise RowError("", None, f"messages[{i}].role", f"{message.get('role')!r}: expected one of {ROLES}")
        if message.get("content") is None:
            raise RowError("", None, f"messages[{i}].content", "missing")
        out.append({"role": message["role"], "content": _content(message["content"], i, drop_none)})
    if out[-1]["role"] != "user":
        raise RowError("", None, f"messages[{len(out) - 1}].role",
                       f"the last message is the prompt's, so it must be 'user', not {out[-1]['role']!r}")
    return out


def parse_row(raw: Any, source: str, row: int, base: Path, options: SchemaOptions = SchemaOptions()) -> Row:
    """Check one raw row and build its `Row`; a RowError naming `source`, `row` and the field otherwise."""
    try:
        return _parse(raw, source, row, base, options)
    except RowError as e:
        if e.source == "":  # raised by a helper that does not know the file
            raise RowError(source, row, e.field, e.problem) from None
        raise


def _parse(raw: Any, source: str, row: int, base: Path, opt: SchemaOptions) -> Row:
    def bad(name: str | None, problem: str) -> RowError:
        return RowError(source, row, name, problem)

    if not isinstance(raw, dict):
        raise bad(None, f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise bad(unknown[0], f"unknown field (known: {', '.join(FIELDS)}; put extra data in 'meta')")
    raw = {k: v for k, v in raw.items() if v is not None}  # null = absent (Parquet has every column in every row)

    if "answer" not in raw:
        raise bad("answer", "missing (every row needs the reference answer)")
    try:
        answer = _answer(raw["answer"])
    except ValueError as e:
        raise bad("answer", str(e)) from None

    has_q, has_m = "question" in raw, "messages" in raw
    if has_q and has_m:
        raise bad("question", "give either 'question' or 'messages', not both")
    if not has_q and not has_m:
        raise bad("question", "missing: give 'question' (a string) or 'messages' (chat messages)")

    mode = raw.get("mode")
    if mode is not None and mode not in MODES:
        raise bad("mode", f"{mode!r}: expected one of {', '.join(MODES)} (or leave it out)")

    reward = raw.get("reward", opt.default_reward)
    problem = reward_problem(reward, opt.allowed_rewards)
    if problem:
        raise bad("reward", problem)

    meta = raw.get("meta", {})
    if isinstance(meta, str):  # a JSON object in a string column
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as e:
            raise bad("meta", f"not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise bad("meta", f"expected an object, got {type(meta).__name__}")
    if opt.drop_none:
        meta = {k: v for k, v in meta.items() if v is not None}
    problem = check_reference(reward, answer, meta)  # the reward's own check (rewards.check_reference)
    if problem:
        raise bad("answer", problem)

    media = {kind: raw.get(f"{kind}s", []) for kind in ("video", "image")}  # videos go first
    for kind, values in media.items():
        if not isinstance(values, (list, tuple)):
            raise bad(f"{kind}s", f"expected a list, got {type(values).__name__}")

    names: dict[int, str] = {}  # id(part) -> the field it came from

    def part_of(kind: str, value: Any, name: str) -> dict:
        try:
            if kind == "image":
                checked = _image_value(value, base, opt.check_images, name, opt.max_image_pixels)
            else:
                checked = _video_value(value, base, opt.check_images, name, opt.video_sampling,
                                       opt.max_image_pixels)
        except ValueError as e:
            raise bad(name, str(e)) from None
        part = {"type": kind, kind: checked}
        names[id(part)] = name
        return part

    if has_q:
        question = raw["question"]
        if not isinstance(question, str) or not question.strip():
            raise bad("question", f"expected a non-empty string, got {question!r}")
        if "\x00" in question:
            raise bad("question", NUL_PROBLEM)
        question = templated(question, opt.prompt_template)
        parts = [part_of(kind, v, f"{kind}s[{k}]") for kind, values in media.items() for k, v in enumerate(values)]
        if PLACEHOLDER.search(question):  # `<image>` / `<video>` in the text mark where each goes (geometry3k's)
            messages = [{"role": "user", "content": _placed(question, parts, bad)}]
        else:
            messages = [{"role": "user",
                         "content": parts + [{"type": "text", "text": question}] if parts else question}]
    else:
        messages = _messages(copy.deepcopy(raw["messages"]), opt.drop_none)
        leading = []  # media without placeholders: before the first user message's text, videos first
        for kind, values in media.items():
            queue = list(enumerate(values))
            placeholders = 0
            for i, message in enumerate(messages):
                if isinstance(message["content"], str):
                    continue
                for j, part in enumerate(message["content"]):
                    if part["type"] != kind:
                        continue
                    if kind in part:
                        message["content"][j] = part_of(kind, part[kind], f"messages[{i}].content[{j}].{kind}")
                    elif queue:
                        placeholders += 1
                        k, value = queue.pop(0)
                        message["content"][j] = part_of(kind, value, f"{kind}s[{k}]")
                    else:
                        raise bad(f"messages[{i}].content[{j}].{kind}",
                                  f"a{'n' if kind == 'image' else ''} {kind} placeholder but '{kind}s' has only "
                                  f"{len(values)} {kind}s")
            if queue and placeholders:
                raise bad(f"{kind}s", f"{len(values)} {kind}s but {placeholders} {kind} placeholders in 'messages'")
            leading += [part_of(kind, v, f"{kind}s[{k}]") for k, v in queue]
        if leading:
            first = next(m for m in messages if m["role"] == "user")
            text = first["content"]
            first["content"] = leading + ([{"type": "text", "text": text}] if isinstance(text, str) else text)

    if not has_q and opt.prompt_template is not None:
        _template_last_user_text(messages, opt.prompt_template)
    if opt.system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": opt.system_prompt})
    row_id = raw.get("id", f"{Path(source).name}:{row}")
    if not isinstance(row_id, (str, int)) or isinstance(row_id, bool) or not str(row_id).strip():
        raise bad("id", f"expected a non-empty string or an integer, got {row_id!r}")
    fields = {kind: [names[id(part)] for message in messages if isinstance(message["content"], list)
                     for part in message["content"] if part["type"] == kind] for kind in media}
    return Row(id=str(row_id), messages=messages, answer=answer, reward=reward, mode=mode, meta=meta,
               source=source, row=row, image_fields=fields["image"], video_fields=fields["video"])


def templated(text: str, template: str | None) -> str:
    """`template` with `{question}` replaced by `text` (str.replace: a template's other braces, `\\boxed{}`, stay)."""
    return text if template is None else template.replace("{question}", text)


def _template_last_user_text(messages: list[dict], template: str) -> None:
    """The last user message's text (its string, or its last text part; a text part added when it has none)
    written from `template`, in place."""
    last = next(m for m in reversed(messages) if m["role"] == "user")
    if isinstance(last["content"], str):
        last["content"] = templated(last["content"], template)
        return
    texts = [part for part in last["content"] if part["type"] == "text"]
    if texts:
        texts[-1]["text"] = templated(texts[-1]["text"], template)
    else:
        last["content"].append({"type": "text", "text": templated("", template)})


def copy_messages(messages: Iterable[dict]) -> list[dict]:
    """A copy of the messages a consumer may change freely (image bytes and PIL images are shared, not copied)."""
    return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
             else [dict(part) for part in m["content"]]} for m in messages]
