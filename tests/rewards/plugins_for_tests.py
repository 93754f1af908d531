"""Plugins that misbehave, loaded by file path in the safety tests (no test_ prefix: not collected)."""

import asyncio
import os
import sys
import time

from rewards.api import register_reward


def good(sample):
    return 1.0 if sample.answer_text.strip() == str(sample.reference) else 0.0


def raises(sample):
    raise RuntimeError("plugin bug on purpose")


def hangs(sample):
    while True:
        pass


def sleeps(sample):
    time.sleep(3600)


def exits(sample):
    sys.exit(3)


def hard_exit(sample):
    os._exit(7)


def allocates(sample):
    block = bytearray(50 * 1024**3)  # far over the sandbox's memory bound
    return float(len(block))


def returns_text(sample):
    return "1.0"


def returns_nan(sample):
    return float("nan")


def by_answer(sample):
    """Misbehaves according to the answer, so one batch mixes good and bad rows."""
    kinds = {"raise": raises, "hang": hangs, "sleep": sleeps, "exit": exits, "hard_exit": hard_exit,
             "allocate": allocates, "text": returns_text, "nan": returns_nan}
    return kinds.get(sample.answer_text.strip(), good)(sample)


def with_option(sample, bonus=0.0):
    return good(sample) + bonus


@register_reward(batched=True)
def batched_len(samples):
    return [float(len(s.answer_text)) for s in samples]


@register_reward(batched=True)
def batched_short(samples):
    return [1.0] * (len(samples) - 1)


async def async_ok(sample):
    await asyncio.sleep(0.01)
    return 0.5


async def async_hangs(sample):
    await asyncio.sleep(3600)


class Scaled:
    """A small class reward: options go to the constructor."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, sample):
        return self.scale * len(sample.answer_text)
