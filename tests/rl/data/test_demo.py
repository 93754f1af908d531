"""The demo data sets: deterministic for a seed, valid rows, and answers checked against the pixels.

The checks read the images with their own simple vision (colour masks, connected components, grid lines,
glyph templates), not with the generator's code, so a drawing bug cannot hide behind a matching answer.
"""

import filecmp
import json
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest

from model.synthetic import COLORS
from rl.data import load_rows, make_demo_data
from rl.data.demo import available_sets, main

ROWS = 12


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, rows=ROWS, seed=0)
    return out


def rows_of(demo: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (demo / f"{name}.jsonl").read_text().splitlines()]


def pixels(demo: Path, row: dict) -> np.ndarray:
    return np.asarray(PIL.Image.open(demo / row["images"][0]).convert("RGB")).astype(int)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for v, u in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
        out.append(np.array(pts))
    return out


def test_every_demo_row_passes_the_schema(demo):
    rows, report = load_rows(demo, on_bad_row="fail")
    assert report.kept == 4 * ROWS and report.bad == 0
    assert {r.reward for r in rows} == {"number", "choice"}


def test_same_seed_same_files_other_seed_other_files(demo, tmp_path):
    make_demo_data(tmp_path / "again", rows=ROWS, seed=0)
    make_demo_data(tmp_path / "other", rows=ROWS, seed=1)
    for name in ("count_shapes", "chart_values", "digits", "arith"):
        assert (demo / f"{name}.jsonl").read_bytes() == (tmp_path / "again" / f"{name}.jsonl").read_bytes()
        assert (demo / f"{name}.jsonl").read_bytes() != (tmp_path / "other" / f"{name}.jsonl").read_bytes()
    for name in ("count_shapes", "chart_values", "digits"):
        cmp = filecmp.dircmp(demo / "images" / name, tmp_path / "again" / "images" / name)
        assert not cmp.left_only and not cmp.right_only and len(cmp.common) == ROWS
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common, shallow=False)
        assert not mismatch and not errors


def test_count_shapes_answer_is_the_number_of_drawn_circles_of_that_colour(demo):
    answers = set()
    for row in rows_of(demo, "count_shapes"):
        color = re.match(r"How many (\w+) circles", row["question"]).group(1)
        image = pixels(demo, row)
        mask = (image == np.array(COLORS[color])).all(-1)
        circles = 0
        for pts in components(mask):
            h, w = np.ptp(pts, axis=0) + 1
            fill = len(pts) / (h * w)
            assert fill > 0.7 and 0.9 < h / w < 1.1  # a disc (~0.785 of its box) or a square (1.0)
            circles += fill < 0.9
        assert str(circles) == row["answer"], row
        answers.add(circles)
    assert len(answers) > 2  # not a constant answer


def test_chart_values_are_the_measured_bar_heights(demo):
    kinds = set()
    for row in rows_of(demo, "chart_values"):
        image = pixels(demo, row)
        gray = (image.max(-1) == image.min(-1)) & (image[..., 0] > 180) & (image[..., 0] < 230)
        grid_rows = np.nonzero(gray.sum(1) > 60)[0]
        unit = int(np.median(np.diff(grid_rows)))
        colored = image.max(-1) - image.min(-1) > 60  # the bars; text, grid and axes are grey
        columns = np.nonzero(colored.any(0))[0]
        bars = np.split(columns, np.nonzero(np.diff(columns) > 1)[0] + 1)
        heights = [int(colored[:, bar[len(bar) // 2]].sum()) for bar in bars]
        assert all(h % unit == 0 for h in heights), (heights, unit)
        values = [h // unit for h in heights]
        chart = row["meta"]["chart"]
        assert values == chart["values"] and len(set(values)) == 4
        question = row["question"]
        if question.startswith("What is the value of the tallest bar"):
            kinds.add("max")
            assert row["answer"] == str(max(values)) and row["reward"] == "number"
        elif question.startswith("What is the value of the bar labeled"):
            kinds.add("named")
            label = re.search(r"labeled '(\w+)'", question).group(1)
            assert row["answer"] == str(values[chart["labels"].index(label)])
        else:
            kinds.add("argmax")
            options = row["meta"]["options"]
            letter = row["answer"]
            picked = options[string.ascii_uppercase.index(letter)]
            assert row["reward"] == "choice" and f"({letter}) {picked}" in question
            assert picked == chart["labels"][values.index(max(values))]
    assert kinds == {"max", "named", "argmax"}


def glyph(ink: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(ink)
    crop = PIL.Image.fromarray((ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1] * 255).astype(np.uint8))
    return np.asarray(crop.resize((20, 28), PIL.Image.BILINEAR)) > 127


def test_digits_answer_is_the_drawn_digit(demo):
    templates = {}
    for d in range(10):  # the test's own rendering: each digit large, black on white
        canvas = PIL.Image.new("L", (120, 120), 255)
        PIL.ImageDraw.Draw(canvas).text((10, 0), str(d), fill=0, font=PIL.ImageFont.load_default(size=90))
        templates[d] = glyph(np.asarray(canvas) < 128)
    seen = set()
    for row in rows_of(demo, "digits"):
        ink = pixels(demo, row).mean(-1) < 160
        g = glyph(ink)
        scores = {d: (g & t).sum() / (g | t).sum() for d, t in templates.items()}
        assert str(max(scores, key=scores.get)) == row["answer"], (row, scores)
        seen.add(row["answer"])
    assert len(seen) > 3


def test_arith_answers_are_single_digits_and_correct(demo):
    rows = rows_of(demo, "arith")
    for row in rows:
        a, op, b = re.match(r"What is (\d+) ([+-]) (\d+)\?", row["question"]).groups()
        value = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert row["answer"] == str(value) and 0 <= value <= 9 and "images" not in row
    assert {r["question"].split()[3] for r in rows} == {"+", "-"}


@pytest.mark.skipif("easy_vqa" not in available_sets(), reason="the easy-vqa package is not installed")
def test_easy_vqa_rows_come_from_the_package(tmp_path):
    import easy_vqa

    written = make_demo_data(tmp_path, rows=8, seed=0, sets=["easy_vqa"])
    rows, report = load_rows(written["easy_vqa"], on_bad_row="fail")
    texts, answers, _ = easy_vqa.get_train_questions()
    for row in rows:
        k = row.meta["easy_vqa_question"]
        assert row.answer == answers[k] and row.answer in easy_vqa.get_answers()
        assert row.messages[0]["content"][-1]["text"].lower().startswith(texts[k])
        assert row.reward == "exact"


def test_cli_writes_the_sets(tmp_path, capsys):
    main([str(tmp_path / "a"), "--rows", "3", "--seed", "5", "--sets", "arith,count_shapes"])
    assert "arith: 3 rows" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "a").glob("*.jsonl")) == ["arith.jsonl", "count_shapes.jsonl"]
    with pytest.raises(SystemExit):
        main([str(tmp_path / "b"), "--sets", "nope"])
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "rl.data.demo", str(tmp_path / "c"),
                           "--rows", "2", "--sets", "arith"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c" / "arith.jsonl").read_text().count("\n") == 2
