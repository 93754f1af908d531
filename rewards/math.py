"""`math`: answer extraction and mathematical equivalence, on math-verify (HuggingFace) with sympy.

Extraction (`rewards.extract.candidate`) runs on the final-answer text only (after `</think>` in long mode).
Equivalence is math-verify's `parse` + `verify` (fractions, percentages, units and `\\text{}`, LaTeX, symbolic
expressions, equations, tuples, sets, intervals, matrices). Added here, what it lacks: a relative tolerance for
decimals (`rel_tol`, or exact decimals with 0), unwrapping a whole-answer `\\text{...}`, a normalisation of both
sides (`normalize_answer`: unicode signs, `1.5e3`, `1\\,000`, number words, `**bold**`), units that must agree
when both sides name one (`answer_unit`), the percentage conventions, `i` as the imaginary unit, inequalities
against intervals, sets in braces against tuples, and caps on the parsed answer's length and bracket depth. The
conventions are REWARDS.md's (section 2); tests/rewards/data/math_equivalence.jsonl holds the labelled cases.

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

    rel_tol: float = 0.0
    """Decimals: 0 (the default) compares exactly: a decimal is the exact number it writes (0.142857 is
    142857/10^6, not 1/7; 0.375 = 3/8), math-verify's rounding to `float_rounding` places is not used, and only
    `abs_tol` remains, so a rounded decimal is not equal to an exact reference. Above 0, when either side holds a
    decimal number, |pred - ref| <= rel_tol * |ref| counts as equal (1e-4 is Qwen2.5-Math's `numeric_equal`
    default: 0.33333 = 1/3). Exact numbers (integers, fractions, pi) are always compared exactly."""
    abs_tol: float = 1e-9
    """Absolute tolerance of the same test, for references at or near zero."""
    float_rounding: int = 6
    """math-verify: decimal places floats are rounded to before its own comparison (with rel_tol > 0)."""
    strict: bool = True
    """math-verify strict mode: variable names matter and sets are not compared with tuples."""
    parse_timeout_s: int = 2
    """math-verify's per-parse limit (signal.alarm, whole seconds), applied only on a main thread."""
    verify_timeout_s: int = 2
    """math-verify's per-comparison limit, same rules."""
    max_answer_chars: int = 1000
    """An extracted answer longer than this is not parsed and scores `incorrect`."""
    max_nesting: int = 8
    """An extracted answer whose brackets (`(`, `[`, `{`) nest deeper than this is not parsed and scores
    `incorrect`: math-verify's LaTeX parser takes time exponential in the depth (about 1 s at depth 10)."""
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


# ---------------------------------------------------------------------------------------- normalisation (both sides)
# Each pattern here is linear in the string's length; the strings are at most `max_answer_chars` long anyway.

_UNICODE = {"\u03c0": "\\pi ", "\u00b0": "^{\\circ}", "\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ",
            "\u221e": "\\infty ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u221a": "\\sqrt"}
_SCI_E = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")  # 1.5e3, 2E-4
_PI_WORD = re.compile(r"(?<![A-Za-z\\])pi(?![A-Za-z])")
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:\\[,;:! ]\d{3})+(?![\d.])")  # 1\,000 (a LaTeX thin space)
_LATEX_SPACE = re.compile(r"\\[,;:! ]")
_PERCENT_WORD = re.compile(r"(?<=\d)\s*(?:\\(?:text|mathrm|mbox)\s*\{\s*per\s?cent\s*\}|per\s?cent\b)", re.IGNORECASE)
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {w: i for i, w in enumerate(_ONES)}
_NUMBER_WORDS.update({t: 20 + 10 * i for i, t in enumerate(_TENS)})
_NUMBER_WORDS.update({f"{t}{sep}{o}": 20 + 10 * i + j for i, t in enumerate(_TENS) for j, o in enumerate(_ONES[1:10], 1)
                      for sep in ("-", " ")})
_NUMBER_WORDS.update({"hundred": 100, "one hundred": 100, "a hundred": 100, "thousand": 1000, "one thousand": 1000,
                      "a thousand": 1000})


def number_word(text: str) -> str | None:
    """The digits of an answer that is one number word (`five`, `\\text{Twenty-one}`, `zero.`), else None."""
    s = _unwrap_text(strip_math_delims(text)).strip().rstrip(".").strip().lower()
    value = _NUMBER_WORDS.get(" ".join(s.split()))
    return None if value is None else str(value)


