"""Hand-labelled cases for every built-in other than `math` (positives and negatives)."""

import math
import re

import pytest
import torch

from rewards import VERIFIERS, check_reference
from rewards.acc import AccConfig, acc_reward
from rewards.choice import ChoiceConfig, choice_reward
from rewards.format import FormatConfig, format_reward
from rewards.overlong import OverlongConfig, overlong_reward, soft_overlong
from rewards.prob import ProbConfig, prob_query, prob_reward, prob_reward_row, prob_rewards
from rewards.repetition import RepetitionConfig, max_window_count, repetition_reward, words_of
from rewards.reward_model import OverlapScorer, RewardModelConfig, group_znorm, reward_model
from rewards.text import NumberConfig, RegexConfig, exact_reward, number_reward, parse_number, regex_reward

OPTS = {"options": ["3 cm", "4 cm", "5 cm", "6 cm"]}


# ---------------------------------------------------------------------------------------------------- choice
@pytest.mark.parametrize("answer, reference, meta, expected", [
    ("B", "B", OPTS, 1.0),
    ("(B)", "B", OPTS, 1.0),
    ("The answer is (B).", "B", OPTS, 1.0),
    ("\\boxed{B}", "(B)", OPTS, 1.0),
    ("B. 4 cm", "B", OPTS, 1.0),
    ("B, because the side is 4.", "B", OPTS, 1.0),
    ("I pick option B", "B", OPTS, 1.0),
    ("4 cm", "B", OPTS, 1.0),  # the option's text
    ("The answer is 4 cm.", "B", OPTS, 1.0),
    ("b", "B", OPTS, 1.0),
    ("B", "4 cm", OPTS, 1.0),  # a reference given as the option's text
    ("\\boxed{D}", "D", {}, 1.0),  # no options: letters A-J
    ("C", "B", OPTS, 0.0),
    ("5 cm", "B", OPTS, 0.0),
    ("A or B", "B", OPTS, 0.0),  # hedging over two options
    ("(A) (B)", "B", OPTS, 0.0),
    ("I am not sure", "B", OPTS, 0.0),
    ("", "B", OPTS, 0.0),
    ("E", "D", OPTS, 0.0),  # not an option of this question
])
def test_choice(mk, answer, reference, meta, expected):
    assert choice_reward(mk(answer, reference, "short", meta)) == expected


def test_choice_long_mode_reads_only_the_answer(mk):
    assert choice_reward(mk("Maybe (A)? No.</think>\n\n(B)", "B", "long", OPTS)) == 1.0
    assert choice_reward(mk("Clearly (B).</think>\n\n(A)", "B", "long", OPTS)) == 0.0


def test_choice_options_as_dict_and_bad_reference(mk):
    meta = {"options": {"X": "yes", "Y": "no"}}
    assert choice_reward(mk("Y", "Y", "short", meta)) == 1.0
    assert choice_reward(mk("no", "Y", "short", meta)) == 1.0
    assert choice_reward(mk("B", None, "short", OPTS)) is None
    with pytest.raises(ValueError, match="names no single option"):
        choice_reward(mk("B", "7 cm", "short", OPTS))
    with pytest.raises(ValueError, match="names no single option"):
        choice_reward(mk("E", "E", "short", OPTS))
    assert choice_reward(mk("B", "B", "short", OPTS), config=ChoiceConfig(incorrect=-1.0)) == 1.0


# ------------------------------------------------------------------------------------------- exact / regex
@pytest.mark.parametrize("answer, reference, expected", [
    ("Paris", "paris", 1.0),
    ("  Paris. ", "Paris", 1.0),
    ("\\boxed{Paris}", "Paris", 1.0),
    ("The answer is Paris.", "Paris", 1.0),
    ("new   york", "New York", 1.0),
    ("Paris", ["Lyon", "Paris"], 1.0),
    ("Paris, France", "Paris", 0.0),
    ("London", "Paris", 0.0),
    ("", "Paris", 0.0),
])
def test_exact(mk, answer, reference, expected):
    assert exact_reward(mk(answer, reference, "short")) == expected


