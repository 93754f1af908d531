import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.processor import InputError, Video
from model.remote_code.image_processing_minicpmv import MiniCPMVImageProcessor
from model.synthetic import shapes_image

ip = MiniCPMVImageProcessor()


@pytest.mark.parametrize("size, grid", [
    ((448, 448), None),      # one slice's area: not sliced
    ((100, 80), None),       # small: upscaled, not sliced
    ((600, 400), [2, 1]),    # area 1.2 -> try 2, 3 slices; log(1.5)=.41 closest to log(2/1)=.69
    ((300, 1000), [1, 3]),   # tall: log(.3)=-1.20 closest to log(1/3)=-1.10
    ((1000, 300), [3, 1]),
    ((1100, 800), [3, 2]),   # area 4.4 -> try 4, 5, 6; log(1.375)=.32 closest to log(3/2)=.41
    ((2000, 2000), [3, 3]),  # area 19.9 capped at 9 -> try 8, 9; square
])
def test_slice_grid_choice(size, grid):
    assert ip.get_sliced_grid(size) == grid


def test_placeholder_text():
    text = ip.get_slice_image_placeholder((1100, 800), image_idx=2)
    assert text.startswith("<image_id>2</image_id><image>" + "<unk>" * 64 + "</image>")
    assert text.count("<unk>") == 64 * (1 + 6)
    assert text.count("<slice>") == 6 and text.count("\n") == 1  # 2 rows of 3 slices, one row per line
    assert "<image_id>" not in ip.get_slice_image_placeholder((100, 80), use_image_id=False)


def test_slices_sizes_and_normalisation():
    image = Image.fromarray(np.full((800, 1100, 3), 255, dtype=np.uint8))
    out = ip([[image]])
    sizes = out["tgt_sizes"][0]
    assert len(out["pixel_values"][0]) == 7 == len(sizes)  # source + 3x2 slices
    for strip, (h, w) in zip(out["pixel_values"][0], sizes):
        assert strip.shape == (3, 14, h * w * 14)
        assert h * w <= 1024 + 64  # about one 448x448 slice each
    assert np.allclose(out["pixel_values"][0][0], 1.0)  # white: (1 - 0.5) / 0.5


def test_patch_strip_layout_matches_unfold():
    rng = np.random.RandomState(0)
    image = Image.fromarray((rng.rand(56, 42, 3) * 255).astype(np.uint8))
    strip, (h, w) = ip.to_strip(image)
    arr = torch.from_numpy((np.asarray(image, dtype=np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)
    patches = F.unfold(arr[None], 14, stride=14)[0]  # [3*14*14, n] in row-major patch order
    expected = patches.reshape(3, 14, 14, -1).permute(0, 1, 3, 2).reshape(3, 14, -1)
    assert (h, w) == (4, 3)
    torch.testing.assert_close(torch.from_numpy(strip), expected)


def test_modes_switch_the_template(processor):
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    head = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert processor.render(msgs, "short") == head + "<think>\n\n</think>\n\n"
    assert processor.render(msgs, "long") == head + "<think>\n"
    assert processor.render(msgs, "auto") == head
    with pytest.raises(InputError, match="mode='medium'"):
        processor.render(msgs, "medium")


def test_image_prompt_ids_and_bounds(processor):
    msgs = [{"role": "user", "content": [{"type": "image", "image": shapes_image(3, (700, 400))},
                                         {"type": "image", "image": shapes_image(1)},
                                         {"type": "text", "text": "Which has more circles?"}]}]
    p = processor(msgs, "long")
    assert p.text.count("(<image>./</image>)") == 2
    unk = processor.tokenizer.convert_tokens_to_ids("<unk>")
    ids = torch.tensor(p.input_ids)
    assert len(p.pixel_values) == 3 + 1 == p.tgt_sizes.shape[0]  # 700x400: source + 2 slices; 224x224: 1
    assert p.image_bound.shape == (4, 2)
    assert all(e - s == 64 for s, e in p.image_bound.tolist())
    inside = torch.zeros_like(ids, dtype=torch.bool)
    for s, e in p.image_bound.tolist():
        inside[s:e] = True
    assert (ids[inside] == unk).all() and not (ids[~inside] == unk).any()
    assert processor.tokenizer.decode(p.input_ids).count("<image_id>") == 2


def test_bad_inputs_name_what_and_where(processor, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")

    def ask(image):
        return processor([{"role": "user", "content": [{"type": "image", "image": image}]}], "short")

    with pytest.raises(InputError, match=r"messages\[0\].content\[0\].image: file is empty.*empty.png"):
        ask(str(tmp_path / "empty.png"))
    with pytest.raises(InputError, match=r"content\[0\].image: cannot decode image"):
        ask(str(tmp_path / "corrupt.png"))
    with pytest.raises(InputError, match="file not found"):
        ask(str(tmp_path / "nope.png"))
    with pytest.raises(InputError, match="2 image/video placeholders but 1 images"):
        processor("(<image>./</image>)(<image>./</image>)", images=[shapes_image(1)])
    with pytest.raises(InputError, match="1 image/video placeholders but 2 images"):
        processor("(<image>./</image>) hi", images=[shapes_image(1), shapes_image(2)])


def test_video_frames_are_packed_with_temporal_ids(processor):
    frames = [shapes_image(k % 3 + 1, seed=k) for k in range(8)]
    video = Video(frames, [k * 0.5 for k in range(8)])
    p = processor([{"role": "user", "content": [{"type": "video", "video": video},
                                                {"type": "text", "text": "What changes?"}]}], "long")
    assert p.temporal_ids == [[0, 5, 10, 15, 20, 25], [30, 35]]  # packages of <= 6 frames, units of 0.1 s
    assert len(p.pixel_values) == 8
    assert p.image_bound.shape == (2, 2)  # one 64-token placeholder per package
    assert "<image_id>" not in processor.tokenizer.decode(p.input_ids)
