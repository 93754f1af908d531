"""The row schema: every bad row is named by file, row and field; skip-and-count or fail."""

import json

import pytest

from rl.data import DataConfig, PromptDataset, RowError, load_rows
from rl.data.schema import FIELDS, RowSchema

from .conftest import write_jsonl

GOOD = {"id": "ok", "question": "What is 1 + 1?", "answer": "2", "reward": "number"}

# (line 2 of the file, the field the error must name, a fragment of the problem)
BAD_ROWS = {
    "malformed_json": ('{"question": "What?", "answer": ', None, "not valid JSON"),
    "not_an_object": ('["question", "answer"]', None, "expected a JSON object"),
    "missing_answer": ({"question": "What?"}, "answer", "missing"),
    "null_answer": ({"question": "What?", "answer": None}, "answer", "missing"),
    "empty_answer": ({"question": "What?", "answer": "  "}, "answer", "empty"),
    "bool_answer": ({"question": "What?", "answer": True}, "answer", "string or a number"),
    "both": ({"question": "What?", "messages": [{"role": "user", "content": "What?"}], "answer": "1"},
             "question", "not both"),
    "neither": ({"answer": "1"}, "question", "missing"),
    "nul_question": ({"question": "What\x00?", "answer": "1"}, "question", "NUL character"),
    "nul_message": ({"messages": [{"role": "user", "content": "What\x00?"}], "answer": "1"}, "messages[0].content",
                    "NUL character"),
    "nul_text_part": ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\x00"}]}], "answer": "1"},
                      "messages[0].content[0].text", "NUL character"),
    "empty_question": ({"question": " ", "answer": "1"}, "question", "non-empty string"),
    "unknown_reward": ({"question": "What?", "answer": "1", "reward": "nonsense"}, "reward", "not a reward"),
    "path_reward": ({"question": "What?", "answer": "1", "reward": "os:system"}, "reward", "not a reward"),
    "bad_mode": ({"question": "What?", "answer": "1", "mode": "medium"}, "mode", "'medium'"),
    "unknown_field": ({"question": "What?", "answer": "1", "anwser": "1"}, "anwser", "unknown field"),
    "meta_not_object": ({"question": "What?", "answer": "1", "meta": [1]}, "meta", "expected an object"),
    "images_not_list": ({"question": "What?", "answer": "1", "images": "img/good.png"}, "images", "expected a list"),
    "missing_image": ({"question": "What?", "answer": "1", "images": ["img/nope.png"]}, "images[0]",
                      "file not found"),
    "empty_image": ({"question": "What?", "answer": "1", "images": ["img/good.png", "img/empty.png"]}, "images[1]",
                    "0 bytes"),
    "corrupt_image": ({"question": "What?", "answer": "1", "images": ["img/corrupt.png"]}, "images[0]",
                      "cannot decode"),
    "http_url": ({"question": "What?", "answer": "1", "images": ["https://example.com/cat.png"]}, "images[0]",
                 "only local files"),
    "s3_url": ({"question": "What?", "answer": "1", "images": ["s3://bucket/cat.png"]}, "images[0]",
               "only local files"),
    "remote_file_url": ({"question": "What?", "answer": "1", "images": ["file://otherhost/cat.png"]}, "images[0]",
                        "another host"),
    "corrupt_image_in_messages": (
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "img/corrupt.png"},
                                                   {"type": "text", "text": "What?"}]}], "answer": "1"},
        "messages[0].content[0].image", "cannot decode"),
    "bad_part_type": ({"messages": [{"role": "user", "content": [{"type": "audio"}]}], "answer": "1"},
                      "messages[0].content[0].type", "'audio'"),
    "bad_role": ({"messages": [{"role": "robot", "content": "hi"}], "answer": "1"}, "messages[0].role", "'robot'"),
    "last_not_user": ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                       "answer": "1"}, "messages[1].role", "must be 'user'"),
    "placeholders_mismatch": (
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                   {"type": "text", "text": "?"}]}],
         "images": ["img/good.png"], "answer": "1"}, "messages[0].content[1].image", "only 1 images"),
    "not_a_number": ({"question": "What?", "answer": "many", "reward": "number"}, "answer", "not a number"),
    "choice_not_an_option": ({"question": "Which?", "answer": "E", "reward": "choice",
                              "meta": {"options": ["cat", "dog"]}}, "answer", "names no single option"),
    "duplicate_id": ({"id": "ok", "question": "Again?", "answer": "1"}, "id", "already the id of"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_named_by_file_row_and_field(tmp_path, images, case):
    line, field, problem = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, line, dict(GOOD, id="after")])
    rows, report = load_rows(path)
    assert [r.id for r in rows] == ["ok", "after"]  # the bad row is skipped, the others kept
    assert (report.read, report.kept, report.bad) == (3, 2, 1)
    prefix = f"{path}: row 2: " + (f"field {field!r}: " if field else "")
    assert report.errors[0].startswith(prefix), report.errors[0]
    assert problem in report.errors[0], report.errors[0]
    with pytest.raises(RowError) as info:  # on_bad_row=fail: the same error stops the load
        load_rows(path, on_bad_row="fail")
    assert str(info.value) == report.errors[0]
    assert (info.value.source, info.value.row, info.value.field) == (str(path), 2, field)