def normalize_answer(s: str) -> str:
    """The string math-verify parses: unicode signs as LaTeX (`π`, `°`, `−`, `×`, `√`, ...), markdown bold removed,
    `1.5e3` as `1.5\\times10^{3}`, a bare word `pi` as `\\pi`, `1\\,000` as `1000`, a number word as its digits."""
    s = s.strip()
    if len(s) > 4 and s.startswith("**") and s.endswith("**"):
        s = s.strip("*").strip()
    if any(c in s for c in _UNICODE):
        s = "".join(_UNICODE.get(c, c) for c in s)
    s = _SCI_E.sub(lambda m: f"{m.group(1)}\\times10^{{{m.group(2)}}}", s)
    s = _PI_WORD.sub(lambda m: "\\pi ", s)
    s = _SPACED_THOUSANDS.sub(lambda m: _LATEX_SPACE.sub("", m.group(0)), s)
    s = _PERCENT_WORD.sub(lambda m: "\\%", s)  # 25 percent, 25\text{ percent}
    return number_word(s) or s


def nesting_depth(s: str) -> int:
    """How deep `(`, `[` and `{` nest; an opener that is never closed counts too (`((((` is 4 deep)."""
    depth = deepest = 0
    for c in s:
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth = max(depth - 1, 0)
    return deepest


# ------------------------------------------------------------------------------------------------------------ units
# A unit is ignored when one side has none (`5 cm` = `5`); when both sides end with a unit of the table, the units
# must be the same (`5 cm` != `5 m`; no conversions: `100 cm` != `1 m`).

_UNIT_NAMES = {
    "mm": "mm millimeter millimetre", "cm": "cm centimeter centimetre", "m": "m meter metre",
    "km": "km kilometer kilometre", "in": "in inch", "ft": "ft foot feet", "yd": "yd yard", "mi": "mi mile",
    "mg": "mg milligram", "g": "g gram gramme", "kg": "kg kilogram", "lb": "lb pound", "oz": "oz ounce",
    "ms": "ms millisecond", "s": "s sec second", "min": "min minute", "h": "h hr hour", "day": "day", "week": "week",
    "month": "month", "year": "year yr", "ml": "ml milliliter millilitre", "l": "l liter litre",
    "dollar": "dollar usd", "cent": "cent", "degree": "degree deg", "radian": "radian rad", "km/h": "km/h kph",
    "mph": "mph", "m/s": "m/s",
}
_UNIT_OF = {alias: key for key, names in _UNIT_NAMES.items() for alias in names.split()}
_TEXT_GROUP = re.compile(r"\\(?:text|mathrm|textrm|mbox|operatorname)\s*\{([^{}]*)\}")
_UNIT_TOKEN = re.compile(r"\s+|\\[,;:! ]|~|\^\s*(?:\{\s*)?\\circ\s*\}?|\^\s*(?:\{\s*)?[23]\s*\}?|\\circ|\x00\d+\x00"
                         r"|(?<![\\A-Za-z])[A-Za-z]+(?:/[A-Za-z]+)?(?![A-Za-z])")
_UNIT_WORD = re.compile(r"[A-Za-z]+(?:/[A-Za-z]+)?|\^\s*(?:\{\s*)?[23]")


def _unit_key(word: str) -> str | None:
    word = word.lower()
    for form in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
        if form in _UNIT_OF:
            return _UNIT_OF[form]
    return None


