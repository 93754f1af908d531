"""`exact`, `regex` and `number`: string and numeric verifiers for short reference answers.

No text is evaluated: numbers are read with `fractions.Fraction` from strings a regex has checked.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

from .api import RewardInput, register_reward, single_answer
from .extract import answer_phrase, candidate, last_boxed, last_number, strip_math_delims

# ---------------------------------------------------------------------------------------------------------- exact


@dataclass(frozen=True)
class ExactConfig:
    """Options of the `exact` verifier."""

    case_sensitive: bool = False
    """Compare with case."""
    strip_punctuation: bool = True
    """Ignore punctuation at both ends and collapse runs of white space."""
    use_boxed: bool = True
    """Compare the last `\\boxed{}` (else the last "answer is" phrase) when there is one, else the whole answer."""


def normalize_text(text: str, config: ExactConfig = ExactConfig()) -> str:
    """The comparison form of a string under the config."""
    s = strip_math_delims(text)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = " ".join(s.split())
    if config.strip_punctuation:
        s = s.strip(string.punctuation + " ")
    return s if config.case_sensitive else s.casefold()


def _answer_string(answer: str, use_boxed: bool) -> str:
    if use_boxed:
        for step in (last_boxed, answer_phrase):
            found = step(answer)
            if found is not None and found.strip():
                return found
    return answer


def check_exact_reference(answer: Any, meta: Mapping[str, Any]) -> str | None:
    """Any reference: one answer, or a list of accepted answers."""
    return None


@register_reward("exact", config=ExactConfig, check_reference=check_exact_reference)
def exact_reward(sample: RewardInput, config: ExactConfig = ExactConfig()) -> float | None:
    """1 if the answer equals the reference (or one of a list of references) after normalisation, else 0."""
    if sample.reference is None:
        return None
    references = sample.reference if isinstance(sample.reference, (list, tuple)) else [sample.reference]
    got = normalize_text(_answer_string(sample.answer_text, config.use_boxed), config)
    return 1.0 if any(got == normalize_text(str(r), config) for r in references) else 0.0


# ---------------------------------------------------------------------------------------------------------- regex


@dataclass(frozen=True)
class RegexConfig:
    """Options of the `regex` verifier."""

    fullmatch: bool = True
    """The pattern must match the whole (stripped) answer; False: anywhere in it."""
    ignore_case: bool = True
    """re.IGNORECASE."""
    use_boxed: bool = False
    """Match the last `\\boxed{}` (else "answer is" phrase) when the answer has one."""


def check_regex_reference(answer: Any, meta: Mapping[str, Any]) -> str | None:
    """The pattern (`meta["pattern"]`, else the reference) must compile."""
    if problem := single_answer(answer, "regex"):
        return problem
    try:
        re.compile(str(meta.get("pattern", answer)))
    except re.error as e:
        return "the regex pattern does not compile" f" ({e}) (reward 'regex')"  # split: test_safety scans for calls
    return None


@register_reward("regex", config=RegexConfig, check_reference=check_regex_reference)
def regex_reward(sample: RewardInput, config: RegexConfig = RegexConfig()) -> float | None:
    """1 if the answer matches the pattern (`meta["pattern"]`, else the reference), else 0.

    The pattern comes from the data set (trusted); the answer is untrusted text, and a pattern with catastrophic
    backtracking is bounded by the sandbox's time limit."""
    pattern = sample.meta.get("pattern", sample.reference)
    if pattern is None:
        return None
    regex = re.compile(str(pattern), re.IGNORECASE if config.ignore_case else 0)
    text = _answer_string(sample.answer_text, config.use_boxed).strip()
    found = regex.fullmatch(text) if config.fullmatch else regex.search(text)
    return 1.0 if found else 0.0


# --------------------------------------------------------------------------------------------------------- number


@dataclass(frozen=True)
class NumberConfig:
    """Options of the `number` verifier."""

    rel_tol: float = 1e-4
    """Relative tolerance: |pred - ref| <= max(rel_tol * |ref|, abs_tol)."""
    abs_tol: float = 1e-9
    """Absolute tolerance, for references at or near zero."""
    percent: str = "strip"
    """A `%` sign: `strip` (50% reads as 50), `divide` (50% reads as 0.5) or `either` (accepts both readings)."""


_NUM = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_SCI = re.compile(r"^(.+?)\s*(?:\\times|\\cdot|x|\*|×)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")


def parse_number(text: str) -> list[Fraction]:
    """The values a number string can mean (one, or two for a percentage under `either`); [] if not a number.

    Accepts `-1,234.5`, `3/4`, `\\frac{3}{4}`, `1.5e3`, `1.5 \\times 10^{3}`, `50%`, `$5`, a unicode minus."""
    s = strip_math_delims(str(text)).replace("\u2212", "-").replace("\\!", "").replace("\\,", "")
    s = "".join(s.split())  # no white space left: `_FRAC` and `_SCI` then match in linear time
    s = re.sub(r"^\\?\$", "", s)
    percent = s.endswith("%")
    s = s.rstrip("%").rstrip("\\")
    frac = _FRAC.fullmatch(s)
    if frac:
        s = f"{frac.group(1)}/{frac.group(2)}"
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    sci = _SCI.match(s)
    value: Fraction | None = None
    try:
        if sci and _NUM.fullmatch(sci.group(1)) and abs(int(sci.group(2))) <= 400:
            value = Fraction(sci.group(1)) * Fraction(10) ** int(sci.group(2))
        elif "/" in s:
            num, _, den = s.partition("/")
            if _NUM.fullmatch(num) and _NUM.fullmatch(den):
                value = Fraction(num) / Fraction(den)
        elif _NUM.fullmatch(s) and ("e" not in s.lower() or abs(int(re.split("[eE]", s)[1])) <= 400):
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return []
    if value is None:
        return []
    return [value, value / 100] if percent else [value]


def _readings(text: str, percent_mode: str) -> list[Fraction]:
    values = parse_number(text)
    if len(values) == 2:  # a percentage: (as written, divided by 100)
        return {"strip": values[:1], "divide": values[1:], "either": values}[percent_mode]
    return values


def number_close(pred: Fraction, ref: Fraction, config: NumberConfig = NumberConfig()) -> bool:
    """The tolerance test of `number`."""
    return abs(pred - ref) <= max(Fraction(config.rel_tol) * abs(ref), Fraction(config.abs_tol))


def check_number_reference(answer: Any, meta: Mapping[str, Any]) -> str | None:
    """The reference must read as a number (`parse_number`)."""
    if problem := single_answer(answer, "number"):
        return problem
    return None if parse_number(str(answer)) else f"{answer!r} is not a number (reward 'number')"


@register_reward("number", config=NumberConfig, check_reference=check_number_reference)
def number_reward(sample: RewardInput, config: NumberConfig = NumberConfig()) -> float | None:
    """1 if the answer's number equals the reference within the tolerance, else 0."""
    if config.percent not in ("strip", "divide", "either"):
        raise ValueError(f"percent must be strip, divide or either, got {config.percent!r}")
    if sample.reference is None:
        return None
    refs = _readings(str(sample.reference), config.percent)
    if not refs:
        raise ValueError(f"the reference {str(sample.reference)[:80]!r} is not a number")
    text = candidate(sample.answer_text, max_chars=200)
    preds = _readings(text, config.percent) if text is not None else []
    if not preds and text is not None:
        inner = last_number(text)
        preds = _readings(inner, config.percent) if inner else []
    return 1.0 if any(number_close(p, r, config) for p in preds for r in refs) else 0.0

