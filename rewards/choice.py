"""`choice`: multiple-choice answers, by option letter or by the option's text.

The reference is a letter (`B`, `(B)`, `B. text`) or the text of the correct option. Options come from
`meta["options"]`: a list (lettered A, B, C, ... in order) or a dict {letter: text}. The prediction is read from
the final answer: the last `\\boxed{}`, else the last "answer is" phrase, else the whole answer; in that string a
lone letter, a marked letter (`(B)`, `B.`, `B)`, `option B`), or the exact text of one option. An answer naming
two different letters (hedging) scores `incorrect`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Mapping

from .api import RewardInput, register_reward, single_answer
from .extract import answer_phrase, last_boxed, strip_math_delims


@dataclass(frozen=True)
class ChoiceConfig:
    """Options of the `choice` verifier."""

    letters: str = "ABCDEFGHIJ"
    """Letters that can name an option when `meta["options"]` is absent (with options: their letters)."""
    match_option_text: bool = True
    """Also accept the exact text of the correct option (case, spaces and end punctuation ignored)."""
    correct: float = 1.0
    """Score of the right option."""
    incorrect: float = 0.0
    """Score of a wrong option, of two different options, or of no recognisable option."""


def _norm(text: str) -> str:
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = " ".join(text.lower().split())
    return text.strip(string.punctuation + " ")


def options_of(meta: Mapping[str, Any]) -> dict[str, str]:
    """{letter: option text} from `meta["options"]` (a list or a dict); {} when absent."""
    options = meta.get("options")
    if not options:
        return {}
    if isinstance(options, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in options.items()}
    return {string.ascii_uppercase[i]: str(v) for i, v in enumerate(options)}


def _letters_in(text: str, letters: str) -> set[str]:
    """Letters named in the text: the whole text is a letter, or letters marked as options."""
    s = strip_math_delims(text).strip().strip("*").strip()
    cls = re.escape(letters)
    whole = re.fullmatch(rf"\(?\s*([{cls}])\s*\)?[.:]?", s, flags=re.IGNORECASE)  # the whole answer: "b" too
    if whole:
        return {whole.group(1).upper()} & set(letters)
    lead = re.match(rf"\(?([{cls}])\)?(?:[.:,)]|\s+[-\u2013])\s*\S", s)  # "B. text", "(B) text", "B, text"
    if lead:
        return {lead.group(1)}
    marked = re.findall(rf"\(([{cls}])\)|(?:option|choice)\s+\(?([{cls}])\b|(?<![\w(])([{cls}])[.)](?=\s|$)", s,
                        flags=re.IGNORECASE)
    found = {next(g for g in groups if g).upper() for groups in marked}
    return {x for x in found if x in letters}


def _by_text(text: str, options: Mapping[str, str]) -> set[str]:
    target = _norm(strip_math_delims(text))
    return {k for k, v in options.items() if target and _norm(v) == target}


def predicted_letters(answer: str, options: Mapping[str, str], config: ChoiceConfig = ChoiceConfig()) -> set[str]:
    """The set of option letters the answer names (one for a clear answer, several for a hedge, none)."""
    letters = "".join(options) if options else config.letters
    for step in (last_boxed, answer_phrase, lambda t: t):
        part = step(answer)
        if part is None or not part.strip():
            continue
        found = _letters_in(part, letters)
        if not found and options and config.match_option_text:
            found = _by_text(part, options)
        if found:
            return found
    return set()


def reference_letter(reference: Any, options: Mapping[str, str], config: ChoiceConfig = ChoiceConfig()) -> str:
    """The correct letter from a reference letter or option text; ValueError when neither."""
    letters = "".join(options) if options else config.letters
    found = _letters_in(str(reference), letters)
    if len(found) != 1 and options:
        found = _by_text(str(reference), options)
    if len(found) != 1:
        raise ValueError(f"reference {str(reference)[:80]!r} names no single option")
    return found.pop()


def check_choice_reference(answer: Any, meta: Mapping[str, Any]) -> str | None:
    """The reference must name exactly one option (by letter or text) of `meta["options"]`."""
    if problem := single_answer(answer, "choice"):
        return problem
    try:
        reference_letter(answer, options_of(meta))
    except ValueError:
        return f"{answer!r} names no single option (reward 'choice'; options: {meta.get('options')!r})"
    return None


@register_reward("choice", config=ChoiceConfig, check_reference=check_choice_reference)
def choice_reward(sample: RewardInput, config: ChoiceConfig = ChoiceConfig()) -> float | None:
    """1 for the correct option, else 0; None without a reference."""
    if sample.reference is None:
        return None
    options = options_of(sample.meta)
    gold = reference_letter(sample.reference, options, config)
    found = predicted_letters(sample.answer_text, options, config)
    return config.correct if found == {gold} else config.incorrect