def test_row_numbers_are_file_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "", "   ", {"question": "q"}])
    _, report = load_rows(path)
    assert report.errors == [f"{path}: row 4: field 'answer': missing (every row needs the reference answer)"]
    assert report.read == 2  # blank lines are not rows


def test_invalid_utf8_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"question": "\xff", "answer": "1"}\n')
    rows, report = load_rows(path)
    assert len(rows) == 1 and report.errors[0].startswith(f"{path}: row 2: not valid UTF-8")


def test_skip_counts_every_bad_row_and_keeps_the_first_messages(tmp_path):
    lines = [dict(GOOD, id=f"g{i}") for i in range(3)] + [{"question": f"q{i}"} for i in range(30)]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    rows, report = load_rows(path, max_errors=5)
    assert (report.kept, report.bad, len(report.errors)) == (3, 30, 5)
    assert report.errors[0].startswith(f"{path}: row 4: field 'answer'")
    assert "3 kept, 30 bad" in report.summary() and "(+25 more)" in report.summary()


def test_fail_stops_at_the_first_bad_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"question": "q", "answer": "1", "mode": "x"}, "{bad"])
    with pytest.raises(RowError, match=r"row 2: field 'mode'"):
        load_rows(path, on_bad_row="fail")


def test_good_rows_build_messages(tmp_path, images):
    url = images["good"].resolve().as_uri()  # file:///.../img/good.png
    lines = [
        {"question": "Two?", "images": ["img/good.png", url], "answer": 2, "mode": "long", "meta": {"k": 1}},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
         "images": ["img/good.png"], "answer": "red", "reward": "exact"},
        {"messages": [{"role": "user", "content": "Color?"}], "images": ["img/good.png"], "answer": 2.0},
        {"question": "Pick.", "answer": "dog", "reward": "choice", "meta": {"options": ["cat", "dog"]}},
        {"question": "Any of", "answer": ["a", "b"], "reward": "exact"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    rows, report = load_rows(path, on_bad_row="fail")
    good = str(images["good"])
    r0, r1, r2, r3, r4 = rows
    assert r0.id == "d.jsonl:1" and r0.answer == "2" and r0.mode == "long" and r0.reward == "math"
    assert r0.messages == [{"role": "user", "content": [{"type": "image", "image": good},
                                                        {"type": "image", "image": good},
                                                        {"type": "text", "text": "Two?"}]}]
    assert r0.image_fields == ["images[0]", "images[1]"] and r0.meta == {"k": 1}
    assert r1.messages[1]["content"][0] == {"type": "image", "image": good}  # the placeholder is filled
    assert r2.answer == "2" and r2.messages[0]["content"][0] == {"type": "image", "image": good}  # put first
    assert r2.messages[0]["content"][1] == {"type": "text", "text": "Color?"}
    assert r3.reward == "choice" and r4.answer == ["a", "b"]
    assert r1.mode is None and report.bad == 0


def test_media_placeholders_in_the_text_mark_where_each_goes(tmp_path, images, processor):
    """Hub geometry3k writes `<image>` in its text: the image goes there, and the prompt holds one image, not two."""
    good = str(images["good"])
    lines = [{"question": "<image>Find x.", "images": ["img/good.png"], "answer": "3"},
             {"question": "Left <image> and right <image>: which is larger?", "images": ["img/good.png"] * 2,
              "answer": "left", "reward": "exact"},
             {"question": "<image><image> Two placeholders, one image.", "images": ["img/good.png"], "answer": "1"}]
    rows, report = load_rows(write_jsonl(tmp_path / "g.jsonl", lines))
    assert rows[0].messages == [{"role": "user", "content": [{"type": "image", "image": good},
                                                             {"type": "text", "text": "Find x."}]}]
    assert [p.get("text", p["type"]) for p in rows[1].messages[0]["content"]] == [
        "Left", "image", "and right", "image", ": which is larger?"]
    assert report.bad == 1 and "row 3: field 'question': 2 <image> placeholder(s) in the text for 1 image(s)" in \
        report.errors[0]
    prompt = processor(rows[0].messages, "short")
    assert prompt.text.count("<image>") == 1 and "<image>Find" not in prompt.text  # the literal text is gone


def test_default_reward_and_allowed_rewards(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "1"},
                                              {"question": "q", "answer": "1", "reward": "format"}])
    rows, report = load_rows(path, default_reward="number")
    assert rows[0].reward == "number" and "field 'reward'" in report.errors[0]
    rows, report = load_rows(path, allowed_rewards=["math", "format"])  # another reward, listed by the config
    assert [r.reward for r in rows] == ["math", "format"]
    with pytest.raises(ValueError, match="data.default_reward"):
        load_rows(path, default_reward="nonsense")


