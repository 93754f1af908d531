"""Loading JSONL and Parquet, the shuffled resumable stream, and rows as rollout requests."""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from datasets import Dataset

from rl.data import DataConfig, PromptDataset, RowError, load_rows, make_demo_data, parse_row, to_request

from .conftest import png_bytes, write_jsonl


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, rows=6, seed=3)
    return out


def comparable(rows):
    return [(r.id, r.messages, r.answer, r.reward, r.mode, r.meta, r.row) for r in rows]


def test_parquet_and_jsonl_load_the_same_rows(demo_dir):
    for name in ("count_shapes", "chart_values", "arith"):
        jsonl = demo_dir / f"{name}.jsonl"
        raw = [json.loads(line) for line in jsonl.read_text().splitlines()]
        parquet = demo_dir / f"{name}.parquet"  # same folder: the same relative image paths
        Dataset.from_list(raw).to_parquet(str(parquet))
        a, report_a = load_rows(jsonl, on_bad_row="fail")
        b, report_b = load_rows(parquet, on_bad_row="fail")
        parquet.unlink()
        assert comparable(a) == comparable(b) and len(a) == 6
        assert (report_a.read, report_a.kept) == (report_b.read, report_b.kept) == (6, 6)


def test_parquet_with_image_bytes_messages_and_bad_rows(tmp_path):
    rows = [
        {"id": "q", "question": "Color?", "messages": None, "images": [png_bytes()], "answer": "red", "mode": None},
        {"id": "m", "question": None, "images": [png_bytes((0, 0, 200))], "answer": "blue", "mode": "short",
         "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                   {"type": "text", "text": "Color?"}]}]},
        {"id": "x", "question": "Color?", "messages": None, "images": [b"not an image"], "answer": "red", "mode": None},
        {"id": "y", "question": "Color?", "messages": None, "images": [], "answer": None, "mode": None},
    ]
    path = tmp_path / "d.parquet"
    Dataset.from_list(rows).to_parquet(str(path))
    got, report = load_rows(path, default_reward="exact")
    assert [r.id for r in got] == ["q", "m"] and report.bad == 2
    assert got[0].messages[0]["content"][0] == {"type": "image", "image": png_bytes()}
    assert got[1].messages[0]["content"] == [{"type": "image", "image": png_bytes((0, 0, 200))},
                                             {"type": "text", "text": "Color?"}]
    assert report.errors[0].startswith(f"{path}: row 3: field 'images[0]': cannot decode image")
    assert report.errors[1].startswith(f"{path}: row 4: field 'answer': missing")


def test_unreadable_parquet_fails_whatever_on_bad_row_says(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(RowError, match=f"{path}: cannot read as Parquet"):
        load_rows(path)


def test_relative_image_paths_resolve_against_the_data_file(tmp_path, monkeypatch):
    data = tmp_path / "set"
    (data / "pics").mkdir(parents=True)
    (data / "pics" / "a.png").write_bytes(png_bytes())
    path = write_jsonl(data / "d.jsonl", [{"question": "q", "images": ["pics/a.png"], "answer": "1"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rows, _ = load_rows(path, on_bad_row="fail")
    assert rows[0].messages[0]["content"][0]["image"] == str(data / "pics" / "a.png")
    monkeypatch.chdir(data)  # a relative data path: the images are still found beside it
    rows, _ = load_rows("d.jsonl", on_bad_row="fail")
    assert Path(rows[0].messages[0]["content"][0]["image"]).resolve() == (data / "pics" / "a.png").resolve()


def test_folder_and_list_of_files_and_max_rows(demo_dir):
    rows, report = load_rows(demo_dir)
    assert len(report.files) == 4 and len(rows) == 24  # count_shapes, chart_values, digits, arith
    rows, report = load_rows([demo_dir / "arith.jsonl", demo_dir / "digits.jsonl"], max_rows=8)
    assert [r.id for r in rows] == [f"arith-{i}" for i in range(6)] + ["digits-0", "digits-1"]
    with pytest.raises(FileNotFoundError, match="nope.jsonl: data file not found"):
        load_rows(demo_dir / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown data format '.csv'"):
        (demo_dir / "x.csv").write_text("a,b\n")
        load_rows(demo_dir / "x.csv")


def arith_rows(n=5):
    """n valid rows, made in memory (no file): parse_row is the schema check load_rows applies."""
    return [parse_row({"id": f"r{i}", "question": f"{i} + 0?", "answer": str(i)}, "mem.jsonl", i + 1, Path("."))
            for i in range(n)]


def ids(rows):
    return [r.id for r in rows]


def test_shuffle_is_seeded_and_each_epoch_a_permutation():
    rows = arith_rows(7)
    a, b, c = (PromptDataset(rows, seed=s) for s in (1, 1, 2))
    first_a, first_b, first_c = ids(a.take(21)), ids(b.take(21)), ids(c.take(21))
    assert first_a == first_b and first_a != first_c
    epochs = [first_a[k:k + 7] for k in (0, 7, 14)]
    assert all(sorted(e) == sorted(ids(rows)) for e in epochs) and epochs[0] != epochs[1]
    assert ids(PromptDataset(rows, shuffle=False).take(9)) == ids(rows) + ids(rows)[:2]


@pytest.mark.parametrize("stop", [3, 5, 7, 12])
def test_resume_continues_exactly_across_epoch_boundaries(stop):
    rows = arith_rows(5)
    straight = PromptDataset(rows, seed=4)
    expected = ids(straight.take(20))
    first = PromptDataset(rows, seed=4)
    before = ids(first.take(stop))
    state = json.loads(json.dumps(first.state_dict()))  # plain values: any checkpoint format holds it
    resumed = PromptDataset(rows, seed=4)
    resumed.load_state_dict(state)
    assert before + ids(resumed.take(20 - stop)) == expected
    assert state["epoch"] * 5 + state["index"] == stop


def test_resume_refuses_other_data_or_seed():
    data = PromptDataset(arith_rows(5), seed=0)
    data.take(3)
    with pytest.raises(ValueError, match="the data changed"):
        PromptDataset(arith_rows(6), seed=0).load_state_dict(data.state_dict())
    with pytest.raises(ValueError, match="seed"):
        PromptDataset(arith_rows(5), seed=1).load_state_dict(data.state_dict())


def test_eval_holdout_is_disjoint_and_iteration_is_endless():
    data = PromptDataset(arith_rows(10), seed=0, eval_holdout=3)
    assert len(data) == 7 and len(data.eval_rows(5)) == 3
    assert not set(ids(data.eval)) & set(ids(data.rows))
    assert len(list(itertools.islice(iter(data), 30))) == 30
    with pytest.raises(ValueError, match="not enough to train on"):
        PromptDataset(arith_rows(3), eval_holdout=3)


@dataclass
class Section:  # the shape of rl-train's data section: from_config takes any object with DataConfig's fields
    path: str
    demo: str | None = "count_shapes"
    demo_rows: int = 5
    on_bad_row: str = "skip"
    default_reward: str = "math"
    shuffle: bool = True


def test_from_config_generates_a_missing_demo_set(tmp_path):
    data = PromptDataset.from_config(Section(str(tmp_path / "demo" / "count_shapes.jsonl")), seed=0)
    assert len(data) == 5 and data.bad_rows == 0
    assert (tmp_path / "demo" / "images" / "count_shapes" / "00004.png").is_file()
    again = PromptDataset.from_config(DataConfig(path=str(tmp_path / "demo"), seed=0))
    assert ids(again.take(5)) == ids(data.take(5))


def test_to_request_modes_meta_and_copies(demo_dir):
    rows, _ = load_rows(demo_dir / "chart_values.jsonl")
    row = rows[0]
    request = to_request(row, n=4)
    assert request.mode == "auto" and request.n == 4 and request.request_id == row.id
    assert request.meta == {"answer": row.answer, "reward": row.reward, "reward_meta": row.meta, "id": row.id,
                            "row": 1, "source": str(demo_dir / "chart_values.jsonl")}
    request.messages[0]["content"].clear()  # the request's messages are its own
    assert row.messages[0]["content"]
    row.mode = "short"
    assert to_request(row).mode == "short" and to_request(row, "long", 2, "x").mode == "long"
    with pytest.raises(ValueError, match="mode='medium'"):
        to_request(row, "medium")
    request.check()


def test_requests_are_processed_by_the_model_processor(processor, demo_dir):
    data = PromptDataset.from_config(DataConfig(path=str(demo_dir), shuffle=False))
    by_set = {}
    for row in data.rows:
        by_set.setdefault(row.id.split("-")[0], row)
    for name, row in by_set.items():
        for mode in ("short", "long"):
            request = to_request(row, mode, n=2)
            prompt = processor(request.messages, mode=request.mode)
            assert len(prompt.images) == (0 if name == "arith" else 1), name
            assert prompt.input_ids and prompt.mode == mode
            content = row.messages[0]["content"]
            assert (content if isinstance(content, str) else content[-1]["text"]) in prompt.text


def test_a_line_nested_beyond_the_recursion_limit_is_a_bad_row(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"question": ' + "[" * 100_000 + "]" * 100_000 + ', "answer": "1"}\n'
                    '{"question": "What is 1 + 1?", "answer": "2"}\n')
    rows, report = load_rows(path)  # skip: the load goes on past it
    assert [r.row for r in rows] == [2] and report.bad == 1
    assert report.errors[0] == f"{path}: row 1: nested too deeply to read (JSON arrays or objects inside each other " \
                               "beyond Python's recursion limit)"