def test_exact_case_sensitive_and_no_reference(mk):
    from rewards.text import ExactConfig

    assert exact_reward(mk("paris", "Paris"), config=ExactConfig(case_sensitive=True)) == 0.0
    assert exact_reward(mk("Paris")) is None


@pytest.mark.parametrize("answer, pattern, config, expected", [
    ("2024-05-17", r"\d{4}-\d{2}-\d{2}", RegexConfig(), 1.0),
    ("on 2024-05-17", r"\d{4}-\d{2}-\d{2}", RegexConfig(), 0.0),  # fullmatch by default
    ("on 2024-05-17", r"\d{4}-\d{2}-\d{2}", RegexConfig(fullmatch=False), 1.0),
    ("YES", r"yes", RegexConfig(), 1.0),
    ("YES", r"yes", RegexConfig(ignore_case=False), 0.0),
    ("no", r"yes|yeah", RegexConfig(), 0.0),
])
def test_regex(mk, answer, pattern, config, expected):
    assert regex_reward(mk(answer, None, "short", {"pattern": pattern}), config=config) == expected


def test_regex_reference_as_pattern(mk):
    assert regex_reward(mk("abc", "a.c", "short")) == 1.0
    assert regex_reward(mk("abc")) is None


# --------------------------------------------------------------------------------------------------- number
@pytest.mark.parametrize("text, values", [
    ("42", [42]), ("-1,234.5", [-1234.5]), ("3/4", [0.75]), ("\\frac{3}{4}", [0.75]), ("1.5e3", [1500]),
    ("1.5 \\times 10^{3}", [1500]), ("$5", [5]), ("\u22122", [-2]), ("50%", [50, 0.5]), ("abc", []),
    ("1e999999", []), ("1/0", []),
])
def test_parse_number(text, values):
    assert [float(v) for v in parse_number(text)] == values


@pytest.mark.parametrize("answer, reference, config, expected", [
    ("42", "42", NumberConfig(), 1.0),
    ("The answer is 3.1416", "3.14159", NumberConfig(), 1.0),
    ("It is 1,250 m", "1250", NumberConfig(), 1.0),
    ("\\boxed{0.75}", "3/4", NumberConfig(), 1.0),
    ("100.005", "100", NumberConfig(), 1.0),  # within 1e-4 relative
    ("50%", "0.5", NumberConfig(percent="divide"), 1.0),
    ("50%", "50", NumberConfig(), 1.0),
    ("50%", "0.5", NumberConfig(percent="either"), 1.0),
    ("0", "0", NumberConfig(), 1.0),
    ("100.02", "100", NumberConfig(), 0.0),
    ("3.14", "3.14159", NumberConfig(), 0.0),
    ("50%", "0.5", NumberConfig(), 0.0),
    ("41", "42", NumberConfig(), 0.0),
    ("no number", "42", NumberConfig(), 0.0),
    ("1e-12", "0", NumberConfig(), 1.0),  # abs_tol near zero
    ("0.001", "0", NumberConfig(), 0.0),
])
def test_number(mk, answer, reference, config, expected):
    assert number_reward(mk(answer, reference, "short"), config=config) == expected


def test_number_bad_reference_and_option(mk):
    with pytest.raises(ValueError, match="not a number"):
        number_reward(mk("3", "three"))
    with pytest.raises(ValueError, match="percent"):
        number_reward(mk("3", "3"), config=NumberConfig(percent="bogus"))
    assert number_reward(mk("3")) is None


