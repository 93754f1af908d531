"""Data sets as users bring them: `save_to_disk` folders with an Image column and other column names, a
multiple-choice set with a `choices` list, a `datasets.Dataset` from Python; they load through `data.columns` and
train (on the fake rollout backend, with the real learner)."""

import io
import json

import datasets
import PIL.Image
import pytest

from model.processor import Processor
from model.synthetic import shapes_image
from rl.config import load
from rl.data import DataConfig, load_rows
from rl.trainer import Trainer
from rollouts.fake import FakeBackend
from rollouts.local import LocalPool


def png(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def geometry_set(folder, rows: int = 12):
    """geometry3k-like: problem, solution, an Image column, a data_source; written with save_to_disk."""
    data = {"problem": [f"How many circles are there? ({i})" for i in range(rows)],
            "solution": [str(i % 4 + 1) for i in range(rows)],
            "image": [png(shapes_image(i % 4 + 1, (224, 224), seed=i)) for i in range(rows)],
            "data_source": ["geometry"] * rows}
    features = datasets.Features({"problem": datasets.Value("string"), "solution": datasets.Value("string"),
                                  "image": datasets.Image(), "data_source": datasets.Value("string")})
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(folder))
    return folder


def choice_set(path, image_dir, rows: int = 12):
    """ScienceQA-like JSONL: question, a choices list, the answer as an option index, an image path."""
    image_dir.mkdir()
    lines = []
    for i in range(rows):
        shapes_image(i % 3 + 1, (224, 224), seed=i).save(image_dir / f"{i}.png")
        lines.append({"question": "How many circles?", "choices": ["one", "two", "three"], "answer": i % 3,
                      "image": f"{image_dir.name}/{i}.png", "lecture": "unused"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def config(tmp_path, ckpt, *extra):
    return load("configs/tiny_cpu.yaml", [f"run.dir={tmp_path / 'run'}", "run.steps=2", "run.export=false",
                                          "run.progress=false", "run.tensorboard=false", "run.save_every=0",
                                          "rollout.prompts_per_step=2", "rollout.n=2", "reward.workers=1",
                                          f"model.path={ckpt}", *extra])


def test_a_save_to_disk_set_with_an_image_column_and_other_names_loads_and_trains(tmp_path, tiny_ckpt):
    folder = geometry_set(tmp_path / "geometry")
    columns = {"question": "problem", "answer": "solution"}
    rows, report = load_rows(DataConfig(path=str(folder), columns=columns, default_reward="number"))
    assert report.bad == 0 and len(rows) == 12
    content = rows[0].messages[0]["content"]
    assert [p["type"] for p in content] == ["image", "text"] and content[1]["text"].startswith("How many circles")
    assert rows[0].answer == "1" and rows[0].reward == "number" and rows[0].image_fields == ["images[0]"]
    cfg = config(tmp_path, tiny_ckpt, f"data.path={folder}", "data.columns={question: problem, answer: solution}",
                 "data.default_reward=number")
    history = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert len(history) == 2 and all(h["failed_requests"] == 0 for h in history)


def test_a_choices_list_becomes_lettered_options_and_an_index_answer_its_letter(tmp_path, tiny_ckpt):
    path = choice_set(tmp_path / "sqa.jsonl", tmp_path / "img")
    rows, report = load_rows(DataConfig(path=str(path), columns={"question": "question"}))
    assert report.bad == 0, report.errors
    row = rows[1]
    assert row.messages[0]["content"][-1]["text"] == "How many circles?\nA. one\nB. two\nC. three"
    assert row.answer == "B" and row.reward == "choice" and row.meta == {"options": ["one", "two", "three"]}
    cfg = config(tmp_path, tiny_ckpt, f"data.path={path}", "data.columns={question: question}")
    history = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert len(history) == 2 and all(h["failed_requests"] == 0 for h in history)


def test_a_mapped_column_that_is_missing_names_the_key_and_the_columns_present(tmp_path):
    folder = geometry_set(tmp_path / "geometry", rows=2)
    with pytest.raises(ValueError, match=r"data.columns.answer: column 'answer_text' is not in .*geometry \(its "
                                         r"columns: problem, solution, image, data_source\)"):
        load_rows(DataConfig(path=str(folder), columns={"question": "problem", "answer": "answer_text"}))


def test_images_as_the_image_feature_bytes_and_paths_give_the_same_prompt(tmp_path, tiny_ckpt):
    image = shapes_image(3, (500, 300), seed=1)
    image.save(tmp_path / "x.png")
    feature = datasets.Dataset.from_dict({"q": ["Count."], "a": ["3"], "image": [png(image)]},
                                         features=datasets.Features({"q": datasets.Value("string"),
                                                                     "a": datasets.Value("string"),
                                                                     "image": datasets.Image()}))
    as_bytes = [{"q": "Count.", "a": "3", "image": png(image)}]
    as_path = [{"q": "Count.", "a": "3", "image": str(tmp_path / "x.png")}]
    cfg = DataConfig(path="unused", columns={"question": "q", "answer": "a"}, default_reward="number")
    processor = Processor.from_pretrained(tiny_ckpt)
    ids = []
    for data in (feature, as_bytes, as_path):
        [row], report = load_rows(cfg, data=data)
        ids.append(processor(row.messages, "short").input_ids)
    assert ids[0] == ids[1] == ids[2]


def test_a_dataset_passed_in_python_trains_with_rewards_by_source(tmp_path, tiny_ckpt):
    rows = 8
    dataset = datasets.Dataset.from_dict({
        "problem": [f"What is {i} + 1?" for i in range(rows)], "solution": [str(i + 1) for i in range(rows)],
        "data_source": ["arith" if i % 2 else "exact_set" for i in range(rows)]})
    cfg = config(tmp_path, tiny_ckpt, "data.columns={question: problem, answer: solution}",
                 "data.source_column=data_source", "data.reward_by_source={arith: number, exact_set: exact}")
    trainer = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt))), data=dataset)
    assert {r.reward for r in trainer.dataset.rows} == {"number", "exact"}
    assert all(r.reward == ("number" if int(r.answer) % 2 == 0 else "exact") for r in trainer.dataset.rows)
    history = trainer.fit()
    assert len(history) == 2 and all(h["failed_requests"] == 0 for h in history)
    assert "<python data>" in (tmp_path / "run" / "config.yaml").read_text()
    recorded = json.loads((tmp_path / "run" / "data_origin.json").read_text())
    assert recorded["fingerprint"] == dataset._fingerprint and recorded["num_rows"] == rows
    assert recorded["column_names"] == ["problem", "solution", "data_source"]
    from rl.evaluation.run import run_rows

    with pytest.raises(ValueError, match=rf"the run trained on rows from Python, not on a file: datasets.arrow_dataset"
                                         rf".Dataset \({rows} rows; fingerprint {dataset._fingerprint}\), made in "
                                         r"memory: pass --data with the same rows, or run_eval\(..., data=rows\)"):
        run_rows(load(str(tmp_path / "run" / "config.yaml")), tmp_path / "run")


