"""Answer extraction from a final-answer text: pure string functions shared by the verifiers (no parsing of math).

The order the verifiers use (`candidate`): the last `\\boxed{...}`, then GSM8K's `#### answer` line when it holds an
expression, then the last "answer is ..." phrase, then the whole text when it is a bare expression, then the last
`$...$`-style math segment, then the last number.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
# Each pattern below is linear in the text's length (model text can be any 100 000 characters): no two adjacent
# quantifiers over the same characters, and a word-start lookbehind where a pattern begins with a repeated class.
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:\*\*\s*)?(?:is\s*(?::|=)?|:|=)\s*(?:\*\*\s*)?", re.IGNORECASE)
_SEGMENT_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SEGMENT_START = re.compile(r"\$|\\[(\[]")
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?:\s*\\?%)?"
                     r"|(?<![\w.])[-\u2212]?\.\d+(?:\s*\\?%)?")
_HASH_MARKER = re.compile(r"^[ \t]*####[ \t]*(\S[^\n]*)", re.MULTILINE)  # GSM8K's final line: "#### 42"
_BOXED_TOKEN = re.compile(r"[^\s$]+")
_LATEX_COMMAND = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]*\}|\\[A-Za-z]+")
_TEXT_ARG = re.compile(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{[^{}]*\}")
_PROSE = re.compile(r"(?<![A-Za-z])[A-Za-z]{2,}[\s,;]+[A-Za-z]{2,}")  # from a word's start: linear
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log exp sqrt abs min max gcd lcm mod det "
    "inf infty infinity undefined".split())


def _closing_braces(text: str) -> dict[int, int]:
    """{index of an unescaped `{`: index of its matching `}`}, in one pass (a `{` or `}` after a backslash does not
    count; a `}` with no open brace is skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for j, c in enumerate(text):
        if c in "{}" and j > 0 and text[j - 1] == "\\":
            continue
        if c == "{":
            stack.append(j)
        elif c == "}" and stack:
            pairs[stack.pop()] = j
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) with balanced braces; None if none.

    Linear: the braces are matched once for the whole text (an unbalanced box falls back to an earlier one)."""
    pairs: dict[int, int] | None = None
    for match in reversed(list(_BOXED.finditer(text))):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _closing_braces(text)
            if i in pairs:
                return text[i + 1:pairs[i]]
            continue  # unbalanced: try an earlier one
        if i > match.end():
            token = _BOXED_TOKEN.match(text, i)
            if token:
                return token.group(0)
    return None


def answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "final answer:" / "Answer:" phrase, to the end of its sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    segment = _segment_at(rest.lstrip(), 0, {})
    if segment:
        return segment[2].strip()
    line = rest.split("\n", 1)[0]
    line = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0]  # a full stop, not a decimal point
    line = line.strip().strip("*").strip()
    return line.rstrip(".").strip() or None


def hash_marker(text: str) -> str | None:
    """What follows the last line-initial `####` (GSM8K's answer line), when it is an expression, not prose (a
    markdown heading such as `#### Final answer` is not an answer)."""
    found = None
    for match in _HASH_MARKER.finditer(text):
        found = match.group(1).strip()
    return found if found and is_bare_expression(strip_math_delims(found)) else None


def strip_math_delims(text: str) -> str:
    """Text without surrounding `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`, trailing full stops and spaces.

    Works on indices, so that a text of many nested delimiters (`$` * 100 000) costs linear time."""
    lo, hi = 0, len(text)
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    changed = True
    while changed:
        changed = False
        while hi > lo and text[hi - 1] in ". ":  # s.rstrip(". ")
            hi -= 1
        while lo < hi and text[lo].isspace():  # .strip()
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        for open_, close in _SEGMENT_DELIMS:
            if hi - lo >= len(open_) + len(close) and text.startswith(open_, lo) and text.endswith(close, lo, hi):
                inner_lo, inner_hi = lo + len(open_), hi - len(close)
                if open_ == "$" and text.find("$", inner_lo, inner_hi) != -1:
                    continue
                lo, hi, changed = inner_lo, inner_hi, True
                while lo < hi and text[lo].isspace():
                    lo += 1
                while hi > lo and text[hi - 1].isspace():
                    hi -= 1
                break
    return text[lo:hi]


def is_bare_expression(text: str) -> bool:
    """True when the text looks like mathematics rather than prose: outside LaTeX commands and `\\text{}`
    arguments, no two consecutive words and no word of 3+ letters other than a function name (sin, log, ...)."""
    rest = _TEXT_ARG.sub(" ", text)
    rest = _LATEX_COMMAND.sub(" ", rest)
    if "\n" in text.strip() or _PROSE.search(rest):
        return False
    return all(w.lower() in _MATH_WORDS for w in _WORD.findall(rest))


def _find_from(text: str, needle: str, start: int, cache: dict[str, tuple[int, int]]) -> int:
    """text.find(needle, start), remembering the last answer per needle: searches that move forward reuse it, so a
    text with many openers and no closer costs one scan, not one per opener."""
    if needle in cache:
        since, found = cache[needle]
        if since <= start and (found == -1 or found >= start):
            return found
    found = text.find(needle, start)
    cache[needle] = (start, found)
    return found


def _segment_at(text: str, i: int, cache: dict[str, tuple[int, int]]) -> tuple[int, int, str] | None:
    """The math segment that starts at `i`: (start, end, content), or None. The rules of the regex it replaces
    (`$$(.+?)$$`, `$(.+?)$`, `\\((.+?)\\)`, `\\[(.+?)\\]`, DOTALL, matched at `i`): non-empty content, the nearest
    closer, `$$` tried before `$`."""
    for open_, close in _SEGMENT_DELIMS:
        if text.startswith(open_, i):
            k = _find_from(text, close, i + len(open_) + 1, cache)
            if k != -1:
                return i, k + len(close), text[i + len(open_):k]
    return None


def math_segments(text: str) -> list[tuple[int, int, str]]:
    """The `$...$`, `$$...$$`, `\\(...\\)` and `\\[...\\]` segments, left to right and not overlapping, as
    (start, end, content): what `re.finditer` of the regex above gives, in linear time."""
    found: list[tuple[int, int, str]] = []
    cache: dict[str, tuple[int, int]] = {}
    pos = 0
    while True:
        start = _SEGMENT_START.search(text, pos)
        if start is None:
            return found
        segment = _segment_at(text, start.start(), cache)
        if segment is None:
            pos = start.start() + 1
        else:
            found.append(segment)
            pos = segment[1]


def last_math_segment(text: str) -> str | None:
    """The last `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` segment's content."""
    segments = math_segments(text)
    found = segments[-1][2] if segments else None
    return found.strip() if found else None


