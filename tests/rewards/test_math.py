"""The `math` verifier: the labelled table (run in the sandbox, as in training) and its options."""

import collections

import pytest

from rewards.math import MathConfig, math_equal, math_reward, nesting_depth, reference_candidate

# (category, model answer, reference, equivalent?). The model answer is scored as a short-mode completion (the whole
# text is the final answer), so each row also exercises extraction. About a third are negatives.
CASES = [
    # --- integers and signs
    ("integer", "42", "42", True),
    ("integer", "The answer is 42.", "42", True),
    ("integer", "\\boxed{-7}", "-7", True),
    ("integer", "1,000,000", "1000000", True),
    ("integer", "007", "7", True),
    ("integer", "-3", "3", False),
    ("integer", "41", "42", False),
    ("integer", "\\boxed{10001}", "10000", False),
    # --- fractions
    ("fraction", "\\frac{1}{2}", "0.5", True),
    ("fraction", "1/2", "\\frac{1}{2}", True),
    ("fraction", "\\dfrac{3}{4}", "0.75", True),
    ("fraction", "\\tfrac{2}{4}", "\\frac12", True),
    ("fraction", "\\frac{6}{8}", "\\frac{3}{4}", True),
    ("fraction", "-\\frac{1}{3}", "\\frac{-1}{3}", True),
    ("fraction", "\\boxed{\\frac{22}{7}}", "\\frac{44}{14}", True),
    ("fraction", "\\frac{7}{3}", "2\\frac{1}{3}", True),
    ("fraction", "\\frac{1}{3}", "\\frac{1}{2}", False),
    ("fraction", "\\frac{2}{3}", "\\frac{3}{2}", False),
    ("fraction", "22/7", "\\pi", False),
    ("fraction", "\\frac{1}{2}", "-\\frac{1}{2}", False),
    # --- decimals: exact by default (a rounded decimal is not an exact value; TOLERANT below has rel_tol)
    ("decimal", "0.5", "\\frac{1}{2}", True),
    ("decimal", "0.3333", "\\frac{1}{3}", False),
    ("decimal", "0.33333333", "1/3", False),
    ("decimal", "3.1416", "\\pi", False),
    ("decimal", "1.41421", "\\sqrt{2}", False),
    ("decimal", "2.71828", "e", False),
    ("decimal", "0.1 + 0.2", "0.3", True),
    ("decimal", "12.50", "12.5", True),
    ("decimal", "1.00005", "1", False),
    ("decimal", "0.375", "\\frac{3}{8}", True),
    ("decimal", "0.125", "1/8", True),
    ("decimal", "0.333", "\\frac{1}{3}", False),
    ("decimal", "3.14", "\\pi", False),
    ("decimal", "0.33", "1/3", False),
    ("decimal", "1.001", "1", False),
    ("decimal", "2.5", "2.6", False),
    ("decimal", "0.67", "\\frac{2}{3}", False),
    # --- percentages
    ("percent", "50\\%", "0.5", True),
    ("percent", "50%", "50", True),
    ("percent", "25\\%", "\\frac{1}{4}", True),
    ("percent", "12.5%", "0.125", True),
    ("percent", "The rate is 40%.", "40\\%", True),
    ("percent", "33.3333%", "\\frac{1}{3}", False),
    ("percent", "60\\%", "0.5", False),
    ("percent", "5%", "0.5", False),
    ("percent", "The rate is 45%.", "40\\%", False),
    # --- units and \text{}
    ("units", "10 \\text{ cm}", "10", True),
    ("units", "10\\,\\mathrm{cm}", "10", True),
    ("units", "\\text{10 meters}", "10", True),
    ("units", "5 apples", "5", True),
    ("units", "The train needs 3 hours.", "3", True),
    ("units", "90^\\circ", "90", True),
    ("units", "\\$12.50", "12.5", True),
    ("units", "12 \\text{ cm}^2", "12", True),
    ("units", "11 \\text{ cm}", "10", False),
    ("units", "The train needs 4 hours.", "3", False),
    ("units", "\\text{ten}", "10", True),  # a number word reads as its number (REWARDS.md, math)
    ("units", "\\text{nine}", "10", False),
    # --- LaTeX: roots, pi, powers, functions
    ("latex", "2\\sqrt{2}", "\\sqrt{8}", True),
    ("latex", "3\\sqrt{2}", "\\sqrt{18}", True),
    ("latex", "\\sqrt[3]{8}", "2", True),
    ("latex", "\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("latex", "\\frac{\\pi}{2}", "\\pi/2", True),
    ("latex", "2\\pi", "\\pi + \\pi", True),
    ("latex", "2^{10}", "1024", True),
    ("latex", "10^{-2}", "0.01", True),
    ("latex", "x^{2}", "x^2", True),
    ("latex", "e^{2}", "\\exp(2)", True),
    ("latex", "\\log_2 8", "3", True),
    ("latex", "\\sin(\\pi/6)", "\\frac{1}{2}", True),
    ("latex", "\\binom{5}{2}", "10", True),
    ("latex", "5!", "120", True),
    ("latex", "\\left(\\frac{1}{2}\\right)^2", "\\frac14", True),
    ("latex", "\\sqrt{2}", "\\sqrt{3}", False),
    ("latex", "2\\sqrt{3}", "\\sqrt{6}", False),
    ("latex", "\\pi", "2\\pi", False),
    ("latex", "2^{9}", "1024", False),
    ("latex", "\\frac{\\pi}{3}", "\\frac{\\pi}{2}", False),
    ("latex", "\\sqrt[3]{9}", "2", False),
    ("latex", "x^3", "x^2", False),
    ("latex", "4!", "120", False),
    # --- symbolic expressions
    ("symbolic", "x^2+2x+1", "(x+1)^2", True),
    ("symbolic", "(x-1)(x+1)", "x^2-1", True),
    ("symbolic", "2x + 3y", "3y + 2x", True),
    ("symbolic", "\\frac{x^2-1}{x-1}", "x+1", True),
    ("symbolic", "a(b+c)", "ab+ac", True),
    ("symbolic", "\\sin^2 x + \\cos^2 x", "1", True),
    ("symbolic", "\\frac{2x}{2}", "x", True),
    ("symbolic", "\\ln(e^x)", "x", True),
    ("symbolic", "x^2+1", "(x+1)^2", False),
    ("symbolic", "2x + 3y", "3x + 2y", False),
    ("symbolic", "x+1", "x-1", False),
    ("symbolic", "a+b", "ab", False),
    ("symbolic", "x^2", "2x", False),
    ("symbolic", "\\sqrt{x^2}", "x^2", False),
    # --- equations
    ("equation", "y = 2x + 1", "y = 1 + 2x", True),
    ("equation", "x = 3", "3", True),
    ("equation", "2x + 2y = 4", "x + y = 2", True),
    ("equation", "y=2x+1", "2x+1", True),
    ("equation", "x^2 + y^2 = 1", "y^2 + x^2 = 1", True),
    ("equation", "The line is $y = -x + 4$.", "y = 4 - x", True),
    ("equation", "x = 4", "3", False),
    ("equation", "y = 2x - 1", "y = 2x + 1", False),
    ("equation", "x^2 + y^2 = 4", "x^2 + y^2 = 1", False),
    ("equation", "y = x", "y = -x", False),
    # --- tuples / ordered pairs
    ("tuple", "(1, 2)", "(1,2)", True),
    ("tuple", "(3, -4)", "(3,-4)", True),
    ("tuple", "\\left( \\frac{1}{2}, 3 \\right)", "(0.5, 3)", True),
    ("tuple", "(1, 2, 3)", "(1,2,3)", True),
    ("tuple", "(2, 1)", "(1, 2, 0)", False),
    ("tuple", "(1, 2, 3)", "(3, 2, 1)", False),
    ("tuple", "(1, 2)", "(1, 3)", False),
    ("tuple", "(0, 0)", "(1, 1)", False),
    # --- sets and lists of solutions
    ("set", "\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True),
    ("set", "\\{-2, 2\\}", "\\{2, -2\\}", True),
    ("set", "1, 2, 3", "3, 2, 1", True),
    ("set", "x = 2, x = -2", "\\{-2, 2\\}", True),
    ("set", "\\emptyset", "\\{\\}", True),
    ("set", "\\{1, 2\\}", "\\{1, 2, 3\\}", False),
    ("set", "\\{1, 4\\}", "\\{1, 2\\}", False),
    ("set", "\\{0\\}", "\\emptyset", False),
    ("set", "1, 2", "1, 2, 3", False),
    # --- intervals
    ("interval", "[1, 3)", "[1,3)", True),
    ("interval", "(-\\infty, 2]", "(-\\infty,2]", True),
    ("interval", "[0, 1]", "[0,1]", True),
    ("interval", "(0, \\infty)", "(0,\\infty)", True),
    ("interval", "x \\in [0, 1]", "[0, 1]", True),
    ("interval", "(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)", True),
    ("interval", "(1, 3]", "[1, 3)", False),
    ("interval", "[0, 1)", "[0, 1]", False),
    ("interval", "(0, \\infty)", "[0, \\infty)", False),
    ("interval", "(-\\infty, 2)", "(2, \\infty)", False),
    # --- matrices and vectors
    ("matrix", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", True),
    ("matrix", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("matrix", "\\begin{pmatrix}0.5&0\\\\0&1\\end{pmatrix}", "\\begin{pmatrix}\\frac12&0\\\\0&1\\end{pmatrix}", True),
    ("matrix", "\\begin{bmatrix}2&0\\\\0&2\\end{bmatrix}", "\\begin{bmatrix}2&0\\\\0&2\\end{bmatrix}", True),
    ("matrix", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", False),
    ("matrix", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False),
    ("matrix", "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", "\\begin{pmatrix}1&0\\\\0&2\\end{pmatrix}", False),
    # --- complex numbers, infinity, misc
    ("misc", "2+3i", "3i+2", True),
    ("misc", "\\infty", "\\infty", True),
    ("misc", "-\\infty", "\\infty", False),
    ("misc", "2-3i", "2+3i", False),
    # --- extraction inside longer answers
    ("extraction", "So the total is \\boxed{12}. Check: 5+7=12.", "12", True),
    ("extraction", "First I got \\boxed{5}, but correcting, \\boxed{6}.", "6", True),
    ("extraction", "Final Answer: $\\frac{5}{6}$", "\\frac{5}{6}", True),
    ("extraction", "**Final Answer:** 18", "18", True),
    ("extraction", "We find $x = 4$ after simplifying.", "4", True),
    ("extraction", "Thus the area is 24 square units.", "24", True),
    ("extraction", "First I got \\boxed{6}, but correcting, \\boxed{5}.", "6", False),
    ("extraction", "The answer is 7. (Not 8.)", "8", False),
    ("extraction", "no idea", "3", False),
    ("extraction", "", "3", False),
    # --- more positives (balance: about a third of the table is negative)
    ("integer", "+5", "5", True),
    ("fraction", "\\frac{10}{4}", "2.5", True),
    ("fraction", "\\frac{-3}{-6}", "\\frac12", True),
    ("fraction", "3/6", "0.5", True),
    ("decimal", ".5", "1/2", True),
    ("decimal", "0.125", "\\frac{1}{8}", True),
    ("percent", "100\\%", "1", True),
    ("units", "45 \\text{ degrees}", "45", True),
    ("units", "\\text{5 km}", "5", True),
    ("latex", "\\sqrt{16}", "4", True),
    ("latex", "\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
    ("latex", "4^{1/2}", "2", True),
    ("symbolic", "\\frac{x}{2}", "0.5x", True),
    ("symbolic", "(a+b)^2", "a^2+2ab+b^2", True),
    ("equation", "y = \\frac{1}{2}x", "y = 0.5x", True),
    ("tuple", "(-1, \\sqrt{2})", "(-1, \\sqrt{2})", True),
    ("set", "\\{\\frac12, 2\\}", "\\{0.5, 2\\}", True),
    ("interval", "[-1, 1]", "[-1,1]", True),
    ("matrix", "\\begin{pmatrix}2&4\\end{pmatrix}", "\\begin{pmatrix}2&4\\end{pmatrix}", True),
    ("misc", "(2+i)+(1-i)", "3", True),
    ("extraction", "The answer is $\\boxed{\\frac{1}{4}}$", "0.25", True),
    ("extraction", "Answer: 3.5", "7/2", True),
]




TOLERANT = [  # rounded decimals, equal with a tolerance configured (rel_tol=1e-4, Qwen2.5-Math's numeric_equal)
    ("0.3333", "\\frac{1}{3}", True),
    ("0.33333333", "1/3", True),
    ("3.1416", "\\pi", True),
    ("1.41421", "\\sqrt{2}", True),
    ("2.71828", "e", True),
    ("1.00005", "1", True),
    ("33.3333%", "\\frac{1}{3}", True),
    ("0.333", "\\frac{1}{3}", False),
    ("3.14", "\\pi", False),
    ("1.001", "1", False),
]


@pytest.mark.parametrize("answer, reference, expected", TOLERANT)
def test_rounded_decimals_with_a_tolerance(mk, answer, reference, expected):
    assert math_reward(mk(answer, reference), config=MathConfig(rel_tol=1e-4)) == (1.0 if expected else 0.0)
    assert math_reward(mk(answer, reference)) == 0.0  # the default: exact


def test_table_size_and_balance():
    assert len(CASES) >= 150
    negatives = sum(not expected for *_, expected in CASES)
    assert 0.28 <= negatives / len(CASES) <= 0.40
    categories = collections.Counter(c for c, *_ in CASES)
    for needed in ("fraction", "decimal", "percent", "units", "latex", "symbolic", "equation", "tuple", "set",
                   "interval", "matrix"):
        assert categories[needed] >= 4, needed


@pytest.fixture(scope="module")
def table_outcomes(runner, mk):
    return runner.score("math", [mk(answer, ref, "short") for _, answer, ref, _ in CASES])


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_table(index, table_outcomes):
    category, answer, reference, expected = CASES[index]
    outcome = table_outcomes[index]
    assert outcome.error is None, outcome.error
    assert outcome.score == (1.0 if expected else 0.0), (category, answer, reference)


@pytest.mark.parametrize("completion, mode, expected", [
    ("Compute 6*7 = 42.</think>\n\nThe answer is \\boxed{42}.", "long", 1.0),
    ("<think>Compute 6*7.</think>\n\n42", "long", 1.0),
    ("I think \\boxed{42} but keep checking... (truncated)", "long", 0.0),  # no </think>: no final answer
    ("The reasoning says \\boxed{42}.</think>\n\nSo \\boxed{41}.", "long", 0.0),  # only after </think> counts
    ("The reasoning says \\boxed{41}.</think>\n\nSo \\boxed{42}.", "auto", 1.0),
    ("\\boxed{42}", "short", 1.0),
])
def test_modes(mk, completion, mode, expected):
    assert math_reward(mk(completion, "42", mode)) == expected


def test_no_reference_is_none_and_bad_reference_is_an_error(mk):
    assert math_reward(mk("42")) is None
    assert math_reward(mk("42", "")) is None
    with pytest.raises(ValueError, match="reference"):
        math_reward(mk("42", "\\frac{"))


def test_options(mk):
    loose = MathConfig(rel_tol=1e-2)
    assert math_reward(mk("3.14", "\\pi")) == 0.0
    assert math_reward(mk("3.14", "\\pi"), config=loose) == 1.0
    assert math_reward(mk("\\boxed{3}", "3"), config=MathConfig(correct=2.0)) == 2.0
    assert math_reward(mk("\\boxed{4}", "3"), config=MathConfig(incorrect=-1.0)) == -1.0
    long_answer = "1+" * 600 + "1"
    assert math_equal(long_answer, "601") is False  # over max_answer_chars: not parsed
    deep = "(" * 9 + "1" + ")" * 9  # math-verify's parser is exponential in the nesting depth
    assert nesting_depth(deep) == 9 and nesting_depth("(((") == 3 and nesting_depth("\\frac{1}{2}") == 1
    assert math_equal(deep, "1") is False  # deeper than max_nesting (8): not parsed
    assert math_equal("(" * 3 + "1" + ")" * 3, "1") is True
    assert math_reward(mk("0.333333", "\\frac{1}{3}")) == 0.0  # the default: exact, a rounded decimal is not 1/3
    assert math_reward(mk("0.333333", "\\frac{1}{3}"), config=MathConfig(rel_tol=1e-4)) == 1.0  # a tolerance
    assert math_reward(mk("0.375", "\\frac{3}{8}")) == 1.0  # exact decimals are equal


def test_reference_candidate():
    assert reference_candidate("The answer is $\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"
    assert reference_candidate(" $x^2$ ") == "x^2"
    assert reference_candidate(7) == "7"