def test_schema_dataclass_documents_every_field():
    assert set(FIELDS) == {"id", "question", "messages", "images", "videos", "answer", "reward", "mode", "meta"}
    assert RowSchema.__doc__


def test_lazy_image_check_skips_and_counts_when_drawn(tmp_path, images):
    lines = [dict(GOOD, id="a", images=["img/good.png"]), dict(GOOD, id="b", images=["img/corrupt.png"]),
             dict(GOOD, id="c", images=["img/empty.png"])]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    rows, report = load_rows(path, check_images="lazy")  # exists and non-empty now; decoded later
    assert [r.id for r in rows] == ["a", "b"] and "0 bytes" in report.errors[0]
    data = PromptDataset(rows, report, shuffle=False)
    assert [r.id for r in data.take(3)] == ["a", "a", "a"]  # b is skipped when first drawn
    assert data.bad_rows == 2
    assert data.errors[1].startswith(f"{path}: row 2: field 'images[0]': cannot decode image")
    resumed = PromptDataset(rows, report, shuffle=False)
    resumed.load_state_dict(json.loads(json.dumps(data.state_dict())))
    assert resumed.bad_rows == 2
    strict = PromptDataset(rows, report, shuffle=False, on_bad_row="fail")
    with pytest.raises(RowError, match="row 2: field 'images\\[0\\]'"):
        strict.take(2)


def test_config_is_checked():
    for bad in ({"on_bad_row": "ignore"}, {"check_images": "never"}, {"path": ""}):
        with pytest.raises(ValueError):
            DataConfig(**{"path": "x.jsonl", **bad}).validate()


TEMPLATE = "{question}\nPut the final answer in \\boxed{}."  # EasyR1's geometry3k format prompt, shortened


def test_a_prompt_template_and_a_system_prompt_shape_every_row(tmp_path, images, tiny_ckpt):
    """data.prompt_template writes each row's user text around its question (other braces kept); data.system_prompt
    goes first unless a row has its own system message; the processor renders both (the text vLLM is given)."""
    from model.processor import Processor

    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"question": "How many? <image>", "answer": "1", "images": ["img/good.png"]},
        {"messages": [{"role": "system", "content": "Mine."},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}],
         "images": ["img/good.png"], "answer": "2"},
        {"messages": [{"role": "user", "content": "Plain?"}], "answer": "3"}])
    rows, report = load_rows(DataConfig(path=str(path), prompt_template=TEMPLATE, system_prompt="Be brief."))
    assert report.bad == 0, report.errors
    first, second, third = (r.messages for r in rows)
    assert first[0] == {"role": "system", "content": "Be brief."}
    assert [p["type"] for p in first[1]["content"]] == ["text", "image", "text"]  # the image where <image> was
    assert first[1]["content"][0]["text"] == "How many?"
    assert first[1]["content"][2]["text"] == "Put the final answer in \\boxed{}."
    assert second[0] == {"role": "system", "content": "Mine."}  # the row's own system message is kept
    assert second[1]["content"][1] == {"type": "text", "text": "Which?\nPut the final answer in \\boxed{}."}
    assert third == [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Plain?\nPut the final answer in \\boxed{}."}]
    text = Processor.from_pretrained(tiny_ckpt).render(third, "short")
    assert text.index("Be brief.") < text.index("Plain?\nPut the final answer in \\boxed{}.")
    plain, _ = load_rows(DataConfig(path=str(path)))
    assert plain[2].messages == [{"role": "user", "content": "Plain?"}]


def test_a_prompt_template_without_the_question_is_a_config_error():
    from rl.config import ConfigError, load

    with pytest.raises(ConfigError, match=r"data\.prompt_template=.*must contain \{question\} once"):
        load("configs/tiny_cpu.yaml", ["data.prompt_template=Answer briefly."])


def test_a_row_cannot_name_code(tmp_path):
    """A row naming a file or module as its reward is a bad row, and the file is never imported (it would leave a
    marker); no config can open the list to any spec."""
    from rl.config import ConfigError, load

    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.py"
    hostile.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n\n"
                       "def reward(sample):\n    return 1.0\n")
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "1", "reward": f"{hostile}:reward"},
                                              {"question": "q", "answer": "1", "reward": "os:system"},
                                              {"question": "q", "answer": "1"}])
    rows, report = load_rows(path)
    assert [r.row for r in rows] == [3] and report.bad == 2
    assert f"field 'reward': '{hostile}:reward' is not a reward rows may name" in report.errors[0]
    assert not marker.exists()
    with pytest.raises(ConfigError, match=r"data\.allowed_rewards: null would let each row name any module or file"):
        load("configs/tiny_cpu.yaml", ["data.allowed_rewards=null"])
