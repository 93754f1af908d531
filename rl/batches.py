"""The rollout side of a step, as a value: the scored groups of one batch (`Batch`), how old they are when learnt
from (`staleness`), and the background thread the one-step-off loop generates the next batch in (`Background`)."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .scoring import PartHealth, Scored


@dataclass
class Batch:
    """A step's rollouts, scored: the groups kept for the update, every group seen (for metrics), and counts."""
    kept: list[Scored] = field(default_factory=list)
    seen: list[Scored] = field(default_factory=list)
    health: dict[str, PartHealth] = field(default_factory=dict)
    dropped: int = 0
    """Groups dynamic sampling dropped (no reward variance)."""
    aborted: int = 0
    """Requests dynamic sampling's over-provisioning aborted once the batch was full."""
    surplus: int = 0
    """Groups with signal that had finished but came after the kept ones in submission order (unused)."""
    refills: int = 0
    failed: int = 0
    """Requests that failed (logged by file and row)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per phase (sample, modes, generate, score), however long the learner waited for them."""
    pairs: list = field(default_factory=list)
    """The paired prompts' measurements (`rl.modes.measure_pairs`)."""


def checkpointable(batch: Batch) -> Batch:
    """The batch as a checkpoint keeps it: each prompt without its PIL images and video frames (the learner reads the
    pixel values, as `rl.learner.sharded.pack_share` ships them), objects shared in the batch still shared once.

    Size, per saved batch: the completions' token ids and log-probs (8 B per token) plus each group's pixel values
    (one prompt per group, not per sample): a 448x448 slice is 3 x 14 x 14,336 values, 2.4 MB in fp32, so 64 groups
    of 10 slices hold ~1.5 GB; next to an 8.7B checkpoint's weights and optimizer (~100 GB), small."""
    prompts: dict[int, Any] = {}
    results: dict[int, Any] = {}

    def light(result):
        if id(result) not in results:
            prompt = result.prompt
            if prompt is not None and id(prompt) not in prompts:
                prompts[id(prompt)] = dataclasses.replace(prompt, images=[], stills=[], videos=[])
            results[id(result)] = dataclasses.replace(result, prompt=prompts[id(prompt)] if prompt is not None
                                                      else None)
        return results[id(result)]

    return dataclasses.replace(batch, kept=[(light(r), *rest) for r, *rest in batch.kept],
                               seen=[(light(r), *rest) for r, *rest in batch.seen])


def staleness(group: Scored, version: int) -> int:
    """How many policy versions before `version` the group was drawn (its oldest sample)."""
    drawn = [s.policy_version for s in group[0].samples if s.policy_version is not None]
    return version - min(drawn) if drawn else 0


def split_stale(groups: list[Scored], version: int, bound: int) -> tuple[list[Scored], list[int], int]:
    """(the groups at most `bound` versions old, every group's age, how many were dropped)."""
    ages = [staleness(g, version) for g in groups]
    kept = [g for g, age in zip(groups, ages) if age <= bound]
    return kept, ages, len(groups) - len(kept)


class Background:
    """`fn(*args)` in a daemon thread (a Ray call blocked at shutdown cannot hold the process's exit);
    `result()` waits for it and returns its value or raises its exception, as often as asked."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="rollout-batch", daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller of result()
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end, at most `timeout` seconds, without raising what it raised; whether it has."""
        self._thread.join(timeout)
        return self.done()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
