"""bench/hybrid_table.py: its task is what it says (the demonstrations earn the reward in their modes, the auto
demonstrations make the choice with their first token), and its quick run goes through every arm on the real engine."""

import json
import random

import pytest

from bench import hybrid_table, hybrid_task as task
from core.modes import resolve_mode, thinks
from rewards import RewardRunner
from rewards.api import RewardInput


def test_rows_are_half_easy_half_hard_with_the_difficulty_in_the_id_and_fixed_by_the_seed():
    rows = task.rows(40, seed=3)
    assert rows == task.rows(40, seed=3) and rows != task.rows(40, seed=4)
    for r in rows:
        digits = r["meta"]["digits"]
        assert len(digits) in (task.EASY_K if task.difficulty_of(r["id"]) == "easy" else task.HARD_K)
        assert r["answer"] == str(sum(digits) % 10) and r["reward"] == "number"
        assert all(f"{task.LETTERS[i]} {d}" in r["question"] for i, d in enumerate(digits))
    assert sum(task.difficulty_of(r["id"]) == "hard" for r in rows) == 20


def test_the_reasoning_writes_each_running_sum_after_its_terms_letter():
    assert task.reasoning([3, 5, 7]) == "a 3 b 8 c 5"
    assert task.reasoning([9, 9, 9, 9, 9, 9]) == "a 9 b 8 c 7 d 6 e 5 f 4"


@pytest.mark.parametrize("mode,think", [("short", False), ("long", True), ("auto", True), ("auto", False)])
def test_every_demonstration_earns_the_verifier_and_format_reward_in_its_mode(mode, think):
    rng = random.Random(0)
    runner = RewardRunner()
    try:
        for difficulty in ("easy", "hard"):
            digits = task.digits_of(rng, difficulty)
            text = task.demonstration(digits, mode, think)
            assert resolve_mode(text, mode) == ("long" if mode == "long" or think else "short")
            assert thinks(text, mode) == (mode == "long" or think)
            for reward in ("number", "format"):
                sample = RewardInput.make(text, task.answer(digits), mode)
                assert runner.score(reward, [sample])[0].score == 1.0, (reward, text)
            wrong = RewardInput.make(task.demonstration(digits[:-1] + [(digits[-1] + 1) % 10], mode, think),
                                     task.answer(digits), mode)
            assert runner.score("number", [wrong])[0].score == 0.0
    finally:
        runner.close()


def test_auto_demonstrations_choose_with_their_first_token(processor):
    tok = processor.tokenizer
    first = {think: tok(task.demonstration([1, 2, 3], "auto", think), add_special_tokens=False)["input_ids"][0]
             for think in (True, False)}
    assert tok.convert_ids_to_tokens(first[True]) == "<think>" and first[False] != first[True]


def test_token_cost_charges_every_completion_token():
    assert task.token_cost(RewardInput.make("x", None, "short", meta={"completion_tokens": 20})) == pytest.approx(
        -20 * task.TOKEN_COST)


@pytest.mark.vllm
def test_the_quick_run_trains_every_arm_from_one_warm_start_and_reports_the_table(tmp_path):
    result = hybrid_table.run(tmp_path, quick=True)
    json.dumps(result)  # it is printed as JSON
    warm = result["warm_start"]
    assert warm["nll_after"] < warm["nll_before"] - 1.0  # the supervised phase through the learner learns
    assert result["engine_reset_exact"]  # after five arms, the shared engine holds the warm start's weights again
    arms = result["arms"]
    assert list(arms) == list(hybrid_table.ARMS)
    for name, arm in arms.items():
        for mode in hybrid_table.MODES:
            assert set(arm["accuracy"][mode]) == {"easy", "hard", "all"}
            assert all(v is None or 0.0 <= v <= 1.0 for v in arm["accuracy"][mode].values()), name
        assert arm["eval_samples"] == {m: result["sizes"]["eval_rows"] for m in hybrid_table.MODES}
        assert 0.0 <= arm["think_rate"]["easy"] <= 1.0 and 0.0 <= arm["think_rate"]["hard"] <= 1.0
    # the arms differ in what they sample: short-only spends the fewest training tokens, long-only the most
    tokens = {name: arm["train_tokens"] for name, arm in arms.items()}
    assert 0 < tokens["short_only"] < tokens["hybrid_50"] < tokens["long_only"], tokens
    assert arms["short_only"]["long_share"] == 0.0 and arms["long_only"]["long_share"] == 1.0
    assert set(result["checks"]) == {"task_valid", "hybrid_50", "benefit", "auto"}
    assert all(isinstance(c["held"], bool) for c in result["checks"].values())
    assert hybrid_table.plot(result, tmp_path / "table.png").stat().st_size > 10_000
