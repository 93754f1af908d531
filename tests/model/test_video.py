"""Videos to frames by the release's sampling rule: files decoded with PyAV, folders of frames, and bad videos named."""

import numpy as np
import PIL.Image
import pytest

from model.processor import InputError, Video
from model.video import load_video, plan
from model.video import write_video as encode


def write_video(path, frames: int = 20, fps: int = 10, size: int = 64):
    """A red square moving right, one frame per step, as an MPEG-4 file."""
    images = []
    for k in range(frames):
        image = np.zeros((size, size, 3), dtype=np.uint8)
        image[24:40, 2 * k:2 * k + 16] = (255, 0, 0)
        images.append(PIL.Image.fromarray(image))
    return encode(path, images, fps)


def test_the_release_rule_picks_frames_packing_and_tenths_of_a_second():
    indices, stamps, packing = plan(20, 10.0)  # 2 s at 10 fps: 3 frames per second, no packing
    assert indices == [1, 5, 8, 11, 15, 18] and packing == 1
    assert stamps == pytest.approx([0.1, 0.5, 0.8, 1.1, 1.5, 1.8])
    indices, _, packing = plan(3000, 30.0)  # 100 s: 300 frames at 3 fps, two per package
    assert (len(indices), packing) == (300, 2)
    indices, _, packing = plan(30000, 30.0)  # 1000 s: capped at 180 x 3 frames over the whole video
    assert (len(indices), packing) == (540, 3) and indices[-1] < 30000
    assert plan(1, 30.0)[0] == [0]  # a one-frame video keeps its frame


def test_a_video_file_decodes_to_the_planned_frames(tmp_path):
    video = load_video(write_video(tmp_path / "move.mp4"))
    assert len(video.frames) == 6 and video.packing == 1
    assert video.timestamps == pytest.approx([0.1, 0.5, 0.8, 1.1, 1.5, 1.8])
    reds = [np.asarray(f)[32, :, 0] > 128 for f in video.frames]
    starts = [int(np.argmax(r)) for r in reds]
    assert starts == sorted(starts) and starts[-1] > starts[0]  # the square moves right, frames in order


def test_a_folder_of_frames_is_a_video(tmp_path):
    for k in range(7):
        PIL.Image.new("RGB", (32, 32), (30 * k, 0, 0)).save(tmp_path / f"f{k:02d}.png")
    video = load_video(tmp_path, folder_fps=3.0)
    assert len(video.frames) == 7 and [f.getpixel((0, 0))[0] for f in video.frames] == [30 * k for k in range(7)]


def test_bad_videos_name_the_field(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 20)
    (tmp_path / "no_frames").mkdir()
    cases = {tmp_path / "missing.mp4": "file not found", tmp_path / "empty.mp4": "file is empty",
             tmp_path / "junk.mp4": "cannot decode video", tmp_path / "no_frames": "has no frame images"}
    for source, problem in cases.items():
        with pytest.raises(InputError, match=rf"^videos\[0\]: .*{problem}"):
            load_video(source, "videos[0]")
    with pytest.raises(InputError, match="expected a video file"):
        load_video(3, "videos[0]")


def test_the_processor_takes_a_video_path_as_the_frames_it_samples(processor, tmp_path):
    path = write_video(tmp_path / "move.mp4", frames=40)  # 4 s: 12 frames
    content = lambda v: [{"role": "user", "content": [{"type": "video", "video": v},  # noqa: E731
                                                      {"type": "text", "text": "Which way?"}]}]
    by_path = processor(content(str(path)), "short")
    sampled = load_video(path)
    by_video = processor(content(Video(sampled.frames, sampled.timestamps, sampled.packing)), "short")
    assert by_path.input_ids == by_video.input_ids and len(by_path.images) == 12
    assert by_path.temporal_ids == [[round(t * 10)] for t in sampled.timestamps]  # packing 1: one frame per package
    with pytest.raises(InputError, match=r"messages\[0\]\.content\[0\]\.video: file not found"):
        processor(content(str(tmp_path / "gone.mp4")), "short")
