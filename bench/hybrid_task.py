"""The task of `bench/hybrid_table.py`, fixed before any arm was compared: the last digit of a sum of k digits.

    "Last digit of the sum of a 3, b 5, c 7?"  ->  5

Easy prompts have k in EASY_K, hard ones k in HARD_K. A short answer is the digit alone; a long one first writes the
running sums (mod 10) inside the think block, one per term, each after its term's letter:

    <think>\na 3 b 8 c 5\n</think>\n\n5

The letters are the lookup keys: a reasoning step finds its term by the letter (content, not position), so a
2-layer model can learn the step (copy the term, add it to the previous sum mod 10), while the direct answer needs
the whole sum in one forward pass, which the tiny model gets for two or three terms at best. Thinking helps the
hard half only; that is what the arms are compared on.

Rows are data-set rows of this project (question, answer, reward `number`); their ids say the difficulty
(`easy-...`, `hard-...`), which is how the bench splits its accuracy. `token_cost` is the reward part that charges
for tokens (the auto arm's, which must learn that thinking on an easy prompt costs and earns nothing).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from core.modes import THINK_CLOSE, THINK_OPEN
from rewards.api import RewardInput

EASY_K = (2, 3)
HARD_K = (6, 7)
LETTERS = "abcdefgh"
TOKEN_COST = 0.01
"""Reward charged per completion token by `token_cost` (a think block of a hard prompt is ~20 tokens: -0.2)."""


def digits_of(rng: random.Random, difficulty: str) -> list[int]:
    return [rng.randint(0, 9) for _ in range(rng.choice(EASY_K if difficulty == "easy" else HARD_K))]


def question(digits: list[int]) -> str:
    return "Last digit of the sum of " + ", ".join(f"{LETTERS[i]} {d}" for i, d in enumerate(digits)) + "?"


def answer(digits: list[int]) -> str:
    return str(sum(digits) % 10)


def reasoning(digits: list[int]) -> str:
    """The running sums mod 10, each after its term's letter: "a 3 b 8 c 5"."""
    steps, total = [], 0
    for i, d in enumerate(digits):
        total = (total + d) % 10
        steps.append(f"{LETTERS[i]} {total}")
    return " ".join(steps)


def row(rng: random.Random, difficulty: str, i: int) -> dict:
    digits = digits_of(rng, difficulty)
    return {"id": f"{difficulty}-{i}", "question": question(digits), "answer": answer(digits), "reward": "number",
            "meta": {"digits": digits}}


def rows(n: int, seed: int) -> list[dict]:
    """n rows, half easy and half hard, interleaved; the same (n, seed) gives the same rows."""
    rng = random.Random(seed)
    return [row(rng, ("easy", "hard")[i % 2], i) for i in range(n)]


def write_rows(path: Path, n: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(n, seed)))
    return path


def demonstration(digits: list[int], mode: str, think: bool) -> str:
    """The completion the warm start teaches, after what the chat template pre-fills for `mode`: long mode's
    template ends in "<think>\\n", short mode's in an empty think block, auto mode's in nothing: there the first
    token is the choice (`algo.choice_weight`), the think block opened with the running sums if `think`, else the
    answer at once."""
    if mode == "short" or (mode == "auto" and not think):
        return answer(digits)
    if mode == "long":
        return f"{reasoning(digits)}\n{THINK_CLOSE}\n\n{answer(digits)}"
    return f"{THINK_OPEN}\n{reasoning(digits)}\n{THINK_CLOSE}\n\n{answer(digits)}"


def difficulty_of(row_id: str) -> str:
    return row_id.split("-", 1)[0]


def token_cost(sample: RewardInput) -> float:
    """-TOKEN_COST per completion token: thinking pays only where it buys accuracy."""
    return -TOKEN_COST * float(sample.meta.get("completion_tokens", 0))
