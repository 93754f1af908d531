"""Does a completion follow its mode? The think-block rules of MiniCPM-V 4.5's thinking switch.

The prompt pre-fills the assistant turn (model/processor.py): short mode with an empty think block, long mode with
`<think>` and a newline, auto mode with nothing. So a completion should
- short: never think (no `<think>` and no `</think>` of its own);
- long:  close its think block (`</think>`) and answer after it;
- auto:  be well formed either way; it *thinks* when it writes non-blank reasoning before `</think>`.
"""

from __future__ import annotations

from core.modes import THINK_CLOSE, THINK_OPEN, thinks  # noqa: F401 - thinks is re-exported


def complies(text: str, mode: str) -> bool:
    """The mode's rule (module docstring)."""
    if mode == "short":
        return THINK_OPEN not in text and THINK_CLOSE not in text
    if mode == "long":
        head, sep, tail = text.partition(THINK_CLOSE)
        return bool(sep) and THINK_OPEN not in head and THINK_CLOSE not in tail
    opened, closed = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    return opened == closed <= 1 and (not opened or text.index(THINK_OPEN) < text.index(THINK_CLOSE))
