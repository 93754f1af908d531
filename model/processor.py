"""The released MiniCPM-V 4.5 input format, for the learner and the rollout workers.

  messages + mode --chat template--> prompt text with `(<image>./</image>)` patterns
               --remote_code processor--> token ids, image bounds, image slices, tgt_sizes, temporal ids
  prompts + completions --collate--> a padded or packed batch for `MiniCPMV.forward`

Modes switch the chat template's `enable_thinking`: "short" (False: an empty think block is pre-filled),
"long" (True: `<think>\\n` is pre-filled), "auto" (unset: nothing is pre-filled; the model chooses).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import PIL.Image
import torch
from transformers import AutoTokenizer

from core.modes import ENABLE_THINKING, MODES

from .media import DEFAULT_MAX_IMAGE_PIXELS, PIL_LIMIT, InputError, Video, load_image  # noqa: F401 - re-exported
from .remote_code.image_processing_minicpmv import MiniCPMVImageProcessor
from .remote_code.processing_minicpmv import IMAGE_PATTERN, MiniCPMVProcessor
from .video import load_video

VIDEO_PATTERN = "(<video>./</video>)"


@dataclass
class PromptInputs:
    """One processed prompt: everything the model needs, and the text vLLM is given."""
    text: str
    """The rendered prompt with `(<image>./</image>)` patterns (what a vLLM worker receives)."""
    input_ids: list[int]
    images: list[PIL.Image.Image] = field(default_factory=list)
    """Every image and video frame, in order."""
    stills: list[PIL.Image.Image] = field(default_factory=list)
    """The images alone (no video frames), in order."""
    videos: list[tuple[list[PIL.Image.Image], list[list[int]]]] = field(default_factory=list)
    """Per video: its frames and their packages (timestamp ids in units of 0.1 s), as a vLLM engine takes them."""
    pixel_values: list[torch.Tensor] = field(default_factory=list)
    """Slices, each [3, patch, h*w*patch]."""
    tgt_sizes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))
    image_bound: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))
    temporal_ids: list[list[int]] = field(default_factory=list)
    mode: str = "auto"

    def without_images(self) -> "PromptInputs":
        """A copy without the PIL images and video frames (`images`, `stills`, `videos`): what the learner reads, whose
        pixels are in `pixel_values` already (a rank's share in transit, a batch in a checkpoint)."""
        return replace(self, images=[], stills=[], videos=[])


class Processor:
    def __init__(self, tokenizer, image_processor: MiniCPMVImageProcessor, frames_per_package: int = 6,
                 video_max_slice_nums: int = 1, max_image_pixels: int | None | str = PIL_LIMIT,
                 video_sampling: dict | None = None):
        """max_image_pixels: the pixel limit of every image decoded here (`load_image`'s `max_pixels`): pass the
        data check's limit (`data.max_image_pixels`) so that an image the check let through also decodes here.
        video_sampling: `model.video.load_video`'s options (fps, max_frames, max_packing, folder_fps) for video
        parts given as a file or a folder of frames; a `Video` given as such keeps its frames and packing."""
        self.tokenizer = tokenizer
        self.max_image_pixels = max_image_pixels
        self.image_processor = image_processor
        self.hf = MiniCPMVProcessor(image_processor=image_processor, tokenizer=tokenizer)
        self.frames_per_package = frames_per_package
        self.video_max_slice_nums = video_max_slice_nums
        self.video_sampling = dict(video_sampling or {})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> "Processor":
        path = Path(path)
        for name in ("preprocessor_config.json", "tokenizer_config.json"):
            if not (path / name).is_file():
                raise InputError(f"{path / name}: missing (needed by the MiniCPM-V processor)")
        # trust_remote_code: the released tokenizer class is remote code; a checkpoint written here carries only ours.
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
        return cls(tokenizer, MiniCPMVImageProcessor.from_pretrained(str(path)), **kwargs)

    # ---- text ----
    def render(self, messages: list[dict], mode: str = "auto") -> str:
        """Chat template with the thinking switch; image parts become `(<image>./</image>)`."""
        if mode not in ENABLE_THINKING:
            raise InputError(f"mode={mode!r}: expected one of {MODES}")
        kwargs = {} if ENABLE_THINKING[mode] is None else {"enable_thinking": ENABLE_THINKING[mode]}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)

    def media(self, messages: list[dict]) -> list[Any]:
        """Images and videos of the messages' content parts, in order."""
        found = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise InputError(f"messages[{i}]: expected a dict with 'role' and 'content'")
            if isinstance(message["content"], str):
                continue
            for j, part in enumerate(message["content"]):
                kind = part.get("type")
                if kind == "image":
                    found.append(load_image(part.get("image"), f"messages[{i}].content[{j}].image",
                                            self.max_image_pixels))
                elif kind == "video":
                    where = f"messages[{i}].content[{j}].video"
                    video = load_video(part.get("video"), where, max_pixels=self.max_image_pixels,
                                       **self.video_sampling)
                    found.append(Video([load_image(f, f"{where}.frames[{k}]", self.max_image_pixels)
                                        for k, f in enumerate(video.frames)], list(video.timestamps), video.packing))
                elif kind != "text":
                    raise InputError(f"messages[{i}].content[{j}].type: {kind!r} is not text, image or video")
        return found

    def __call__(self, messages: list[dict] | str, mode: str = "auto", images: Sequence[Any] = ()) -> PromptInputs:
        """messages (content parts may hold images and videos) or an already rendered prompt text with images."""
        if isinstance(messages, str):
            text, media = messages, [load_image(im, f"images[{k}]", self.max_image_pixels)
                                     for k, im in enumerate(images)]
        else:
            text, media = self.render(messages, mode), self.media(messages)
        return self.encode(text, media, mode)

    def encode(self, text: str, media: Sequence[Any], mode: str = "auto") -> PromptInputs:
        n_patterns = text.count(IMAGE_PATTERN) + text.count(VIDEO_PATTERN)
        if n_patterns != len(media):
            raise InputError(f"the prompt has {n_patterns} image/video placeholders but {len(media)} images/videos "
                             "were given")
        frames, groups, videos, stills = [], [], [], []
        pieces = text.replace(VIDEO_PATTERN, "\0V\0").replace(IMAGE_PATTERN, "\0I\0").split("\0")
        out, k = [], 0
        for piece in pieces:
            if piece not in ("I", "V"):
                out.append(piece)
                continue
            item = media[k]
            k += 1
            if piece == "I":
                if isinstance(item, Video):
                    raise InputError(f"media[{k - 1}]: a video where the prompt has an image placeholder")
                frames.append(item)
                stills.append(item)
                groups.append([-1])
                out.append(IMAGE_PATTERN)
            else:
                if not isinstance(item, Video):
                    raise InputError(f"media[{k - 1}]: an image where the prompt has a video placeholder")
                frames.extend(item.frames)
                ids = [int(round(t * 10)) for t in item.timestamps]  # units of 0.1 s
                step = item.packing or self.frames_per_package
                packages = [ids[i:i + step] for i in range(0, len(ids), step)]
                groups.extend(packages)
                videos.append((list(item.frames), packages))
                out.append(IMAGE_PATTERN * len(item.frames))
        # With a video, the whole prompt takes the release's video settings (its chat() with temporal_ids):
        # one slice per image or frame and no image ids; images are packages of their own ([-1]: no time).
        has_video = any(g != [-1] for g in groups)
        result = self.hf("".join(out), [frames], temporal_ids=[groups] if has_video else None,
                         max_slice_nums=self.video_max_slice_nums if has_video else None,
                         use_image_id=False if has_video else None)
        return PromptInputs(
            text=text, input_ids=result["input_ids"][0], images=frames, stills=stills, videos=videos,
            pixel_values=list(result["pixel_values"][0]),
            tgt_sizes=torch.as_tensor(result["tgt_sizes"][0], dtype=torch.long).reshape(-1, 2),
            image_bound=result["image_bound"][0], temporal_ids=result["temporal_ids"][0] if has_video else
            [[-1]] * len(result["pixel_values"][0]), mode=mode)