# --------------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize("completion, mode, expected", [
    ("reasoning here</think>\n\nThe answer is 4.", "long", 1.0),
    ("<think>\nreasoning here</think>\n\n4", "long", 1.0),  # an opening tag in the completion is fine once
    ("reasoning here, never closed", "long", 0.0),
    ("reasoning</think>\n\n", "long", 0.0),  # empty answer
    ("</think>\n\n4", "long", 0.0),  # empty reasoning
    ("a</think>b</think>c", "long", 0.0),  # two closing tags
    ("<think>a<think>b</think>c", "long", 0.0),  # a nested opening tag
    ("r</think>c<think>", "long", 0.0),
    ("The answer is 4.", "short", 1.0),
    ("<think>hmm</think>4", "short", 0.0),  # thinking in short mode
    ("4</think>", "short", 0.0),
    ("   ", "short", 0.0),
    ("reasoning</think>\n\n4", "auto", 1.0),  # auto with </think>: long rules
    ("4", "auto", 1.0),  # auto without: short rules
    ("<think>4", "auto", 0.0),
])
def test_format(mk, completion, mode, expected):
    assert format_reward(mk(completion, None, mode)) == expected


def test_format_options(mk):
    assert format_reward(mk("</think>\n\n4", None, "long"), config=FormatConfig(require_thinking=False)) == 1.0
    assert format_reward(mk("x", None, "long"), config=FormatConfig(bad=-1.0)) == -1.0


# ----------------------------------------------------------------------------------------------- repetition
def test_repetition_windows():
    words = words_of("a_b c  d")
    assert words == ["a", "b", "c", "d"]
    assert words_of("a_b", split_underscore=False) == ["a_b"]
    assert max_window_count(list("abcabcabc"), 3) == 3
    assert max_window_count(list("ab"), 3) == 0


@pytest.mark.parametrize("completion, expected", [
    (" ".join(f"w{i}" for i in range(200)), 0.0),  # no repeats
    (("one two three four five six seven eight nine ten " * 5), 0.0),  # each window 5 times: below 6
    (("one two three four five six seven eight nine ten " * 6), -1.0),  # 6 times: penalised
    (("loop " * 15), -1.0),  # 15 words: the window "loop x10" occurs 6 times
    (("loop " * 14), 0.0),  # occurs 5 times
    ("_".join(["x"] * 20), -1.0),  # underscores split words (RLPR)
    ("short text", 0.0),
])
def test_repetition(mk, completion, expected):
    assert repetition_reward(mk(completion, None, "short")) == expected


def test_repetition_options(mk):
    s = mk("I count " * 30 + "</think>\n\nfour", None, "long")
    assert repetition_reward(s) == -1.0
    assert repetition_reward(s, config=RepetitionConfig(scope="answer")) == 0.0
    assert repetition_reward(mk("a b " * 6), config=RepetitionConfig(window=2, max_repeats=6, penalty=-0.5)) == -0.5
    with pytest.raises(ValueError):
        repetition_reward(s, config=RepetitionConfig(scope="nope"))


# ------------------------------------------------------------------------------------------------- overlong
@pytest.mark.parametrize("length, expected", [(0, 0.0), (7168, 0.0), (7680, -0.5), (8192, -1.0), (9000, -1.0)])
def test_soft_overlong(length, expected):
    assert soft_overlong(length, 8192, 1024) == pytest.approx(expected)


def test_overlong_per_mode(mk):
    config = OverlongConfig(max_tokens={"long": 1000, "short": 100}, buffer_tokens={"long": 200, "short": 50})
    assert overlong_reward(mk("r</think>a", None, "long", {"completion_tokens": 900}), config=config) == -0.5
    assert overlong_reward(mk("a", None, "short", {"completion_tokens": 900}), config=config) == -1.0
    assert overlong_reward(mk("a", None, "short", {"completion_tokens": 75}), config=config) == pytest.approx(-0.5)
    assert overlong_reward(mk("a", None, "auto", {"completion_tokens": 40}), config=config) == 0.0
    assert soft_overlong(101, 100, 0) == -1.0 and soft_overlong(100, 100, 0) == 0.0
    with pytest.raises(KeyError, match="completion_tokens"):
        overlong_reward(mk("a"))


