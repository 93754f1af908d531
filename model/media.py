"""Images and videos as the processor takes them: `load_image` (every failure an InputError naming the field) and
`Video` (sampled frames with their timestamps; `model.video` samples them from files)."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image


class InputError(ValueError):
    """Bad input to the processor: the message names the item and the field."""


DEFAULT_MAX_IMAGE_PIXELS: int = 89_478_485
"""PIL's own default `PIL.Image.MAX_IMAGE_PIXELS` (1024 * 1024 * 1024 // 4 // 3): the data check's default limit."""
PIL_LIMIT = "pil"
"""load_image's default `max_pixels`: PIL's process-wide limit as it is (PIL refuses over twice it, warns over it)."""
_PIXEL_LIMIT_LOCK = threading.Lock()  # load_image sets PIL's global limit only while it holds this


def load_image(source: Any, where: str = "image", max_pixels: int | None | str = PIL_LIMIT,
               decode: bool = True) -> PIL.Image.Image:
    """An RGB PIL image from a PIL image, a path, or bytes; an InputError naming `where` for anything that fails.

    Every failure is an InputError, never another exception: a missing or empty file, not an image, a truncated
    file, zero width or height, or more pixels than the limit (a decompression bomb). `max_pixels`: the most
    pixels (width x height) an image may have, None for no limit, or PIL_LIMIT for PIL's own process-wide
    `PIL.Image.MAX_IMAGE_PIXELS` (left as it is). A given limit is checked on the header, before any pixel is
    decoded; PIL's global is set to it only around this decode (under a lock, so concurrent load_image calls do
    not mix limits) and restored after, so nothing else in the process sees it change.
    `decode=False` reads and checks only the header: the image returned is closed, good for its `size` only.
    """
    explicit = max_pixels != PIL_LIMIT
    if explicit and max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                                or max_pixels < 1):
        raise ValueError(f"max_pixels={max_pixels!r}: expected a positive integer, None or {PIL_LIMIT!r}")

    def check_size(size: tuple[int, int]) -> None:
        width, height = size
        if width <= 0 or height <= 0:
            raise InputError(f"{where}: the image has zero size ({width}x{height})")
        if explicit and max_pixels is not None and width * height > max_pixels:
            raise InputError(f"{where}: the image is {width}x{height} = {width * height} pixels, over the limit of "
                             f"{max_pixels} pixels (a decompression bomb?)")

    if isinstance(source, PIL.Image.Image):
        check_size(source.size)
        return source.convert("RGB") if decode else source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{where}: file not found: {path}")
        if path.stat().st_size == 0:
            raise InputError(f"{where}: file is empty (0 bytes): {path}")
        opened: Any = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            raise InputError(f"{where}: empty bytes")
        opened = io.BytesIO(bytes(source))
    else:
        raise InputError(f"{where}: expected a PIL image, a path or bytes, got {type(source).__name__}")
    try:
        with _PIXEL_LIMIT_LOCK if explicit else contextlib.nullcontext():
            saved = PIL.Image.MAX_IMAGE_PIXELS
            try:
                if explicit:
                    PIL.Image.MAX_IMAGE_PIXELS = None  # the header is checked below, against max_pixels
                with PIL.Image.open(opened) as im:
                    check_size(im.size)
                    if not decode:
                        return im
                    if explicit:
                        PIL.Image.MAX_IMAGE_PIXELS = max_pixels  # frames and tiles met while decoding
                    return im.convert("RGB")
            finally:
                if explicit:
                    PIL.Image.MAX_IMAGE_PIXELS = saved
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever PIL raises (DecompressionBombError included) is a bad image
        raise InputError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e


@dataclass
class Video:
    """Frames of a video and their timestamps in seconds (`model.video.load_video` samples them from a file)."""
    frames: list
    timestamps: list[float]
    packing: int | None = None
    """Frames per 3D-Resampler package; None: the processor's `frames_per_package`."""