def test_rows_from_python_name_the_folder_they_were_saved_in(tmp_path):
    """A data set loaded from a save_to_disk folder records that folder: rl-eval's hint is `--data FOLDER`."""
    from rl.data.external import origin, origin_hint

    folder = geometry_set(tmp_path / "geometry", rows=3)
    found = origin(datasets.load_from_disk(str(folder)))
    assert found["folder"] == str(folder) and found["num_rows"] == 3
    assert origin_hint(found).endswith(f"saved in {folder}: pass --data {folder}")
    assert origin([{"question": "q", "answer": "1"}]) == {"type": "builtins.list"}


def test_a_hub_id_that_cannot_be_fetched_offline_is_named(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"data.path=someone/not-a-cached-set: cannot load the Hugging Face dataset "
                                         r"'someone/not-a-cached-set' .*Without internet only data sets already in "
                                         r"the local `datasets` cache load"):
        load_rows(DataConfig(path="someone/not-a-cached-set", split="train"))


def test_rl_eval_reads_a_mapped_save_to_disk_set_as_the_run_did_with_a_split_or_from_python(tmp_path, tiny_ckpt):
    """rl-eval's data path (`rl.evaluation.run.data_rows`): the run's data.columns apply to --data, --split picks
    the split of a DatasetDict folder, and a `datasets.Dataset` from Python is read the same way."""
    from rl.evaluation.run import data_rows

    geometry_set(tmp_path / "train")
    geometry_set(tmp_path / "test", rows=5)
    splits = datasets.DatasetDict({"train": datasets.load_from_disk(str(tmp_path / "train")),
                                   "test": datasets.load_from_disk(str(tmp_path / "test"))})
    splits.save_to_disk(str(tmp_path / "both"))
    cfg = config(tmp_path, tiny_ckpt, f"data.path={tmp_path / 'both'}", "data.split=train",
                 "data.columns={question: problem, answer: solution}", "data.default_reward=number")
    rows, report = data_rows(cfg, str(tmp_path / "both"), split="test")
    assert report.bad == 0 and len(rows) == 5 and rows[0].answer == "1" and rows[0].reward == "number"
    rows, report = data_rows(cfg, str(tmp_path / "both"))  # the run's own split
    assert report.bad == 0 and len(rows) == 12
    rows, report = data_rows(cfg, splits["test"], max_rows=3)  # rows from Python
    assert report.bad == 0 and len(rows) == 3 and rows[0].messages[0]["content"][0]["type"] == "image"
    unmapped = config(tmp_path, tiny_ckpt, f"data.path={tmp_path / 'both'}", "data.default_reward=number")
    rows, report = data_rows(unmapped, str(tmp_path / "both"), split="test")  # without the mapping: what rl-eval did
    assert rows == [] and report.bad == 5 and "field 'answer': missing" in report.errors[0]