# ----------------------------------------------------------------------------------------------------- prob
def test_prob_reward_formula():
    with_lp = [math.log(0.9), math.log(0.5)]  # mean prob 0.7
    without_lp = [math.log(0.2), math.log(0.4)]  # mean prob 0.3
    assert prob_reward(with_lp, without_lp) == pytest.approx(0.4)
    assert prob_reward(without_lp, with_lp) == 0.0  # clipped at 0
    assert prob_reward(without_lp, with_lp, clip_min=None) == pytest.approx(-0.4)
    assert prob_reward(with_lp, None, debias=False) == pytest.approx(0.7)
    assert prob_reward([], []) == 0.0


def test_prob_rewards_batched_lists_and_tensors_agree():
    gen = torch.Generator().manual_seed(0)
    lp_with = -torch.rand(4, 6, generator=gen) * 3
    lp_without = -torch.rand(4, 5, generator=gen) * 3
    mask_with = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 1 + [0] * 5, [0] * 6])
    mask_without = torch.tensor([[1] * 5, [1] * 5, [1] * 2 + [0] * 3, [1] * 4 + [0]])
    ragged_with = [lp_with[i][mask_with[i].bool()].tolist() for i in range(4)]
    ragged_without = [lp_without[i][mask_without[i].bool()].tolist() for i in range(4)]
    by_tensor = prob_rewards(lp_with, lp_without, mask_with, mask_without, clip_min=-1.0)
    by_list = prob_rewards(ragged_with, ragged_without, clip_min=-1.0)
    one_by_one = [prob_reward(a, b, clip_min=-1.0) for a, b in zip(ragged_with, ragged_without)]
    assert by_tensor == pytest.approx(by_list, abs=1e-6) and by_list == pytest.approx(one_by_one)
    assert min(prob_rewards(lp_with, lp_without, mask_with, mask_without)) >= 0.0
    with pytest.raises(ValueError, match="batch sizes"):
        prob_rewards([[0.0]], [[0.0], [0.0]])


def test_prob_row_and_query(mk):
    meta = {"ref_logprobs": [math.log(0.8)], "ref_logprobs_no_reasoning": [math.log(0.5)]}
    s = mk("step 1, step 2</think>\n\nmy answer", "the reference", "long", meta)
    assert prob_reward_row(s) == pytest.approx(0.3)
    assert prob_reward_row(s, config=ProbConfig(debias=False)) == pytest.approx(0.8)
    with pytest.raises(KeyError, match="log-probs"):
        prob_reward_row(mk("x</think>y", "ref", "long"))
    q = prob_query(s)
    assert q.with_reasoning == "step 1, step 2</think>\n\n" and q.without_reasoning == "" and q.mode == "long"
    assert q.target == "the reference"
    short = prob_query(mk("my answer", "ref", "short"))
    assert short.with_reasoning == "" and short.mode == "short"  # no reasoning: the reward is 0 in short mode
    with pytest.raises(ValueError):
        prob_query(mk("x"))


# ------------------------------------------------------------------------------------------- reward model
def test_reward_model_sees_only_the_final_answer(mk, tmp_path):
    plugin = tmp_path / "spy_scorer.py"
    plugin.write_text("SEEN = []\n"
                      "def spy(answers, samples):\n"
                      "    SEEN.extend((a, s.completion, s.thinking) for a, s in zip(answers, samples))\n"
                      "    return [float(len(a)) for a in answers]\n")
    samples = [mk("SECRET reasoning</think>\n\nfinal", "final", "long"), mk("short answer", None, "short")]
    scores = reward_model(samples, config=RewardModelConfig(scorer=f"{plugin}:spy"))
    assert scores == [len("\n\nfinal"), len("short answer")]
    from rewards.api import _load_path

    seen = _load_path(f"{plugin}:SEEN")
    assert all("SECRET" not in str(item) for item in seen) and seen[0][2] is None


