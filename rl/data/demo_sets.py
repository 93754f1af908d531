"""Small demo data sets with verifiable answers, generated locally and deterministically (no downloads).

    python -m rl.data.demo_sets NAME OUT.jsonl [--rows N] [--seed S]

count_shapes: "How many <color> circles are in the picture?" over drawn images (answer: the count, `number`).
arith: "What is a + b?" with a one-digit sum (answer: the sum, `number`); text only.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from model.synthetic import COLORS, shapes_image


def count_shapes(rng: random.Random, i: int, image_dir: Path) -> dict:
    n, color = rng.randint(1, 6), rng.choice(sorted(COLORS))
    name = f"shapes_{i:05d}.png"
    shapes_image(n, size=(224, 224), color=color, seed=rng.randrange(2**31)).save(image_dir / name)
    return {"id": f"count_shapes-{i}", "images": [f"images/{name}"],
            "question": f"How many {color} circles are in the picture? Answer with a number.",
            "answer": str(n), "reward": "number"}


def arith(rng: random.Random, i: int, image_dir: Path) -> dict:
    a = rng.randint(0, 9)
    b = rng.randint(0, 9 - a)
    return {"id": f"arith-{i}", "question": f"What is {a} + {b}? Answer with a number.", "answer": str(a + b),
            "reward": "number"}


DEMOS = {"count_shapes": count_shapes, "arith": arith}


def write_demo(name: str, out: str | Path, rows: int = 256, seed: int = 0) -> Path:
    if name not in DEMOS:
        raise ValueError(f"demo={name!r}: expected one of {sorted(DEMOS)}")
    out = Path(out)
    image_dir = out.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = [json.dumps(DEMOS[name](rng, i, image_dir)) for i in range(rows)]
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(DEMOS))
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_demo(args.name, args.out, args.rows, args.seed))


if __name__ == "__main__":
    main()
