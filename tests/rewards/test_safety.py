"""Safety: model text is never run as code; every call is bounded in time and memory; a plugin that raises, hangs,
exits or allocates without bound fails its own row only, and the batch and the sandbox go on."""

import os
import pathlib
import re
import time

import pytest

from rewards.api import RewardInput, get_reward
from rewards.math import math_reward
from rewards.runner import RewardRunner, RunnerConfig

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.join(HERE, "plugins_for_tests.py")
MARGIN_S = 10.0  # scheduling slack on a loaded 2-core machine (another suite beside this one)
TIMEOUT_S = 4.0  # the session sandbox's per-call limit (tests/rewards/conftest.py)


def injections(marker: pathlib.Path) -> list[str]:
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f'__import__("os").system("touch {m}")',
        "().__class__.__bases__[0].__subclasses__()",
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]('id')",
        f"(lambda: __import__('os').system('touch {m}'))()",
        f"exec(\"import os; os.system('touch {m}')\")",
        f"eval(\"__import__('os').system('touch {m}')\")",
        f"open('{m}', 'w').write('x')",
        f"__import__('pathlib').Path('{m}').touch()",
        f"Symbol('x').__class__.__init__.__globals__['__builtins__']['__import__']('os').system('touch {m}')",
        f"1 + __import__('os').system('touch {m}')",
        f"1; import os; os.system('touch {m}')",
        f"\\text{{{m}}} \\input{{{m}}} \\write18{{touch {m}}}",
        f"x = __import__('subprocess').call(['touch', '{m}'])",
    ]


def wrapped(text: str) -> list[tuple[str, str]]:
    """(completion, mode): the string in the places an extractor looks."""
    return [(text, "short"), (f"\\boxed{{{text}}}", "short"), (f"${text}$", "short"),
            (f"The answer is {text}", "short"), (f"Let me think.</think>\n\n\\boxed{{{text}}}", "long")]


def test_no_eval_in_the_rewards_source():
    """No eval/exec/sympify/parse_expr call in the package (math-verify's parse_expr only sees digit strings)."""
    root = pathlib.Path(HERE).parents[1] / "rewards"
    for path in root.glob("*.py"):
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        code = re.sub(r'"""[\s\S]*?"""', "", code)
        assert not re.search(r"\b(eval|exec|sympify|parse_expr|compile)\s*\(", code.replace("re.compile(", "")), path


def test_injection_strings_do_not_run_in_the_sandbox(runner, mk, tmp_path):
    marker = tmp_path / "pwned"
    rows = []
    for text in injections(marker):
        for completion, mode in wrapped(text):
            rows.append(mk(completion, "1", mode, {"options": ["a", "b"]} if "Popen" in text else {}))
    rows.append(mk("1", injections(marker)[0], "short"))  # in the reference, too
    for name in ("math", "number", "exact", "choice", "acc", "format", "repetition"):
        for outcome in runner.score(name, rows):
            assert outcome.score in (0.0, -1.0, 1.0, None)
            if outcome.score is None:
                assert outcome.error and "timeout" not in outcome.error, (name, outcome)
    assert not marker.exists()


def test_injection_strings_do_not_run_in_process(mk, tmp_path):
    marker = tmp_path / "pwned"
    for text in injections(marker):
        for completion, mode in wrapped(text):
            score = math_reward(mk(completion, "1", mode))
            if completion.startswith("The answer is"):
                assert score in (0.0, 1.0)  # prose after "answer is": "1 + ..." may be read as the number 1
            else:
                assert score == 0.0, completion
    assert not marker.exists()


def nested_frac(depth: int) -> str:
    return "\\frac{1}{" * depth + "2" + "}" * depth


DOS = [
    "9**9**9**9",
    "$9^{9^{9^{9}}}$",
    "\\boxed{9^{9^{9}}}",
    "\\boxed{" + nested_frac(200) + "}",
    "$" + nested_frac(1000) + "$",
    "(10**10)!",
    "$(10^{10})!$",
    "\\boxed{10^{10}!}",
    "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "1+" * 200_000 + "1",
    "The answer is " + "9" * 5000,
]


def test_session_sandbox_limit(runner):
    assert runner.sandbox.config.timeout_s == TIMEOUT_S


def test_huge_inputs_return_within_the_limit(runner, mk):
    rows = [mk(text, "1", "short") for text in DOS] + [mk("\\boxed{1}", "1", "short")]
    start = time.monotonic()
    outcomes = runner.score("math", rows, parse_timeout_s=1, verify_timeout_s=1)
    elapsed = time.monotonic() - start
    for text, outcome in zip(DOS, outcomes):
        assert outcome.seconds <= TIMEOUT_S + MARGIN_S, (text[:40], outcome)
        assert outcome.score == 0.0 or (outcome.score is None and outcome.error), (text[:40], outcome)
    assert outcomes[-1].score == 1.0  # the batch goes on
    assert elapsed <= len(rows) / 2 * (TIMEOUT_S + MARGIN_S)


