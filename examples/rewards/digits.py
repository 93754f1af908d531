"""A dense toy reward for `configs/learn_cpu.yaml`: the share of digit characters in the completion.

A random model almost never states a right answer, so accuracy gives GRPO no signal to learn from; this reward
differs between the samples of every group, so the tiny model's reward visibly rises within minutes on a CPU.
It shows that the loop learns, not what to train a real model on.
"""

from rewards.api import RewardInput


def digit_share(sample: RewardInput) -> float:
    text = sample.completion.replace("<think>", "").replace("</think>", "")
    visible = [c for c in text if not c.isspace()]
    return sum(c.isdigit() for c in visible) / len(visible) if visible else 0.0
