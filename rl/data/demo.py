"""Small demo data sets with verifiable answers, generated locally and deterministically (seeded; no downloads).

    python -m rl.data.demo OUT_DIR [--rows N] [--seed S] [--sets count_shapes,arith | all]

writes OUT_DIR/NAME.jsonl per set and its images under OUT_DIR/images/NAME/ (rows refer to them by relative path).

- count_shapes: "How many red circles are in the picture?": circles and squares of four colours; the answer is
  the number of circles of the asked colour (reward `number`).
- chart_values: a bar chart drawn with PIL (a grid line per unit): the value of the tallest bar or of a named bar
  (`number`), or which bar is highest as a multiple choice (`choice`, the options in `meta`).
- digits: a digit 0-9 drawn with PIL's default font at a random size, place and colour (`number`).
- arith: text only, "What is 3 + 4?", every answer a single digit 0-9 (`number`): a task a tiny random model can
  learn the format and some answers of within minutes.
- moving_shape: a short video (an MPEG-4 file, 2 s at 6 fps) of a circle moving across a plain background: "In
  which direction does the red circle move?" (left, right, up or down; reward `exact`).
- easy_vqa: questions on the easy-VQA images (shapes and colours; answers one word, `exact`), copied from the
  `easy-vqa` package when it is installed (not in the default sets).

Each generator takes its own `random.Random` and returns one row; the same (set, seed, rows) gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import string
import zlib
from pathlib import Path
from typing import Callable

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from model.synthetic import COLORS

# ---------------------------------------------------------------------------------------------------- drawing

SHAPES_SIZE = (224, 224)
SHAPE_RADIUS = 16
"""Circle radius and square half-side, in pixels."""
SHAPE_MIN_DISTANCE = 52
"""Centres at least this far apart (> 2 x the square's half-diagonal plus a gap): shapes never touch."""


def shapes_scene(shapes: list[tuple[str, str]], seed: int, size: tuple[int, int] = SHAPES_SIZE) -> PIL.Image.Image:
    """A white image with the (kind, colour) shapes (kind: circle | square) at random places that never touch."""
    rng = random.Random(seed)
    r = SHAPE_RADIUS
    for _layout in range(100):
        centres: list[tuple[int, int]] = []
        for _ in shapes:
            for _attempt in range(200):
                x, y = rng.randint(r + 2, size[0] - r - 3), rng.randint(r + 2, size[1] - r - 3)
                if all((x - a) ** 2 + (y - b) ** 2 >= SHAPE_MIN_DISTANCE ** 2 for a, b in centres):
                    centres.append((x, y))
                    break
            else:
                break
        if len(centres) == len(shapes):
            break
    else:
        raise RuntimeError(f"cannot place {len(shapes)} shapes in {size} without contact")
    image = PIL.Image.new("RGB", size, (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    for (kind, color), (x, y) in zip(shapes, centres):
        box = (x - r, y - r, x + r, y + r)
        if kind == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif kind == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            raise ValueError(f"shape kind {kind!r}: expected circle or square")
    return image


CHART_SIZE = (240, 200)
CHART_UNIT = 15
"""Pixels per unit of value: bar heights are exact multiples."""
CHART_MAX = 10
CHART_BOTTOM = 170
"""The row of the x axis (value 0); grid line u lies at CHART_BOTTOM - u * CHART_UNIT."""
CHART_LEFT, CHART_RIGHT = 34, 232
GRID_COLOR = (205, 205, 205)
BAR_COLORS = {"blue": (40, 80, 220), "orange": (240, 140, 30), "green": (40, 160, 70), "purple": (130, 60, 180)}
CHART_LABELS = ("apples", "pears", "plums", "kiwis", "limes", "figs", "dates", "grapes")


def font(size: int) -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """PIL's bundled default font at `size` pixels (no font files needed)."""
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return PIL.ImageFont.load_default()


def bar_chart(labels: list[str], values: list[int], color: str = "blue") -> PIL.Image.Image:
    """A bar chart of integer values 0..CHART_MAX: a grey grid line per unit, axis ticks every 2, labels below."""
    image = PIL.Image.new("RGB", CHART_SIZE, (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    small = font(10)
    for u in range(1, CHART_MAX + 1):
        y = CHART_BOTTOM - u * CHART_UNIT
        draw.line((CHART_LEFT, y, CHART_RIGHT, y), fill=GRID_COLOR)
    for u in range(0, CHART_MAX + 1, 2):
        y = CHART_BOTTOM - u * CHART_UNIT
        draw.text((CHART_LEFT - 4, y), str(u), fill=(0, 0, 0), font=small, anchor="rm")
    slot = (CHART_RIGHT - CHART_LEFT) // len(labels)
    width = slot * 3 // 5
    for k, (label, value) in enumerate(zip(labels, values)):
        x0 = CHART_LEFT + k * slot + (slot - width) // 2
        if value > 0:  # rows CHART_BOTTOM - value * UNIT .. CHART_BOTTOM - 1: exactly value * UNIT pixels
            draw.rectangle((x0, CHART_BOTTOM - value * CHART_UNIT, x0 + width - 1, CHART_BOTTOM - 1),
                           fill=BAR_COLORS[color])
        draw.text((x0 + width / 2, CHART_BOTTOM + 6), label, fill=(0, 0, 0), font=small, anchor="mt")
    draw.line((CHART_LEFT, CHART_BOTTOM, CHART_RIGHT, CHART_BOTTOM), fill=(0, 0, 0))
    draw.line((CHART_LEFT, CHART_BOTTOM, CHART_LEFT, CHART_BOTTOM - CHART_MAX * CHART_UNIT - 4), fill=(0, 0, 0))
    return image


DIGIT_SIZE = (96, 96)


def digit_image(digit: int, rng: random.Random) -> PIL.Image.Image:
    """One digit in PIL's default font: random size (40-72 px), place, dark ink on a light background."""
    background = tuple(rng.randint(225, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 90) for _ in range(3))
    image = PIL.Image.new("RGB", DIGIT_SIZE, background)
    draw = PIL.ImageDraw.Draw(image)
    face = font(rng.randint(40, 72))
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=face)
    x = rng.randint(2 - left, max(2 - left, DIGIT_SIZE[0] - 3 - right))
    y = rng.randint(2 - top, max(2 - top, DIGIT_SIZE[1] - 3 - bottom))
    draw.text((x, y), str(digit), fill=ink, font=face)
    return image


# ---------------------------------------------------------------------------------------------------- the sets

Generator = Callable[[random.Random, int, Path, str], dict]
"""(rng, index, image folder, its path relative to the JSONL) -> one row."""


def count_shapes(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """Count the circles of one colour among circles and squares of four colours (answer 1-5)."""
    color = rng.choice(sorted(COLORS))
    n = rng.randint(1, 5)
    shapes = [("circle", color)] * n
    for _ in range(rng.randint(0, 3)):  # distractors: another colour, or a square of the same colour
        kind = rng.choice(("circle", "square"))
        others = [c for c in sorted(COLORS) if c != color or kind == "square"]
        shapes.append((kind, rng.choice(others)))
    rng.shuffle(shapes)
    name = f"{i:05d}.png"
    shapes_scene(shapes, seed=rng.randrange(2**31)).save(image_dir / name)
    return {"id": f"count_shapes-{i}", "images": [f"{rel}/{name}"],
            "question": f"How many {color} circles are in the picture? Answer with a number.",
            "answer": str(n), "reward": "number"}


MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = 96, 12, 6


def moving_shape(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """A circle of one colour crossing a 96 px frame in one of four directions over 12 frames (a video file)."""
    from model.video import write_video

    direction, color = rng.choice(sorted(MOVES)), rng.choice(sorted(COLORS))
    dx, dy = MOVES[direction]
    r, span = 10, VIDEO_SIZE - 2 * 14
    cross = rng.randint(20, VIDEO_SIZE - 20)  # where on the other axis it travels
    frames = []
    for k in range(VIDEO_FRAMES):
        along = 14 + span * k // (VIDEO_FRAMES - 1)
        along = along if dx + dy > 0 else VIDEO_SIZE - along
        x, y = (along, cross) if dx else (cross, along)
        frame = PIL.Image.new("RGB", (VIDEO_SIZE, VIDEO_SIZE), (235, 235, 235))
        PIL.ImageDraw.Draw(frame).ellipse((x - r, y - r, x + r, y + r), fill=COLORS[color])
        frames.append(frame)
    name = f"{i:05d}.mp4"
    write_video(image_dir / name, frames, VIDEO_FPS)
    return {"id": f"moving_shape-{i}", "videos": [f"{rel}/{name}"],
            "question": f"In which direction does the {color} circle move? Answer with one word: left, right, up or "
                        "down.", "answer": direction, "reward": "exact"}


def chart_values(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """A bar chart of 4 distinct values 1-10; asks the tallest value, a named bar's value, or which is highest."""
    labels = rng.sample(CHART_LABELS, 4)
    values = rng.sample(range(1, CHART_MAX + 1), 4)
    name = f"{i:05d}.png"
    bar_chart(labels, values, rng.choice(sorted(BAR_COLORS))).save(image_dir / name)
    row = {"id": f"chart_values-{i}", "images": [f"{rel}/{name}"]}
    meta = {"chart": {"labels": labels, "values": values}}  # the truth, for checks; the choice reward ignores it
    kind = rng.choice(("max", "named", "argmax"))
    top = labels[values.index(max(values))]
    if kind == "max":
        row.update(question="What is the value of the tallest bar? Answer with a number.", answer=str(max(values)),
                   reward="number")
    elif kind == "named":
        k = rng.randrange(4)
        row.update(question=f"What is the value of the bar labeled '{labels[k]}'? Answer with a number.",
                   answer=str(values[k]), reward="number")
    else:
        options = rng.sample(labels, 4)
        listed = " ".join(f"({string.ascii_uppercase[k]}) {o}" for k, o in enumerate(options))
        row.update(question=f"Which bar is highest? {listed}. Answer with the letter.",
                   answer=string.ascii_uppercase[options.index(top)], reward="choice")
        meta["options"] = options
    row["meta"] = meta
    return row


def digits(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """Read one drawn digit (answer 0-9)."""
    d = rng.randrange(10)
    name = f"{i:05d}.png"
    digit_image(d, rng).save(image_dir / name)
    return {"id": f"digits-{i}", "images": [f"{rel}/{name}"],
            "question": "Which digit is shown in the picture? Answer with the digit.", "answer": str(d),
            "reward": "number"}


def arith(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """Text only: a + b or a - b with a one-digit result (answer 0-9)."""
    if rng.random() < 0.5:
        a = rng.randint(0, 9)
        b = rng.randint(0, 9 - a)
        question, answer = f"What is {a} + {b}?", a + b
    else:
        a = rng.randint(0, 9)
        b = rng.randint(0, a)
        question, answer = f"What is {a} - {b}?", a - b
    return {"id": f"arith-{i}", "question": f"{question} Answer with a number.", "answer": str(answer),
            "reward": "number"}


def easy_vqa(rng: random.Random, i: int, image_dir: Path, rel: str) -> dict:
    """A question of the easy-VQA training set (package `easy-vqa`), its image copied (answers: one word)."""
    texts, answers, image_ids = _easy_vqa_train()
    k = rng.randrange(len(texts))
    name = f"{image_ids[k]}.png"
    if not (image_dir / name).is_file():
        shutil.copyfile(_easy_vqa_images()[image_ids[k]], image_dir / name)
    question = texts[k][0].upper() + texts[k][1:]
    return {"id": f"easy_vqa-{i}", "images": [f"{rel}/{name}"], "question": f"{question} Answer with one word.",
            "answer": answers[k], "reward": "exact", "meta": {"easy_vqa_question": k}}


_EASY_VQA: dict[str, object] = {}


def _easy_vqa_train():
    if "train" not in _EASY_VQA:
        try:
            import easy_vqa as package
        except ImportError:
            raise RuntimeError("the easy_vqa demo set needs the package: pip install easy-vqa==1.0") from None
        _EASY_VQA["train"] = package.get_train_questions()
        _EASY_VQA["images"] = package.get_train_image_paths()
    return _EASY_VQA["train"]


def _easy_vqa_images():
    _easy_vqa_train()
    return _EASY_VQA["images"]


DEMO_SETS: dict[str, Generator] = {"count_shapes": count_shapes, "chart_values": chart_values, "digits": digits,
                                   "arith": arith, "moving_shape": moving_shape, "easy_vqa": easy_vqa}
DEFAULT_SETS: tuple[str, ...] = ("count_shapes", "chart_values", "digits", "arith")
"""Generated from nothing; `easy_vqa` needs its package, and `moving_shape` (video rows, which training refuses until
the rollout engine samples video as the learner computes it: issue 15) is made only when named (or with "all")."""


def available_sets() -> list[str]:
    """The demo sets that can be made here (easy_vqa only when its package is installed)."""
    try:
        import easy_vqa as _  # noqa: F401
        extra = ["easy_vqa"]
    except ImportError:
        extra = []
    return list(DEFAULT_SETS) + ["moving_shape"] + extra


def demo_rows(name: str, rows: int, seed: int, image_dir: Path, rel: str = "images") -> list[dict]:
    """The rows of a demo set (its images written to `image_dir`, named in the rows as `rel/FILE`)."""
    if name not in DEMO_SETS:
        raise ValueError(f"demo set {name!r}: expected one of {', '.join(DEMO_SETS)}")
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(zlib.crc32(name.encode()) * 1_000_003 + seed)  # each set its own stream
    return [DEMO_SETS[name](rng, i, image_dir, rel) for i in range(rows)]


def write_demo(name: str, path: str | Path, rows: int = 256, seed: int = 0) -> Path:
    """Write demo set `name` to the JSONL file `path`, its images to `path`'s folder / images / name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = demo_rows(name, rows, seed, path.parent / "images" / name, f"images/{name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in lines))
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def make_demo_data(out_dir: str | Path, rows: int = 64, seed: int = 0,
                   sets: list[str] | tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write each demo set (default: DEFAULT_SETS) to OUT_DIR/NAME.jsonl with images under OUT_DIR/images/NAME."""
    out_dir = Path(out_dir)
    return {name: write_demo(name, out_dir / f"{name}.jsonl", rows, seed) for name in (sets or DEFAULT_SETS)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rl.data.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--rows", type=int, default=64, help="rows per set (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                        help=f"comma-separated, or 'all' (available here: {', '.join(available_sets())})")
    args = parser.parse_args(argv)
    sets = available_sets() if args.sets == "all" else [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in DEMO_SETS]
    if unknown:
        parser.error(f"unknown set {unknown[0]!r}; expected some of {', '.join(DEMO_SETS)}")
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    try:
        written = make_demo_data(args.out_dir, args.rows, args.seed, sets)
    except RuntimeError as e:
        parser.error(str(e))
    for name, path in written.items():
        print(f"{name}: {args.rows} rows -> {path}")


if __name__ == "__main__":
    main()