def last_number(text: str) -> str | None:
    """The last number in the text: integer, decimal, `1,234`, `3/4`, with a `%` sign if it has one."""
    found = None
    for match in _NUMBER.finditer(text):
        found = match.group(0)
    return found.replace("\u2212", "-").strip() if found else None


def candidate_with_source(text: str, max_chars: int | None = None) -> tuple[str | None, str | None]:
    """(candidate, where it came from): `boxed`, `marker`, `phrase`, `whole`, `segment`, `number`, or (None, None)."""
    text = text.strip()
    if not text:
        return None, None
    for source, step in (("boxed", last_boxed), ("marker", hash_marker), ("phrase", answer_phrase)):
        found = step(text)
        if found is not None and found.strip():
            return strip_math_delims(found), source
    bare = strip_math_delims(text)
    if bare and is_bare_expression(bare):
        if max_chars is not None and len(bare) > max_chars:
            return None, None  # the whole answer is an expression too long to be one
        return bare, "whole"
    for source, step in (("segment", last_math_segment), ("number", last_number)):
        found = step(text)
        if found:
            return strip_math_delims(found), source
    return None, None


def candidate(text: str, max_chars: int | None = None) -> str | None:
    """The final answer's candidate string, by the order above; None when nothing can be found."""
    return candidate_with_source(text, max_chars)[0]