def test_overlap_scorer(mk):
    samples = [mk("a red bus", "a red bus"), mk("a blue car", "a red bus"), mk("nothing", None)]
    scores = OverlapScorer()([s.answer_text for s in samples], samples)
    assert scores[0] == pytest.approx(1.0) and 0 < scores[1] < 1 and scores[2] == 0.0
    long = mk(" ".join(["bus"] * 300), "bus")
    assert OverlapScorer(max_words=200, length_penalty=0.01)([long.answer_text], [long])[0] < 0.1
    assert reward_model(samples) == scores  # the default scorer


def test_group_znorm():
    z = group_znorm([1.0, 2.0, 3.0, 10.0, 10.0, 5.0], ["a", "a", "a", "b", "b", "c"])
    assert z[:3] == pytest.approx([-1.2247449, 0.0, 1.2247449])  # population std
    assert z[3:5] == [0.0, 0.0]  # zero std
    assert z[5] == 0.0  # a group of one
    assert group_znorm([1.0, None, 3.0], [0, 0, 0]) == [-1.0, None, 1.0]  # None left out and kept
    assert group_znorm([1.0, 3.0], [0, 0], ddof=1) == pytest.approx([-0.7071068, 0.7071068])
    assert group_znorm([], []) == []
    with pytest.raises(ValueError):
        group_znorm([1.0], [0, 1])


# ------------------------------------------------------------------------------------------------------ acc
@pytest.mark.parametrize("completion, reference, meta, expected", [
    ("\\boxed{\\frac12}", "0.5", {}, 1.0),  # default: math
    ("B", "B", OPTS, 1.0),  # options: choice
    ("about 100.001", "100", {"verifier": "number"}, 1.0),
    ("Paris", "paris", {"verifier": "exact"}, 1.0),
    ("x-17", None, {"verifier": "regex", "pattern": r"x-\d+"}, 1.0),
    ("r</think>a", "ref", {"verifier": "prob", "ref_logprobs": [0.0], "ref_logprobs_no_reasoning": [math.log(0.25)]},
     0.75),
    ("C", "B", OPTS, 0.0),
])
def test_acc_routes(mk, completion, reference, meta, expected):
    assert acc_reward(mk(completion, reference, "auto", meta)) == pytest.approx(expected)


def test_acc_refuses_code_paths_and_unknown_names(mk):
    for name in ("os:system", "acc", "reward_model", "unknown"):
        with pytest.raises(ValueError, match="verifier"):
            acc_reward(mk("1", "1", "short", {"verifier": name}))
    config = AccConfig(default="number", options={"number": {"rel_tol": 0.1}})
    assert acc_reward(mk("105", "100"), config=config) == 1.0


# ----------------------------------------------------------------------------------------- reference checks
def regex_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        return str(e)
    raise AssertionError(f"{pattern!r} compiles")


@pytest.mark.parametrize("name, good, bad, meta, problem", [
    ("number", "1,234.5", "many", {}, "'many' is not a number (reward 'number')"),
    ("choice", "dog", "E", {"options": ["cat", "dog"]},
     "'E' names no single option (reward 'choice'; options: ['cat', 'dog'])"),
    ("regex", r"x-\d+", "x-(", {}, f"the regex pattern does not compile ({regex_error('x-(')}) (reward 'regex')"),
    ("math", "\\frac12", ["1", "2"], {}, "a list of answers is only for reward 'exact', not 'math'"),
    ("prob", "free text", ["a", "b"], {}, "a list of answers is only for reward 'exact', not 'prob'"),
    ("number", "3", ["3"], {}, "a list of answers is only for reward 'exact', not 'number'"),
])
def test_check_reference_of_each_verifier(name, good, bad, meta, problem):
    assert check_reference(name, good, meta) is None
    assert check_reference(name, bad, meta) == problem


def test_check_reference_of_exact_takes_a_list_and_every_verifier_has_one():
    assert check_reference("exact", ["Paris", "paris, france"]) is None
    assert check_reference("exact", "Paris") is None
    assert AccConfig().allowed == VERIFIERS and "acc" not in VERIFIERS
    for name in VERIFIERS:
        assert check_reference(name, "1", {"options": ["1", "2"]}) is None
