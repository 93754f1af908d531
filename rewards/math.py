"""`math`: answer extraction and mathematical equivalence, on math-verify (HuggingFace) with sympy.

Extraction (`rewards.extract.candidate`) runs on the final-answer text only (after `</think>` in long mode).
Equivalence is math-verify's `parse` + `verify` (fractions, percentages, units and `\\text{}`, LaTeX, symbolic
expressions, equations, tuples, sets, intervals, matrices). Added here, what it lacks: a relative tolerance for
decimals (`rel_tol`), unwrapping a whole-answer `\\text{...}`, and a length cap on the parsed answer.

Safety (why math-verify is acceptable): its LaTeX path is an ANTLR grammar that builds sympy objects (no eval);
its plain-expression path calls sympy `parse_expr` only on strings its regex limits to digits, `.`, spaces and
`+-*/^()` (no names can reach eval). Neither bounds time or memory, so this reward runs in the sandbox's workers.
Its own `signal.alarm` timeouts are used only on a main thread (as in a sandbox worker) and are the soft limit
(a timed-out comparison counts as not equal); the sandbox's kill is the hard one.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from .api import RewardInput, register_reward
from .extract import candidate_with_source, is_bare_expression, last_boxed, strip_math_delims

logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeout warnings are expected here
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)


@dataclass(frozen=True)
class MathConfig:
    """Options of the `math` verifier."""

    rel_tol: float = 1e-4
    """Decimals: when either side holds a decimal number, |pred - ref| <= rel_tol * |ref| counts as equal
    (Qwen2.5-Math's `numeric_equal` default). Exact numbers (integers, fractions, pi) are compared exactly."""
    abs_tol: float = 1e-9
    """Absolute tolerance of the same test, for references at or near zero."""
    float_rounding: int = 6
    """math-verify: decimal places floats are rounded to before its own comparison."""
    strict: bool = True
    """math-verify strict mode: variable names matter and sets are not compared with tuples."""
    parse_timeout_s: int = 2
    """math-verify's per-parse limit (signal.alarm, whole seconds), applied only on a main thread."""
    verify_timeout_s: int = 2
    """math-verify's per-comparison limit, same rules."""
    max_answer_chars: int = 1000
    """An extracted answer longer than this is not parsed and scores `incorrect`."""
    correct: float = 1.0
    """Score of an equivalent answer."""
    incorrect: float = 0.0
    """Score of a wrong answer, or of no answer (long mode without `</think>`, nothing extractable)."""


def _alarm(seconds: int) -> int | None:
    """math-verify's signal timeout where signals work (a main thread), else none (the sandbox bounds time)."""
    return seconds if seconds and threading.current_thread() is threading.main_thread() else None


def _unwrap_text(s: str) -> str:
    m = re.fullmatch(r"\\(?:text|textbf|mathrm|mbox)\s*\{(.*)\}", s.strip(), re.DOTALL)
    return m.group(1).strip() if m and "}" not in m.group(1) else s


def parse_math(text: str, config: MathConfig = MathConfig(), lenient: bool = False) -> list[Any]:
    """math-verify's parse of one extracted answer string: a list of sympy objects and strings (its raw-string
    fallback when nothing parses).

    Strict (the default): the string must be one LaTeX/plain expression as a whole. Lenient (an "answer is" phrase
    that goes on in prose, e.g. "5 apples because ..."): math-verify may also pick an expression out of the text."""
    s = _unwrap_text(strip_math_delims(text))
    if not s:
        return []
    timeout = _alarm(config.parse_timeout_s)
    parsed = parse(f"${s}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                   parsing_timeout=timeout)
    if lenient and all(isinstance(p, str) for p in parsed):
        return parse(s, extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
                     parsing_timeout=timeout)
    return parsed


def _numeric_close(gold: list[Any], pred: list[Any], config: MathConfig) -> bool:
    import sympy

    for g in gold:
        for p in pred:
            if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
                continue
            if not (g.has(sympy.Float) or p.has(sympy.Float)) or not (g.is_number and p.is_number):
                continue
            if sympy.count_ops(g) > 50 or sympy.count_ops(p) > 50:
                continue
            try:
                gv, pv = complex(sympy.N(g, 30)), complex(sympy.N(p, 30))
            except (TypeError, ValueError, OverflowError, ZeroDivisionError):
                continue
            if gv.imag or pv.imag:
                continue
            if abs(pv.real - gv.real) <= max(config.rel_tol * abs(gv.real), config.abs_tol):
                return True
    return False


def _symbol_vs_expression(gold: list[Any], pred: list[Any]) -> bool:
    """math-verify compares a bare symbol only with symbols (so that text answers match), so `x` vs `\\frac{2x}{2}`
    fails there; here a symbol and a small expression are equal when their difference simplifies to 0."""
    import sympy

    for g in gold:
        for p in pred:
            if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
                continue
            if isinstance(g, sympy.Symbol) == isinstance(p, sympy.Symbol):
                continue  # neither or both: math-verify's own comparison applies
            if not (g.free_symbols and p.free_symbols) or sympy.count_ops(g) + sympy.count_ops(p) > 50:
                continue
            try:
                if sympy.simplify(g - p) == 0:
                    return True
            except Exception:  # noqa: BLE001 - sympy raises many kinds on odd input
                continue
    return False


def reference_candidate(reference: Any) -> str:
    """The reference answer's string: the last `\\boxed{}` in it if any, delimiters stripped."""
    s = str(reference).strip()
    boxed = last_boxed(s)
    return strip_math_delims(boxed if boxed is not None else s)


def math_equal(pred: str, reference: str, config: MathConfig = MathConfig(), lenient: bool = False) -> bool:
    """Whether an extracted answer string is mathematically equivalent to the reference string.
    lenient: the answer may carry prose around the expression (see `parse_math`)."""
    if len(pred) > config.max_answer_chars:
        return False
    gold = parse_math(reference, config)
    if all(isinstance(g, str) for g in gold):  # math-verify falls back to the raw string when parsing fails
        raise ValueError(f"the reference answer could not be parsed as mathematics: {reference[:100]!r}")
    target = parse_math(pred, config, lenient=lenient)
    if not target:
        return False
    if verify(gold, target, float_rounding=config.float_rounding, strict=config.strict,
              timeout_seconds=_alarm(config.verify_timeout_s)):
        return True
    return _numeric_close(gold, target, config) or _symbol_vs_expression(gold, target)


@register_reward("math", config=MathConfig)
def math_reward(sample: RewardInput, config: MathConfig = MathConfig()) -> float | None:
    """1 if the final answer is mathematically equivalent to the reference, else 0; None without a reference."""
    if sample.reference is None or str(sample.reference).strip() == "":
        return None
    pred, source = candidate_with_source(sample.answer_text, max_chars=config.max_answer_chars)
    if pred is None:
        return config.incorrect
    lenient = source == "phrase" and not is_bare_expression(pred)
    equal = math_equal(pred, reference_candidate(sample.reference), config, lenient=lenient)
    return config.correct if equal else config.incorrect