def to_device(value, device):
    """A collated batch (tensors, lists of tensors, None) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def collate(prompts: Sequence[PromptInputs], completions: Sequence[Sequence[int]], pad_id: int,
            packed: bool = False) -> dict[str, Any]:
    """Prompt + completion sequences -> keyword arguments of `MiniCPMV.forward`.

    padded: right padding to the longest sequence, with attention_mask.
    packed: all sequences back to back in one row; position_ids restart at each sequence, no attention_mask
            (the LLM's attention keeps the sequences apart: `model/attention.py`).
    target_mask marks the completion tokens (what the learner scores). Prompts repeated by object (a group's
    samples) have their pixels once, with `vision_index` mapping each image position to its features
    (`shared_vision`)."""
    if len(prompts) != len(completions):
        raise InputError(f"{len(prompts)} prompts but {len(completions)} completions")
    seqs = [list(p.input_ids) + list(c) for p, c in zip(prompts, completions)]
    distinct, vision_index = shared_vision(prompts)
    pixel_values = [s for p in distinct for s in p.pixel_values]
    tgt_sizes = torch.cat([p.tgt_sizes for p in distinct]) if pixel_values else None
    temporal_ids = [g for p in distinct for g in p.temporal_ids] if pixel_values else None
    vision = dict(pixel_values=pixel_values or None, tgt_sizes=tgt_sizes, temporal_ids=temporal_ids,
                  vision_index=vision_index if pixel_values else None)
    if packed:
        total = sum(map(len, seqs))
        input_ids = torch.full((1, total), pad_id, dtype=torch.long)
        position_ids = torch.zeros((1, total), dtype=torch.long)
        target_mask = torch.zeros((1, total), dtype=torch.bool)
        bounds, start = [], 0
        for p, seq in zip(prompts, seqs):
            end = start + len(seq)
            input_ids[0, start:end] = torch.tensor(seq)
            position_ids[0, start:end] = torch.arange(len(seq))
            target_mask[0, start + len(p.input_ids):end] = True
            bounds.append(p.image_bound + start)
            start = end
        return dict(input_ids=input_ids, position_ids=position_ids, attention_mask=None, target_mask=target_mask,
                    image_bound=[torch.cat(bounds)], **vision)
    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    target_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for b, (p, seq) in enumerate(zip(prompts, seqs)):
        input_ids[b, : len(seq)] = torch.tensor(seq)
        attention_mask[b, : len(seq)] = 1
        target_mask[b, len(p.input_ids): len(seq)] = True
    return dict(input_ids=input_ids, attention_mask=attention_mask, target_mask=target_mask,
                image_bound=[p.image_bound for p in prompts], **vision)


def visual_tokens(prompt: PromptInputs) -> int:
    """The prompt's image-token positions: query_num per slice or video package."""
    return int(sum(int(end) - int(start) for start, end in prompt.image_bound.reshape(-1, 2).tolist()))


def shared_vision(prompts: Sequence[PromptInputs]) -> tuple[list[PromptInputs], torch.Tensor | None]:
    """The distinct prompts (by object: the n samples of a group share their prompt's `PromptInputs`), whose images
    and video frames are encoded once, and for each image-token position of the batch, in order, the row of the
    distinct prompts' visual features it takes ([sum of positions] long; None when no prompt repeats).

    Memory: a group of n samples holds its prompt's pixels once, not n times (one 1344x1344 image is 10 slices of
    fp32 pixels, and the vision tower's activations over them; a video's frames, many times more)."""
    first: dict[int, int] = {}
    distinct: list[PromptInputs] = []
    for p in prompts:
        if id(p) not in first:
            first[id(p)] = len(distinct)
            distinct.append(p)
    if len(distinct) == len(prompts):
        return distinct, None
    offsets, total = [], 0
    for p in distinct:
        offsets.append(total)
        total += visual_tokens(p)
    index = [torch.arange(visual_tokens(p)) + offsets[first[id(p)]] for p in prompts]
    return distinct, torch.cat(index) if index else None
