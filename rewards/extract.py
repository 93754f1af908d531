"""Answer extraction from a final-answer text: pure string functions shared by the verifiers (no parsing of math).

The order the verifiers use (`candidate`): the last `\\boxed{...}`, then the last "answer is ..." phrase, then the whole
text when it is a bare expression, then the last `$...$`-style math segment, then the last number.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:\*\*)?\s*(?:is\s*(?::|=)?|:|=)\s*(?:\*\*)?\s*", re.IGNORECASE)
_MATH_SEGMENT = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?:\s*\\?%)?"
                     r"|(?<![\w.])[-\u2212]?\.\d+(?:\s*\\?%)?")
_LATEX_COMMAND = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]*\}|\\[A-Za-z]+")
_TEXT_ARG = re.compile(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{[^{}]*\}")
_PROSE = re.compile(r"[A-Za-z]{2,}[\s,;]+[A-Za-z]{2,}")
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log exp sqrt abs min max gcd lcm mod det "
    "inf infty infinity undefined".split())


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) with balanced braces; None if none."""
    for match in reversed(list(_BOXED.finditer(text))):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{" and text[j - 1] != "\\":
                    depth += 1
                elif text[j] == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1:j]
                j += 1
            continue  # unbalanced: try an earlier one
        token = re.match(r"[^\s$]+", text[i:])
        if token and i > match.end():
            return token.group(0)
    return None


def answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "final answer:" / "Answer:" phrase, to the end of its sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    segment = _MATH_SEGMENT.match(rest.lstrip())
    if segment:
        return next(g for g in segment.groups() if g is not None).strip()
    line = rest.split("\n", 1)[0]
    line = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0]  # a full stop, not a decimal point
    line = line.strip().strip("*").strip()
    return line.rstrip(".").strip() or None


def strip_math_delims(text: str) -> str:
    """Text without surrounding `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`, trailing full stops and spaces."""
    s = text.strip()
    changed = True
    while changed:
        changed = False
        s = s.rstrip(". ").strip()
        for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(open_) + len(close) and s.startswith(open_) and s.endswith(close):
                inner = s[len(open_):len(s) - len(close)]
                if open_ == "$" and "$" in inner:
                    continue
                s, changed = inner.strip(), True
                break
    return s


def is_bare_expression(text: str) -> bool:
    """True when the text looks like mathematics rather than prose: outside LaTeX commands and `\\text{}`
    arguments, no two consecutive words and no word of 3+ letters other than a function name (sin, log, ...)."""
    rest = _TEXT_ARG.sub(" ", text)
    rest = _LATEX_COMMAND.sub(" ", rest)
    if "\n" in text.strip() or _PROSE.search(rest):
        return False
    return all(w.lower() in _MATH_WORDS for w in _WORD.findall(rest))


def last_math_segment(text: str) -> str | None:
    """The last `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` segment's content."""
    found = None
    for match in _MATH_SEGMENT.finditer(text):
        found = next(g for g in match.groups() if g is not None)
    return found.strip() if found else None


def last_number(text: str) -> str | None:
    """The last number in the text: integer, decimal, `1,234`, `3/4`, with a `%` sign if it has one."""
    found = None
    for match in _NUMBER.finditer(text):
        found = match.group(0)
    return found.replace("\u2212", "-").strip() if found else None


def candidate_with_source(text: str, max_chars: int | None = None) -> tuple[str | None, str | None]:
    """(candidate, where it came from): `boxed`, `phrase`, `whole`, `segment`, `number`, or (None, None)."""
    text = text.strip()
    if not text:
        return None, None
    for source, step in (("boxed", last_boxed), ("phrase", answer_phrase)):
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
