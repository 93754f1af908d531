"""Answer extraction (pure string functions)."""

import pytest

from rewards.extract import (answer_phrase, candidate, hash_marker, is_bare_expression, last_boxed, last_math_segment,
                             last_number, math_segments, strip_math_delims)


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{5}", "5"),
    ("a \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed {x^{2}}", "x^{2}"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5", "5"),
    ("\\boxed{1} and an unbalanced \\boxed{2", "1"),
    ("\\boxed{a\\{b} \\boxed{c}", "c"),  # an escaped brace does not count
    ("\\boxed{1} \\boxed{2 \\boxed{3}", "3"),  # the last balanced one
    ("\\boxed\\frac12", None),  # `\\boxed 5` needs the space

    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("So the answer is 42.", "42"),
    ("The final answer is $\\frac{1}{2}$. Done", "\\frac{1}{2}"),
    ("**Final Answer:** 18", "18"),
    ("Answer: 3.5", "3.5"),
    ("answer = 7\nmore text", "7"),
    ("The answer is 7. (Not 8.)", "7"),
    ("first the answer is 1, then the answer is 2.", "2"),
    ("To answer this we add.", None),
    ("nothing", None),
])
def test_answer_phrase(text, expected):
    assert answer_phrase(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("$x$", "x"), ("$$x+1$$.", "x+1"), ("\\(y\\)", "y"), ("\\[z\\]", "z"), (" 5. ", "5"),
    ("$a$ and $b$", "$a$ and $b$"),
])
def test_strip_math_delims(text, expected):
    assert strip_math_delims(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("x^2+1", True), ("\\frac{\\sqrt{3}}{2}", True), ("\\sin(x) + \\log 2", True), ("sin(x)", True),
    ("10 \\text{ meters}", True), ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", True), ("5 apples", False),
    ("the answer is 5", False), ("About 3", False),
])
def test_is_bare_expression(text, expected):
    assert is_bare_expression(text) is expected


def test_math_segments():
    assert math_segments("a $x$ b $$y$$ \\(z\\) \\[w\\]") == [(2, 5, "x"), (8, 13, "y"), (14, 19, "z"), (20, 25, "w")]
    assert math_segments("$$ $x$") == [(0, 4, "$ ")]  # `$$` needs `$$` to close; then `$` takes the nearest `$`
    assert math_segments("\\(" * 5 + "1") == [] and math_segments("$") == [] and math_segments("$$") == []


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("#### 1,000", "1,000"),
    ("#### Final answer\nThe total is 5.", None),  # a markdown heading, not GSM8K's answer line
    ("no marker 42", None),
])
def test_hash_marker(text, expected):
    assert hash_marker(text) == expected


def test_last_math_segment_and_last_number():
    assert last_math_segment("we get $x=1$ and then $y = 2$ here") == "y = 2"
    assert last_math_segment("none") is None
    assert last_number("From 3 to 1,250 m") == "1,250"
    assert last_number("a ratio of 3/4 overall") == "3/4"
    assert last_number("growth of 12.5% a year") == "12.5%"
    assert last_number("temperature \u22125 degrees") == "-5"
    assert last_number("x2 and y3") is None  # digits glued to words are not numbers
    assert last_number("no digits") is None


@pytest.mark.parametrize("text, expected", [
    ("So \\boxed{4}. The answer is 5.", "4"),  # \boxed first
    ("The answer is 5. Indeed 6 is wrong.", "5"),  # then the answer-is phrase
    ("\\frac{1}{2}", "\\frac{1}{2}"),  # then the whole text when it is an expression
    ("$\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("We find $x = 4$ after simplifying.", "x = 4"),  # then the last math segment
    ("It costs 12 dollars and 3 cents", "3"),  # then the last number
    ("Each box has 8.\n#### 24", "24"),  # GSM8K's answer line, before the "answer is" phrase
    ("no idea", None),
    ("", None),
])
def test_candidate_order(text, expected):
    assert candidate(text) == expected