def answer_unit(s: str) -> str | None:
    """The unit an answer ends with (`cm`, `cm^2`, `degree`, `dollar`, ...): None when it has none, or one that is
    not in the table (`square units`), or letters that are not units (`2x`)."""
    groups: list[str] = []

    def mask(m: re.Match) -> str:
        groups.append(m.group(1))
        return f"\x00{len(groups) - 1}\x00"

    masked = _TEXT_GROUP.sub(mask, s.strip())
    tokens: list[str] = []
    end = len(masked)
    for m in reversed(list(_UNIT_TOKEN.finditer(masked))):  # the tokens that end the string, from its end
        if m.end() != end:
            break
        tokens.insert(0, m.group(0))
        end = m.start()
    if end == 0:  # nothing before the unit: not a quantity
        tokens = []
    words: list[str] = []
    for token in tokens:
        if token.startswith("\x00"):
            words.extend(_UNIT_WORD.findall(groups[int(token.strip("\x00"))]))
        elif "\\circ" in token:
            words.append("degree")
        elif token.startswith("^") or token[0].isalpha():
            words.append(token)
    if not words:
        return "dollar" if masked.startswith(("\\$", "$")) else None
    power, units = "", []
    for w in words:
        if w.startswith("^"):
            power = "2" if "2" in w else "3"
        elif w.lower() in ("square", "sq"):
            power = "2"
        elif w.lower() == "cubic":
            power = "3"
        elif (key := _unit_key(w)) is not None:
            units.append(key)
        else:
            return None  # a word that is not a unit: this is not a unit phrase
    return units[0] + (f"^{power}" if power else "") if len(units) == 1 else None


