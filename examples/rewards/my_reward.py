"""An example reward plugin: the final answer must state the reference, briefly."""

from rewards.api import RewardInput, register_reward


@register_reward()  # optional: marks it a per-row reward run in the sandbox (the defaults)
def concise_match(sample: RewardInput, max_words: int = 12) -> float | None:
    """1 if the final answer contains the reference in at most `max_words` words, 0.5 if longer, else 0."""
    if sample.reference is None:
        return None  # cannot score: the row leaves its group's baseline
    answer = sample.answer_text.lower()  # after </think> in long mode: the reasoning is not judged
    if str(sample.reference).lower() not in answer:
        return 0.0
    return 1.0 if len(answer.split()) <= max_words else 0.5
