"""The modes of MiniCPM-V 4.5's thinking switch and its think tags: the one list of them in the project.

short: answer directly (the chat template pre-fills an empty think block);
long:  reason inside `<think>...</think>` first (the template pre-fills `<think>\\n`);
auto:  the model chooses (nothing is pre-filled); a completion that holds `</think>` counts as long.

This module imports nothing of the project: every package may import it.
"""

from __future__ import annotations

MODES: tuple[str, ...] = ("short", "long", "auto")
"""Every mode, in the project's one order."""
FIXED_MODES: tuple[str, ...] = ("short", "long")
"""The modes whose prompt fixes the thinking switch; `auto` resolves to one of them (`resolve_mode`)."""
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ENABLE_THINKING: dict[str, bool | None] = {"short": False, "long": True, "auto": None}
"""The chat template's `enable_thinking` per mode (None: left unset, nothing is pre-filled)."""


def check_mode(mode: str, where: str = "mode") -> str:
    """`mode` if it is one of MODES; otherwise a ValueError naming `where` and the allowed modes."""
    if mode not in MODES:
        raise ValueError(f"{where}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def resolve_mode(completion: str, mode: str = "auto") -> str:
    """`short` or `long`: a fixed mode as it is, `auto` by the presence of `</think>` in the completion."""
    if mode == "auto":
        return "long" if THINK_CLOSE in completion else "short"
    return mode


def split_completion(completion: str, mode: str = "auto") -> tuple[str | None, str]:
    """(thinking, final answer) of a completion.

    long: thinking = text before the last `</think>` (less an opening `<think>` if the completion holds one),
    answer = text after it; with no `</think>` (a truncated reasoning) the answer is "" and all text is thinking.
    short: no thinking, the whole completion is the answer. auto: long if `</think>` occurs, else short.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mode = resolve_mode(completion, mode)
    if mode == "short":
        return None, completion
    head, sep, tail = completion.rpartition(THINK_CLOSE)
    if not sep:
        head, tail = completion, ""
    stripped = head.lstrip()
    if stripped.startswith(THINK_OPEN):
        head = stripped[len(THINK_OPEN):]
    return head, tail


def thinks(text: str, mode: str) -> bool:
    """Whether the completion reasons: long mode always opens with reasoning (pre-filled `<think>`); otherwise a
    `<think>` block with non-blank content (an unclosed one counts: it was cut off while reasoning)."""
    if mode == "long":
        head = text.partition(THINK_CLOSE)[0]
        return bool(head.strip())
    if THINK_OPEN not in text:
        return False
    body = text.partition(THINK_OPEN)[2].partition(THINK_CLOSE)[0]
    return bool(body.strip())