def test_check_reads_the_first_rows_through_the_mapping(tmp_path):
    """`rl-train --check` (preflight) opens each source and reads its first rows as the run will: a mapped column the
    data set lacks, rows the mapping leaves without a question, a row naming a reward it may not, each in one line."""
    from rl.preflight import PREVIEW_ROWS, preflight

    folder = geometry_set(tmp_path / "geometry")
    lines = choice_set(tmp_path / "choices.jsonl", tmp_path / "images")

    def check(path, *extra):
        cfg = load("configs/tiny_cpu.yaml", [f"run.dir={tmp_path / 'run'}", f"data.path={path}", "data.demo=null",
                                             *extra])
        return preflight(cfg)

    good = ["data.columns.question=problem", "data.columns.answer=solution"]
    assert check(folder, *good) == []
    [problem] = check(folder, "data.columns.question=problme", "data.columns.answer=solution")
    assert problem.startswith("data: data.columns.question: column 'problme' is not in ") and "problem" in problem
    assert "\n" not in problem
    mapped = "data.columns={question: question}"  # the shaping that turns choices into options
    assert check(lines, mapped) == []
    [problem] = check(lines, "data.columns={question: query}")
    assert f"the first {PREVIEW_ROWS} rows of {lines} are all bad" in problem and "'query'" in problem
    # one bad row among good ones: skipped at run time (on_bad_row=skip), a problem when the run would stop on it
    rows = lines.read_text().splitlines()
    rows[1] = rows[1].replace('"answer": 1', '"answer": 1, "reward": "myrewards.py:year"')
    lines.write_text("\n".join(rows) + "\n")
    assert check(lines, mapped) == []
    [problem] = check(lines, mapped, "data.on_bad_row=fail")
    assert problem.startswith(f"data: {lines}: row 2: field 'reward': ") and "myrewards.py:year" in problem


def test_data_split_selects_from_a_dataset_dict_and_must_match_a_dataset(tmp_path):
    from rl.data.loader import DataError

    train = datasets.Dataset.from_dict({"problem": ["What is 1 + 1?"], "solution": ["2"]})
    test = datasets.Dataset.from_dict({"problem": ["What is 2 + 2?", "What is 3 + 3?"], "solution": ["4", "6"]})
    both = datasets.DatasetDict({"train": train, "test": test})
    columns = {"question": "problem", "answer": "solution"}
    rows, _ = load_rows(DataConfig(path="<python data>", columns=columns, split="test"), data=both)
    assert [r.answer for r in rows] == ["4", "6"]
    rows, _ = load_rows(DataConfig(path="<python data>", columns=columns), data=both)  # "train" by default
    assert [r.answer for r in rows] == ["2"]
    with pytest.raises(DataError, match=r"data.split='test': the data set given is one set of rows, of no named"):
        load_rows(DataConfig(path="<python data>", columns=columns, split="test"), data=train)
    with pytest.raises(DataError, match=r"data.split='validation': the data set given has the splits train, test"):
        load_rows(DataConfig(path="<python data>", columns=columns, split="validation"), data=both)