def parse_math(text: str, config: MathConfig = MathConfig(), lenient: bool = False) -> list[Any]:
    """math-verify's parse of one extracted answer string: a list of sympy objects and strings (its raw-string
    fallback when nothing parses).

    Strict (the default): the string must be one LaTeX/plain expression as a whole. Lenient (an "answer is" phrase
    that goes on in prose, e.g. "5 apples because ..."): math-verify may also pick an expression out of the text."""
    s = normalize_answer(_unwrap_text(strip_math_delims(text)))
    if not s:
        return []
    timeout = _alarm(config.parse_timeout_s)
    parsed = parse(f"${s}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                   parsing_timeout=timeout)
    number_text = s.rstrip()[:-1].removesuffix("\\").rstrip() if s.rstrip().endswith("%") else ""
    if all(isinstance(p, str) for p in parsed) and number_text:
        # math-verify reads `50\%` but not every `X\%` (`33\frac{1}{3}\%`): parse X, then mark it a percentage
        # as math-verify does (X * UnevaluatedExpr(1/100))
        import sympy

        number = parse(f"${number_text}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                       parsing_timeout=timeout)
        if number and isinstance(number[0], sympy.Expr):
            return [sympy.Mul(number[0], sympy.UnevaluatedExpr(sympy.Rational(1, 100)), evaluate=False), s]
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


def _readings(parsed: list[Any], exact: bool) -> tuple[list[Any], list[Any] | None, bool]:
    """(the parsed answer as math-verify compares it, the same with each percentage's sign dropped or None when it has
    none, whether it is a number written as digits: an integer or a decimal, not a fraction or an expression).
    Every `i` is the imaginary unit (math-verify makes it one only in some forms). `exact`: decimals become the
    exact rationals they write, so that math-verify's rounding cannot make 0.142857 equal to 1/7."""
    import sympy

    percent = sympy.UnevaluatedExpr(sympy.Rational(1, 100))
    out, stripped, has_percent = [], [], False
    plain = any(isinstance(obj, (sympy.Integer, sympy.Float)) for obj in parsed)
    for obj in parsed:
        if isinstance(obj, (sympy.Basic, sympy.MatrixBase)):
            try:
                obj = obj.xreplace({x: sympy.I for x in obj.free_symbols if getattr(x, "name", None) == "i"})
                if exact:
                    obj = obj.xreplace({f: sympy.Rational(str(f)) for f in obj.atoms(sympy.Float)})
                if obj.has(percent):
                    has_percent = True
                    stripped.append(obj.replace(
                        lambda e: isinstance(e, sympy.Mul) and len(e.args) == 2 and e.args[1] == percent,
                        lambda e: e.args[0]))
                    out.append(obj)
                    continue
            except Exception:  # noqa: BLE001 - sympy raises many kinds on odd input; keep the object as parsed
                pass
        out.append(obj)
        stripped.append(obj)
    return out, (stripped if has_percent else None), plain


def _braces_vs_parentheses(a: str, b: str) -> bool:
    """One side is written as a set (`\\{1, 2\\}`), the other in parentheses (`(1, 2)`: a tuple or an interval)."""
    def kind(s: str) -> str:
        s = s.strip().replace("\\left", "").replace("\\right", "").strip()
        if s.startswith("\\{") and s.endswith("\\}"):
            return "set"
        return "paren" if s[:1] == "(" and s[-1:] in ")]" else ""
    return {kind(a), kind(b)} == {"set", "paren"}


def _memory_note() -> str:
    """Where this process runs under an address-space limit (a sandboxed reward worker: reward.memory_mb), a note
    that the parse may have run out of it: math-verify reports a MemoryError as a failed parse."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return ""
    return (f" (or the parse ran out of memory: this reward worker's address space is limited to "
            f"{limit // 2**20} MB, reward.memory_mb)")


def math_equal(pred: str, reference: str, config: MathConfig = MathConfig(), lenient: bool = False,
               unit_text: str | None = None) -> bool:
    """Whether an extracted answer string is mathematically equivalent to the reference string.
    lenient: the answer may carry prose around the expression (see `parse_math`). unit_text: where to read the
    answer's unit when `pred` lost it (a number taken out of "5 cents"); `pred` by default.

    Beyond math-verify: two different units of the table are not equal (`5 cm` != `5 m`); a percentage equals its
    fraction (`50%` = `0.5`) and, against a number written as digits, its number (`50%` = `50`, but `0.25%` !=
    `\\frac{1}{4}`); an inequality equals its interval (`x \\le 3` = `(-\\infty, 3]`); a set in braces is not a
    tuple (`\\{1, 2\\}` != `(1, 2)`); `rel_tol` for decimals, or exact decimals with `rel_tol=0`."""
    if len(pred) > config.max_answer_chars or nesting_depth(pred) > config.max_nesting:
        return False
    pred_unit, ref_unit = answer_unit(pred if unit_text is None else unit_text), answer_unit(reference)
    if pred_unit and ref_unit and pred_unit != ref_unit:
        return False
    if _braces_vs_parentheses(pred, reference):
        return False
    gold = parse_math(reference, config)
    if all(isinstance(g, str) for g in gold):  # math-verify falls back to the raw string when parsing fails
        raise ValueError(f"the reference answer could not be parsed as mathematics: {reference[:100]!r}"
                         + _memory_note())
    target = parse_math(pred, config, lenient=lenient)
    if not target:
        return False
    exact = config.rel_tol == 0
    (gold_v, gold_p, gold_plain), (target_v, target_p, target_plain) = _readings(gold, exact), _readings(target, exact)
    pairs = [(gold_v, target_v)]
    if gold_p is not None and target_p is not None:
        pairs.append((gold_p, target_p))
    elif target_p is not None and gold_plain:  # 50% against 50
        pairs.append((gold_v, target_p))
    elif gold_p is not None and target_plain:
        pairs.append((gold_p, target_v))
    for g, t in pairs:
        if verify(g, t, float_rounding=config.float_rounding, strict=config.strict, allow_set_relation_comp=True,
                  timeout_seconds=_alarm(config.verify_timeout_s)):
            return True
    close = [(gold, target)] if exact else pairs  # exact: the decimals as parsed, against abs_tol only
    return any(_numeric_close(g, t, config) for g, t in close) or _symbol_vs_expression(gold_v, target_v)


@register_reward("math", config=MathConfig)
def math_reward(sample: RewardInput, config: MathConfig = MathConfig()) -> float | None:
    """1 if the final answer is mathematically equivalent to the reference, else 0; None without a reference."""
    if sample.reference is None or str(sample.reference).strip() == "":
        return None
    answer = sample.answer_text.strip()
    pred, source = candidate_with_source(answer, max_chars=config.max_answer_chars)
    if pred is None and answer and "\n" not in answer and len(answer) <= 100:
        pred, source = number_word(answer) or strip_math_delims(answer), "short text"  # "five", "Evelyn"
    if pred is None:
        return config.incorrect
    lenient = source == "phrase" and not is_bare_expression(pred)
    unit_text = None
    if source == "number" and len(answer) <= config.max_answer_chars:  # a number out of prose: keep its unit, its %
        unit_text = strip_math_delims(answer)
        after = answer[answer.rfind(pred) + len(pred):] if pred in answer else ""
        if _PERCENT_WORD.match(pred[-1:] + after, 1):
            pred += "\\%"
    equal = math_equal(pred, reference_candidate(sample.reference), config, lenient=lenient, unit_text=unit_text)
    return config.correct if equal else config.incorrect
