"""Data rows: schema errors name the file, row and field; skip-and-count or fail; JSONL = Parquet; resume."""

import json
import re

import pytest

from model.synthetic import shapes_image
from rl.data import PromptDataset, RowError, load_rows
from rl.data.demo_sets import write_demo


@pytest.fixture
def files(tmp_path):
    shapes_image(2).save(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG garbage")
    good = {"question": "How many?", "images": ["ok.png"], "answer": "2", "reward": "number"}
    rows = [
        good,                                                          # 1
        "{not json",                                                   # 2
        {"question": "q"},                                             # 3 no answer
        {"question": "q", "messages": [], "answer": 1},                # 4 both
        {"answer": 1},                                                 # 5 neither
        {"question": "q", "answer": 1, "reward": "os:system"},         # 6 reward path
        {"question": "q", "answer": 1, "mode": "medium"},              # 7 mode
        {"question": "q", "answer": 1, "images": ["missing.png"]},     # 8
        {"question": "q", "answer": 1, "images": ["empty.png"]},       # 9
        {"question": "q", "answer": 1, "images": ["corrupt.png"]},     # 10
        {"question": "q", "answer": 1, "images": ["https://x.org/a.png"]},  # 11
        {"question": "q", "answer": 1, "colour": "red"},               # 12 unknown field
        {"question": "What is 1+1?", "answer": 2, "mode": "short",
         "images": [f"file://{tmp_path / 'ok.png'}"]},                 # 13 good, file URL
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_bad_rows_are_named_and_counted(files):
    rows, errors = load_rows(files, "skip")
    assert [r.line for r in rows] == [1, 13]
    assert rows[1].mode == "short" and rows[0].messages[0]["content"][0]["type"] == "image"
    expected = [(2, "not valid JSON"), (3, "field 'answer': missing"), (4, "field 'question'/'messages'"),
                (5, "field 'question'/'messages'"), (6, "field 'reward': 'os:system'"), (7, "field 'mode': 'medium'"),
                (8, "field 'images\\[0\\]'.*file not found"), (9, "field 'images\\[0\\]'.*file is empty"),
                (10, "field 'images\\[0\\]'.*cannot decode image"), (11, "field 'images\\[0\\]': only local files"),
                (12, "field 'colour': unknown field")]
    assert len(errors) == len(expected)
    for error, (line, pattern) in zip(errors, expected):
        assert error.startswith(f"{files}: row {line}:"), error
        assert re.search(pattern, error), error


def test_fail_mode_stops_at_the_first_bad_row(files):
    with pytest.raises(RowError, match=r"rows.jsonl: row 2: not valid JSON"):
        load_rows(files, "fail")


def test_parquet_gives_the_same_rows(tmp_path):
    from datasets import Dataset

    jsonl = write_demo("count_shapes", tmp_path / "d.jsonl", rows=6, seed=1)
    raw = [json.loads(line) for line in jsonl.read_text().splitlines()]
    Dataset.from_list(raw).to_parquet(str(tmp_path / "d.parquet"))
    a, _ = load_rows(jsonl)
    b, _ = load_rows(tmp_path / "d.parquet")
    assert [(r.id, r.answer, r.messages) for r in a] == [(r.id, r.answer, r.messages) for r in b]


def count_blobs(mask) -> int:
    """Connected components (4-neighbour flood fill) of a boolean image."""
    seen, blobs = set(), 0
    h, w = mask.shape
    for y, x in zip(*mask.nonzero()):
        if (y, x) in seen:
            continue
        blobs += 1
        stack = [(y, x)]
        seen.add((y, x))
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and (ny, nx) not in seen:
                    seen.add((ny, nx))
                    stack.append((ny, nx))
    return blobs


def test_demo_sets_are_deterministic_and_verifiable(tmp_path, processor):
    a = write_demo("count_shapes", tmp_path / "a" / "d.jsonl", rows=5, seed=3).read_text()
    b = write_demo("count_shapes", tmp_path / "b" / "d.jsonl", rows=5, seed=3).read_text()
    assert a == b
    rows, errors = load_rows(tmp_path / "a" / "d.jsonl")
    assert not errors
    import numpy as np
    from PIL import Image

    for row in rows:  # count the drawn discs from the pixels, independently of the generator
        pixels = np.asarray(Image.open(row.messages[0]["content"][0]["image"]).convert("RGB")).astype(int)
        colored = (np.abs(pixels - 255).sum(-1) > 60)
        assert count_blobs(colored) == int(row.answer)
        prompt = processor(PromptDataset.to_request(row, "long", 2, "r").messages, "long")
        assert len(prompt.pixel_values) == 1
    arith, _ = load_rows(write_demo("arith", tmp_path / "arith.jsonl", rows=20, seed=0))
    for row in arith:
        a_, b_ = [int(x) for x in row.messages[0]["content"].split("What is ")[1].split("?")[0].split(" + ")]
        assert a_ + b_ == int(row.answer) <= 9


def test_stream_shuffles_and_resumes_across_epochs(tmp_path):
    rows, _ = load_rows(write_demo("arith", tmp_path / "a.jsonl", rows=7, seed=0))
    straight = PromptDataset(rows, seed=5)
    first = [r.id for r in straight.take(10)]  # crosses the epoch boundary at 7
    assert sorted(first[:7]) == sorted(r.id for r in rows) and first[:7] != [r.id for r in rows]
    state = straight.state_dict()
    rest = [r.id for r in straight.take(9)]
    resumed = PromptDataset(rows, seed=5)
    resumed.load_state_dict(state)
    assert [r.id for r in resumed.take(9)] == rest
    with pytest.raises(ValueError, match="the data changed"):
        PromptDataset(rows[:5], seed=5).load_state_dict(state)
