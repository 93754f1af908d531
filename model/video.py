"""Videos to frames as the release samples them: a video file (decoded with PyAV) or a folder of frame images.

The release's recipe (its model card's `encode_video`, MAX_NUM_FRAMES = 180, MAX_NUM_PACKING = 3, TIME_SCALE = 0.1):
sample `fps` frames per second (3), at most `max_frames` (180); a longer video keeps 3 fps and packs
ceil(duration x fps / max_frames) consecutive frames into one 3D-Resampler package (at most `max_packing`, 3;
beyond that max_frames x max_packing frames spread over the whole video). Frames are taken uniformly (the middle of
equal bins), and each frame's timestamp is snapped to the nearest 0.1 s: the temporal ids are those tenths.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .media import InputError, Video, load_image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TIME_SCALE = 0.1


def plan(num_frames: int, native_fps: float, fps: float = 3.0, max_frames: int = 180,
         max_packing: int = 3) -> tuple[list[int], list[float], int]:
    """(frame indices, timestamps in seconds snapped to 0.1 s, frames per package) for a video of `num_frames`
    frames at `native_fps`, by the release's rule (module docstring)."""
    duration = num_frames / native_fps
    if fps * int(duration) <= max_frames:
        packing = 1
        chosen = round(min(fps, round(native_fps)) * min(max_frames, duration))
    else:
        packing = math.ceil(duration * fps / max_frames)
        chosen = round(duration * fps)
        if packing > max_packing:
            chosen, packing = round(max_frames * max_packing), max_packing
    chosen = min(max(chosen, 1), num_frames)
    gap = num_frames / chosen
    indices = [int(i * gap + gap / 2) for i in range(chosen)]
    last = max(math.ceil(duration / TIME_SCALE) - 1, 0)  # the release's scale: arange(0, duration, 0.1)
    stamps = [min(round(i / native_fps / TIME_SCALE), last) * TIME_SCALE for i in indices]
    return indices, stamps, packing


def load_video(source: Any, where: str = "video", fps: float = 3.0, max_frames: int = 180, max_packing: int = 3,
               folder_fps: float = 3.0, max_pixels: int | None | str = "pil") -> Video:
    """A `Video` from a video file, a folder of frame images (sorted by name; taken as `folder_fps` frames per
    second), or a `Video` (returned as it is). Every failure is an InputError naming `where`: a missing path, a
    file PyAV cannot decode, a video or folder without frames, a frame image that does not decode."""
    if isinstance(source, Video):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"{where}: expected a video file, a folder of frames or a model.processor.Video, got "
                         f"{type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise InputError(f"{where}: the folder has no frame images ({', '.join(FRAME_SUFFIXES)}): {path}")
        indices, stamps, packing = plan(len(files), folder_fps, fps, max_frames, max_packing)
        frames = [load_image(files[i], f"{where}: {files[i].name}", max_pixels) for i in indices]
        return Video(frames, stamps, packing)
    if not path.is_file():
        raise InputError(f"{where}: file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: file is empty (0 bytes): {path}")
    try:
        return _decode(path, fps, max_frames, max_packing)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever PyAV raises is a video that cannot be read
        raise InputError(f"{where}: cannot decode video ({type(e).__name__}: {e}): {path}") from e


def write_video(path: str | os.PathLike, frames: list, fps: int, codec: str = "mpeg4") -> Path:
    """Write PIL frames (all one size, even width and height) as a video file with PyAV (demo sets and tests)."""
    import av
    import numpy as np

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            array = np.asarray(frame.convert("RGB"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _decode(path: Path, fps: float, max_frames: int, max_packing: int) -> Video:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(f"no video stream: {path}")
        stream = container.streams.video[0]
        native = float(stream.average_rate or stream.guessed_rate or 0)
        count = stream.frames or sum(1 for _ in container.decode(stream))
    if count == 0 or native <= 0:
        raise InputError(f"the video has no frames (frames={count}, fps={native}): {path}")
    indices, stamps, packing = plan(count, native, fps, max_frames, max_packing)
    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(container.streams.video[0])):
            if k in wanted:
                frames[k] = frame.to_image().convert("RGB")
            if k >= indices[-1]:
                break
    missing = [i for i in indices if i not in frames]
    if missing:
        raise InputError(f"frame {missing[0]} of {count} could not be decoded: {path}")
    return Video([frames[i] for i in indices], stamps, packing)
