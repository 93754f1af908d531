"""The `math` verifier against a labelled equivalence set: data/math_equivalence.jsonl.

Each row is one (gold, prediction, equal) triple with its `category` and, where the label depends on an option, the
`options` of the `math` verifier it holds under (else the defaults); `note` says why when it is not obvious. The
prediction is scored as a short-mode final answer, so extraction is exercised too. The labels are what a careful
grader of MATH / GSM8K / AIME answers accepts; the contested conventions (percentages, units, number words, the
tolerance for decimals) are REWARDS.md's (section 2, `math`). The bar: >= 98% agreement and no false positive (a row
labelled not-equal scored as equal). Print the report with `python -m tests.rewards.test_math_equivalence`.
"""

import collections
import dataclasses
import json
import pathlib

import pytest

from rewards.api import RewardInput
from rewards.math import MathConfig, math_reward

DATA = pathlib.Path(__file__).parent / "data" / "math_equivalence.jsonl"
MIN_ACCURACY = 0.98
STYLES = ("fraction", "decimal", "tolerance", "percent", "units", "degrees", "interval", "set_tuple", "multiple",
          "matrix", "complex", "scientific", "latex", "words", "sqrt", "pi", "equation", "negative", "thousands",
          "symbolic", "integer")


def load() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(row: dict) -> bool | str:
    """True/False: whether `math` scored the prediction equal; a string: the error it raised."""
    config = MathConfig(**row.get("options", {}))
    try:
        return math_reward(RewardInput.make(row["prediction"], row["gold"], "short"), config=config) == config.correct
    except Exception as e:  # noqa: BLE001 - an error is a miss, reported with its message
        return f"{type(e).__name__}: {e}"


def evaluate(rows: list[dict]) -> tuple[float, list[str], list[str]]:
    """(accuracy, one line per miss, the false positives among them)."""
    misses, false_positives = [], []
    for i, row in enumerate(rows, 1):
        got = score(row)
        if got is row["equal"]:
            continue
        line = (f"line {i} [{row['category']}] gold {row['gold']!r}, prediction {row['prediction']!r}: "
                f"labelled {row['equal']}, scored {got}" + (f" (options {row['options']})" if "options" in row else ""))
        misses.append(line)
        if got is True:
            false_positives.append(line)
    return 1 - len(misses) / len(rows), misses, false_positives


def report(rows: list[dict]) -> str:
    accuracy, misses, false_positives = evaluate(rows)
    lines = [f"math equivalence: {len(rows) - len(misses)}/{len(rows)} = {accuracy:.1%}, "
             f"{len(false_positives)} false positives, {len(misses)} misses"]
    return "\n".join(lines + [f"  miss: {m}" for m in misses])


@pytest.fixture(scope="module")
def rows():
    return load()


def test_the_set_covers_the_answer_styles(rows):
    assert len(rows) >= 200
    fields = {f.name for f in dataclasses.fields(MathConfig)}
    for row in rows:
        assert isinstance(row["gold"], str) and isinstance(row["prediction"], str) and isinstance(row["equal"], bool)
        assert set(row) <= {"category", "gold", "prediction", "equal", "options", "note"}, row
        assert set(row.get("options", {})) <= fields, row
    by_style = collections.Counter((row["category"], row["equal"]) for row in rows)
    for style in STYLES:  # positives and near-miss negatives for each style
        assert by_style[style, True] >= 2 and by_style[style, False] >= 1, style
    assert sum(not row["equal"] for row in rows) / len(rows) >= 0.3


def test_rounded_decimals_need_a_tolerance(rows):
    """The same pairs appear with the default (exact: not equal) and with a tolerance configured (equal)."""
    exact = {(r["gold"], r["prediction"]) for r in rows if "options" not in r and not r["equal"]}
    tolerant = {(r["gold"], r["prediction"]) for r in rows if r.get("options") == {"rel_tol": 1e-4} and r["equal"]}
    assert len(exact & tolerant) >= 5
    for gold, prediction in exact & tolerant:
        row = RewardInput.make(prediction, gold, "short")
        assert math_reward(row) == 0.0, (gold, prediction)
        assert math_reward(row, config=MathConfig(rel_tol=1e-4)) == 1.0, (gold, prediction)


def test_math_verifier_accuracy_on_the_set(rows):
    accuracy, misses, false_positives = evaluate(rows)
    print(report(rows))  # shown with -s; the assertion messages carry the same lines
    assert not false_positives, "\n".join(false_positives)
    assert accuracy >= MIN_ACCURACY, report(rows)


if __name__ == "__main__":
    print(report(load()))