def test_the_sandbox_limit_holds_without_math_verifys_own_timeouts(runner, mk):
    rows = [mk("\\boxed{9^{9^{9}}}", "1", "short"), mk("\\boxed{2}", "2", "short")]
    before = runner.sandbox.restarts
    slow, fine = runner.score("math", rows, parse_timeout_s=0, verify_timeout_s=0)
    assert slow.score is None and slow.error.startswith("timeout") and slow.seconds <= TIMEOUT_S + MARGIN_S
    assert fine.score == 1.0
    assert runner.sandbox.restarts == before + 1


def test_misbehaving_plugin_fails_only_its_rows(runner, mk):
    kinds = ["ok", "raise", "hang", "sleep", "exit", "hard_exit", "allocate", "text", "nan", "ok"]
    rows = [mk(kind, "ok", "short") for kind in kinds]
    start = time.monotonic()
    outcomes = runner.score(f"{PLUGINS}:by_answer", rows)
    assert time.monotonic() - start <= 2 * (TIMEOUT_S + MARGIN_S)
    got = dict(zip(kinds[1:-1], outcomes[1:-1]))
    assert outcomes[0].score == 1.0 and outcomes[-1].score == 1.0
    assert all(o.score is None for o in got.values())
    assert "RuntimeError: plugin bug on purpose" in got["raise"].error
    assert re.search(r"\(plugins_for_tests.py:\d+\)$", got["raise"].error)  # where it was raised
    assert got["hang"].error.startswith("timeout") and got["sleep"].error.startswith("timeout")
    assert got["hang"].seconds <= TIMEOUT_S + MARGIN_S
    assert got["exit"].error.startswith("SystemExit")
    assert got["hard_exit"].error == "worker died (exit code 7)"
    assert got["allocate"].error.startswith("MemoryError")
    assert "returned str" in got["text"].error and "non-finite" in got["nan"].error
    # the sandbox recovered: the next batch runs normally
    assert [o.score for o in runner.score("math", [mk("\\boxed{3}", "3", "short")] * 3)] == [1.0, 1.0, 1.0]


