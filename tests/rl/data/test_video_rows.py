"""Video rows: files and folders of frames in `videos` or in content parts, placed before the images, sampled as
the release samples them; a bad video is a bad row named by file, row and field."""

import PIL.Image

from model.processor import Processor
from rl.data import load_rows
from tests.model.test_video import write_video

from .conftest import write_jsonl


def test_video_rows_load_with_their_parts_in_order(tmp_path, tiny_ckpt):
    write_video(tmp_path / "a.mp4")
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(4):
        PIL.Image.new("RGB", (32, 32), (40 * k, 0, 0)).save(frames / f"{k}.png")
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"question": "Which way?", "videos": ["a.mp4"], "images": ["x.png"], "answer": "right"},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "compare"}, {"type": "video"},
                                                    {"type": "video", "video": "frames"}]}],
         "videos": ["a.mp4"], "answer": "same"}])
    rows, report = load_rows(path, default_reward="exact")
    assert report.bad == 0, report.errors
    first, second = rows
    assert [p["type"] for p in first.messages[0]["content"]] == ["video", "image", "text"]
    assert first.videos() == [("videos[0]", str(tmp_path / "a.mp4"))] and first.image_fields == ["images[0]"]
    assert [name for name, _ in second.videos()] == ["videos[0]", "messages[0].content[2].video"]
    prompt = Processor.from_pretrained(tiny_ckpt)(second.messages, "short")
    assert len(prompt.images) == 6 + 4  # 2 s at 10 fps -> 6 frames; 4 frames at 3 fps -> all 4
    assert prompt.temporal_ids[6:] == [[0], [3], [7], [10]]  # the folder's frames at 0, 1/3, 2/3, 1 s


def test_a_bad_video_is_a_bad_row_named_by_file_row_and_field(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "empty_dir").mkdir()
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"question": "q", "videos": ["missing.mp4"], "answer": "1"},
        {"question": "q", "videos": ["junk.mp4"], "answer": "1"},
        {"messages": [{"role": "user", "content": [{"type": "video", "video": "empty_dir"}]}], "answer": "1"},
        {"messages": [{"role": "user", "content": [{"type": "video"}]}], "answer": "1"},
        {"question": "q", "videos": "junk.mp4", "answer": "1"}])
    rows, report = load_rows(path, default_reward="number")
    assert rows == [] and report.bad == 5
    expected = ["row 1: field 'videos[0]': not found", "row 2: field 'videos[0]': cannot decode video",
                "row 3: field 'messages[0].content[0].video': the folder has no frame images",
                "row 4: field 'messages[0].content[0].video': a video placeholder but 'videos' has only 0 videos",
                "row 5: field 'videos': expected a list"]
    for error, wanted in zip(report.errors, expected):
        assert f"d.jsonl: {wanted}" in error, error


def test_the_moving_shape_demo_set_is_valid_and_moves_as_its_answer_says(tmp_path):
    import numpy as np

    from model.video import load_video
    from rl.data.demo import write_demo

    path = write_demo("moving_shape", tmp_path / "moving_shape.jsonl", rows=6, seed=0)
    rows, report = load_rows(path, default_reward="exact")
    assert report.bad == 0 and len(rows) == 6 and len({r.answer for r in rows}) > 1
    for row in rows:
        [(_, video_path)] = row.videos()
        frames = load_video(video_path).frames
        centre = []
        for frame in (frames[0], frames[-1]):
            ys, xs = np.nonzero(np.asarray(frame).astype(int).sum(-1) < 600)  # the circle, not the light background
            centre.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centre
        moved = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}
        assert max(moved, key=moved.get) == row.answer and moved[row.answer] > 30


def test_video_rows_with_rollout_video_off_stop_the_run_before_any_engine_starts(tmp_path, tiny_ckpt, monkeypatch):
    """vLLM's own MiniCPM-V samples video frames unlike the learner computes them: with rollout.video=false a video
    row stops rl-train with the row, the field and the reason, before Ray or vLLM start."""
    import pytest

    import rl.trainer as trainer_module
    from rl.config import load
    from rl.data.demo import write_demo
    from rl.errors import RunError

    monkeypatch.setattr(trainer_module, "start_ray", lambda cfg: pytest.fail("Ray started"))
    data = write_demo("moving_shape", tmp_path / "moving_shape.jsonl", rows=4)
    cfg = load("configs/tiny_cpu.yaml", [f"model.path={tiny_ckpt}", f"data.path={data}", f"run.dir={tmp_path / 'r'}",
                                         "data.default_reward=exact", "rollout.prompts_per_step=2",
                                         "rollout.video=false"])
    with pytest.raises(RunError, match=r"moving_shape.jsonl: row \d: field 'videos\[0\]': video prompts need the "
                                       r"engine started with video=True .*\(rollout.video=false\)"):
        trainer_module.Trainer(cfg)


def test_a_video_too_long_for_the_context_is_a_bad_row_naming_the_video(tmp_path, tiny_ckpt):
    from rl.data import DataConfig

    write_video(tmp_path / "long.mp4", frames=60)  # 6 s at 10 fps: 18 frames, one package each
    write_video(tmp_path / "short.mp4", frames=10)  # 1 s: 3 frames
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "videos": ["long.mp4"], "answer": "1"},
                                              {"question": "q", "videos": ["short.mp4"], "answer": "1"}])
    processor = Processor.from_pretrained(tiny_ckpt)
    rows, report = load_rows(DataConfig(path=str(path), default_reward="number", max_prompt_tokens=600),
                             processor=processor)
    assert [r.row for r in rows] == [2] and report.bad == 1
    assert "d.jsonl: row 1: field 'videos[0]': prompt of" in report.errors[0]
    assert "> data.max_prompt_tokens=600" in report.errors[0] and "data.video_fps" in report.errors[0]
    from rl.data.loader import prompt_tokens

    assert prompt_tokens(rows[0], processor)[0] == max(len(processor(rows[0].messages, m).input_ids)
                                                       for m in ("short", "long"))  # the longer mode counts