def test_batched_plugin_in_the_sandbox(runner, mk):
    rows = [mk("a" * n) for n in range(1, 6)]
    assert [o.score for o in runner.score(f"{PLUGINS}:batched_len", rows)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    wrong = runner.score(f"{PLUGINS}:batched_short", rows)
    assert all(o.score is None and "returned 4 scores for 5 rows" in o.error for o in wrong)


def test_class_plugin_with_options_in_the_sandbox(runner, mk):
    assert [o.score for o in runner.score(f"{PLUGINS}:Scaled", [mk("abc")], scale=2.0)] == [6.0]


def test_async_plugins(runner, mk):
    rows = [mk("x")] * 3
    assert [o.score for o in runner.score(f"{PLUGINS}:async_ok", rows)] == [0.5, 0.5, 0.5]
    start = time.monotonic()
    hung = runner.score(f"{PLUGINS}:async_hangs", rows)
    assert time.monotonic() - start < 3 * TIMEOUT_S  # the three wait together: one after another would take 3x
    assert all(o.score is None and o.error.startswith("timeout") for o in hung)


def test_unpicklable_reward_is_a_row_error(runner, mk):
    outcomes = runner.score(lambda s: 1.0, [mk("x"), mk("y")])
    assert all(o.score is None and "cannot send to a worker" in o.error for o in outcomes)


def test_in_process_mode_for_debugging(mk):
    with RewardRunner(RunnerConfig(in_process=True)) as local:
        outcomes = local.score(f"{PLUGINS}:by_answer", [mk("ok", "ok"), mk("raise", "ok")])
        assert local._sandbox is None  # no worker was started
    assert outcomes[0].score == 1.0 and outcomes[1].error.startswith("RuntimeError")


# ------------------------------------------------------------------------------ degenerate completions, in-process
# Model text can be 100 000 characters of anything. Every built-in verifier must scan it in about linear time: one
# super-linear regex made a 50 000-letter completion cost a full sandbox timeout and a worker restart (issue 16).
# The verifiers are called directly (not through the sandbox) so that the time measured is theirs.

N = 100_000


def _fill(unit: str, n: int = N) -> str:
    return (unit * (n // len(unit) + 1))[:n]


DEGENERATE = {
    "letters": "a" * N,  # was quadratic: the prose check `[A-Za-z]{2,}[\\s,;]+[A-Za-z]{2,}` from every letter
    "boxed_open": _fill("\\boxed{"),  # was quadratic: each unbalanced box scanned to the end
    "boxed_bare": _fill("\\boxed"),  # was quadratic: a copy of the rest of the text per `\\boxed`
    "boxed_a": _fill("\\boxed{a"),
    "braces_open": "{" * N,
    "braces_close": "}" * N,
    "parens": "(" * N,
    "brackets": "[" * N,
    "spaces": " " * N,
    "newlines": "\n" * N,
    "tabs": "\t" * N,
    "digits": "7" * N,
    "digits_spaced": _fill("123 "),
    "dollars": "$" * N,  # nested `$...$` delimiters: stripped one pair at a time
    "dollar_segments": _fill("$$a"),
    "paren_math": _fill("\\("),  # was quadratic: `\\((.+?)\\)` with no closer, from every opener
    "bracket_math": _fill("\\["),
    "backslashes": "\\" * N,
    "numbered": _fill("1."),
    "lettered": _fill("A)"),
    "lettered_dot": _fill("A. "),
    "options": _fill("(A)"),
    "option_word": "option" + " " * N,
    "commas": _fill("1,"),
    "minus": "-" * N,
    "dots": "." * N,
    "percent": _fill("1 %"),
    "think_open": _fill("<think>"),
    "think_close": _fill("</think>"),
    "answer_spaces": "answer" + " " * N,  # was quadratic: `\\s*(?:\\*\\*)?\\s*` after "answer"
    "answer_is": _fill("answer is "),
    "final_answer": _fill("Final Answer: "),
    "hash_marker": _fill("#### "),
    "bold": "*" * N,
    "text_open": _fill("\\text{"),
    "begin_open": _fill("\\begin{"),
    "frac_open": _fill("\\frac{"),
    "frac_tabs": "\\boxed{\\frac{" + "\t" * N + "}{1}}",  # was quadratic in `number`: `\\{\\s*([^{}]+?)\\s*\\}`
    "times_tabs": "\\boxed{1" + "\t" * N + "x}",  # was quadratic in `number`: `^(.+?)\\s*(?:\\times|...)`
    "sci": _fill("1x10^"),
    "exponents": _fill("1e"),
    "distinct_words": " ".join(f"w{i}" for i in range(N // 7)),  # was quadratic in reward_model: list.count per word
    "words_spaced": "ab" + " " * N + "1",
    "mixed": _fill("a1 (b) {c} $d$ \\e "),
    "deep_parens_answer": "a " * (N // 2) + "\\boxed{" + "(" * 40 + "1" + ")" * 40 + "}",  # math-verify: exponential
}
WRAPS = {
    "short": lambda t: (t, "short"),
    "long": lambda t: (t + "</think>\n\n" + t, "long"),
    "phrase": lambda t: ("The answer is " + t, "short"),
    "boxed": lambda t: ("\\boxed{" + t + "}", "short"),
}
VERIFIER_ROWS = {  # name: (reference, meta)
    "math": ("\\frac{1}{2}", {}),
    "number": ("12", {}),
    "choice": ("B", {"options": ["3 cm", "4 cm", "5 cm"]}),
    "exact": ("abc", {}),
    "regex": ("\\d+", {}),
    "acc": ("7", {}),
    "format": (None, {}),
    "repetition": (None, {}),
    "overlong": (None, {"completion_tokens": 9000}),
    "prob": ("x", {"ref_logprobs": [-0.1], "ref_logprobs_no_reasoning": [-0.2]}),
    "reward_model": ("a b", {}),
}
BOUND_S = 1.0
"""Per call. Timings are normally kept out of these tests; issue 16 asks for this bound, so it is generous (a linear
scan of 100 000 characters takes milliseconds) and asserted once per case."""


@pytest.fixture(scope="module")
def warm_verifiers():
    """Each built-in, called once on an ordinary row first (imports and caches are not the verifier's time)."""
    verifiers = {name: get_reward(name) for name in VERIFIER_ROWS}
    for name, (reference, meta) in VERIFIER_ROWS.items():
        row = RewardInput.make("\\boxed{12} B abc", reference, "short", dict(meta))
        verifiers[name].fn([row]) if verifiers[name].batched else verifiers[name].fn(row)
    return verifiers


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_completions_are_scored_quickly(case, warm_verifiers):
    worst = (0.0, "")
    for name, (reference, meta) in VERIFIER_ROWS.items():
        reward = warm_verifiers[name]
        for wrap_name, wrap in WRAPS.items():
            completion, mode = wrap(DEGENERATE[case])
            row = RewardInput.make(completion, reference, mode, dict(meta))
            start = time.perf_counter()
            reward.fn([row]) if reward.batched else reward.fn(row)
            elapsed = time.perf_counter() - start
            worst = max(worst, (elapsed, f"{name}/{wrap_name}"))
    assert worst[0] <= BOUND_S, (case, worst)
