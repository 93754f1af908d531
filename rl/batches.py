"""The rollout side of a step: the collector that samples prompts, assigns modes, generates, scores and keeps groups
(`Collector`), the scored groups of one batch as a value (`Batch`), the learner's samples with their advantages
(`build_samples`), how old groups are when learnt from (`staleness`), and the background thread an asynchronous
loop generates the next batch in (`Background`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rollouts.types import RolloutResult, resumed

from .algos import get_advantage, options_for
from .errors import RunError
from .learner import TrainSample
from .metrics import Phases
from .modes import PAIRED, BenefitTracker, measure_pairs, plan_modes
from .scoring import PartHealth, Scored, score_results, score_with_health

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A step's rollouts, scored: the groups kept for the update, every group seen (for metrics), and counts."""
    kept: list[Scored] = field(default_factory=list)
    seen: list[Scored] = field(default_factory=list)
    health: dict[str, PartHealth] = field(default_factory=dict)
    dropped: int = 0
    """Groups dynamic sampling dropped (no reward variance)."""
    aborted: int = 0
    """Requests dynamic sampling's over-provisioning aborted once the batch was full (or, with
    rollout.partial_rollouts, interrupted and carried to a later round)."""
    resumed: int = 0
    """Partial rollouts: carried groups resumed in this batch's rounds (`Collector.carried`)."""
    tokens_saved: int = 0
    """Partial rollouts: the tokens of the groups seen that were drawn in an earlier round (not drawn again)."""
    tokens_carried: int = 0
    """Partial rollouts: the tokens drawn in this batch's rounds by the groups carried on (counted here)."""
    too_old: int = 0
    """Partial rollouts: carried groups past algo.max_staleness when their turn came, dropped instead of resumed."""
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
                prompts[id(prompt)] = prompt.without_images()
            results[id(result)] = dataclasses.replace(result, prompt=prompts[id(prompt)] if prompt is not None
                                                      else None)
        return results[id(result)]

    return dataclasses.replace(batch, kept=[(light(r), *rest) for r, *rest in batch.kept],
                               seen=[(light(r), *rest) for r, *rest in batch.seen])


@dataclass
class Update:
    """What a step learnt from and what the learner said: the samples (with advantages), its step's metrics, the
    number of groups kept, every group's age in policy versions and how many were too old."""
    samples: list
    learned: dict[str, float]
    groups: int
    ages: list[int]
    stale: int


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


class Collector:
    """The rollout side of a step, for any loop: sample prompts (the data set's seeded stream), assign modes (the
    hybrid schedule, `rl.modes`), generate (the pool), score (the run's combined reward) and keep the groups
    (dynamic sampling). Its random state (`rng`) and the benefit estimates (`benefit`) are the trainer's, and so
    part of its checkpoints."""

    def __init__(self, cfg, dataset, pool, runner, combine, rng: random.Random, benefit: BenefitTracker):
        self.cfg, self.dataset, self.pool, self.runner, self.combine = cfg, dataset, pool, runner, combine
        self.rng, self.benefit = rng, benefit
        self.rounds = 0  # rounds the fully async producer drew (their requests' ids and seeds; checkpointed)
        self.carried: list[RolloutResult] = []
        """Partial rollouts (`rollout.partial_rollouts`): the groups a full batch interrupted (their samples so far,
        or whole if they finished first), in submission order, resumed first by the next rounds; part of the
        checkpoint."""

    def collect(self, step: int, trained_at: int | None = None) -> Batch:
        """The rollout side of step `step`: sample prompts, assign modes, generate, score, and with dynamic sampling
        drop the groups without reward variance. Dynamic sampling over-provisions (`algo.oversample`): a round
        submits that many times the groups still needed, judges each group as it streams in, keeps the first ones
        with signal in submission order and aborts the rest once those are known (with rollout.partial_rollouts:
        interrupts them and carries them to the next rounds, which resume them before drawing new prompts); refill rounds (at most `algo.max_refill_rounds`) are the fallback. trained_at: the
        learner version the batch will be trained at (a carried group older than algo.max_staleness then is
        dropped, not resumed)."""
        cfg, phases = self.cfg, Phases()
        batch = Batch()
        target = cfg.rollout.prompts_per_step
        factor = cfg.algo.oversample_factor()
        while len(batch.kept) < target:
            need = target - len(batch.kept)
            count = math.ceil(need * factor - 1e-9)
            carried = self._resume_carried(count, trained_at, batch)
            with phases("sample"):
                rows = self.dataset.take(count - len(carried))
            with phases("modes"):
                requests = self.requests(rows, plan_modes(rows, step, cfg.modes, self.rng, self.benefit), step,
                                         batch.refills, carried)
            if factor > 1:
                self._stream_round(requests, target, batch, phases)
            else:
                with phases("generate"):
                    results = self.pool.generate(requests)
                batch.failed += self.failed_requests(results)
                with phases("score"):
                    batch.kept += [g for g in self.judge(batch, [r for r in results if r.ok]) if g is not None]
            full = len(batch.kept) >= target
            if full or not cfg.algo.dynamic_sampling or batch.refills >= cfg.algo.max_refill_rounds:
                break
            batch.refills += 1  # counted when a refill round really runs
        batch.seconds = phases.seconds
        batch.pairs = measure_pairs(batch.seen, cfg.modes)
        for pair in batch.pairs:
            self.benefit.observe(pair.prompt, pair.source, pair.delta)
        return batch

    def requests(self, rows: list, plans: list[str], step: int, round_: int, carried: list = ()) -> list:
        """The rollout requests of a round: the carried groups resumed first (`rollouts.types.resumed`), then one
        group of rollout.n per row, or for a paired row (`rl.modes`) two groups of n/2, one per mode, joined by
        meta["pair"]. Each request's seed comes from its position, so a resumed run draws the same samples on any
        worker."""
        n = self.cfg.rollout.n
        out = [resumed(group, f"s{step}-{round_}-c{i}", None) for i, group in enumerate(carried)]
        for i, (row, plan) in enumerate(zip(rows, plans)):
            request_id = f"s{step}-{round_}-{i}"
            if plan == PAIRED:
                for mode in ("short", "long"):
                    request = self.dataset.to_request(row, mode, n // 2, f"{request_id}{mode[0]}")
                    request.meta["pair"] = request_id
                    out.append(request)
            else:
                out.append(self.dataset.to_request(row, plan, n, request_id))
        for j, request in enumerate(out):
            request.seed = self.seed(step, round_, j)
        return out

    def _stream_round(self, requests: list, target: int, batch: Batch, phases: Phases) -> None:
        """Score each group as it finishes and keep the groups with reward variance in submission order, not in
        finishing order (which would favour short completions, and short mode): the first ones until the batch
        holds `target`. Once those are known, the requests after them still running are aborted; groups after them
        that had finished already are counted as surplus."""
        start, scoring = time.perf_counter(), 0.0
        index = {r.request_id: i for i, r in enumerate(requests)}
        verdict: dict[int, Scored | None] = {}  # submission index -> the group if it has signal, else None
        cursor = 0  # every group before it is decided
        stream = self.pool.stream(requests)
        try:
            for result in stream:
                i = index[result.request.request_id]
                if result.ok:
                    scored_at = time.perf_counter()
                    verdict[i] = self.judge(batch, [result])[0]
                    scoring += time.perf_counter() - scored_at
                else:
                    batch.failed += self.failed_requests([result])
                    verdict[i] = None
                while cursor in verdict and len(batch.kept) < target:
                    if verdict[cursor] is not None:
                        batch.kept.append(verdict[cursor])
                    cursor += 1
                if len(batch.kept) >= target:
                    running = [r.request_id for j, r in enumerate(requests) if j >= cursor and j not in verdict]
                    batch.surplus += sum(1 for j, g in verdict.items() if j >= cursor and g is not None)
                    if self.cfg.rollout.partial_rollouts:
                        self._carry(stream, running, index, batch)
                    else:
                        batch.aborted += len(self.pool.abort(running))
                    break
        finally:
            stream.close()
        phases.seconds["generate"] = phases.seconds.get("generate", 0.0) + time.perf_counter() - start - scoring
        phases.seconds["score"] = phases.seconds.get("score", 0.0) + scoring

    def _carry(self, stream, running: list[str], index: dict, batch: Batch) -> None:
        """Partial rollouts, once the batch is full: interrupt the requests still running and carry them (their
        samples so far, or whole if they finished first, read from the stream as they come back), in submission
        order, to the next rounds (`collect` resumes them before drawing new prompts)."""
        batch.aborted += len(self.pool.interrupt(running))
        back, waiting = [], set(running)
        for result in stream if waiting else ():
            if result is None or result.request.request_id not in waiting:
                continue
            waiting.discard(result.request.request_id)
            if result.ok:
                back.append(result)
            else:
                batch.failed += self.failed_requests([result])
            if not waiting:
                break
        back.sort(key=lambda r: index[r.request.request_id])
        self.carried += [dataclasses.replace(r, prompt=None) for r in back]  # (resuming prepares the prompt again)
        batch.tokens_carried += sum(drawn_here(r) for r in back)

    def _resume_carried(self, count: int, trained_at: int | None, batch: Batch) -> list[RolloutResult]:
        """Up to `count` carried groups to resume in this round, oldest first; those that would be older than
        algo.max_staleness at `trained_at` are dropped (counted)."""
        taken: list[RolloutResult] = []
        while self.carried and len(taken) < count:
            group = self.carried.pop(0)
            oldest = min(s.policy_version for s in group.samples)
            if trained_at is not None and trained_at - oldest > self.cfg.algo.max_staleness:
                batch.too_old += 1
                continue
            taken.append(group)
            batch.resumed += 1
        return taken

    def judge(self, batch: Batch, results: list[RolloutResult]) -> list[Scored | None]:
        """Score groups (health and every group into `batch`); each one with signal, or None where dynamic
        sampling drops it (rewards all equal; counted in batch.dropped)."""
        cfg = self.cfg
        scored, health = score_with_health(results, self.runner, self.combine, cfg.data.default_reward)
        for part, h in health.items():
            batch.health.setdefault(part, PartHealth()).add(h)
        batch.seen += scored
        batch.tokens_saved += sum(sum(len(s.completion_token_ids) for s in r.request.resume or ()) for r in results)
        out: list[Scored | None] = []
        for group in scored:
            valid = [r for r in group[1] if r is not None]
            if cfg.algo.dynamic_sampling and (len(valid) < 2 or max(valid) == min(valid)):
                batch.dropped += 1
                out.append(None)
            else:
                out.append(group)
        return out

    def failed_requests(self, results: list[RolloutResult]) -> int:
        """Requests that failed (a prompt over the context, an image the engine cannot decode...): logged with
        the row they came from; with data.on_bad_row=fail the run stops there, as for a bad row at load."""
        failed = [r for r in results if not r.ok]
        for r in failed:
            meta = r.request.meta
            where = f"{meta['source']}: row {meta.get('row', '?')}" if meta.get("source") else r.request.request_id
            if self.cfg.data.on_bad_row == "fail":
                raise RunError(f"{where}: the rollout failed: {r.error} (data.on_bad_row=fail)")
            log.warning("%s: the rollout failed, the row is left out of this step: %s", where, r.error)
        return len(failed)

    def seed(self, step: int, round_: int, index: int) -> int:
        """Seeds spaced by 1024 (> n): vLLM seeds sample k of a request with seed + k."""
        return ((self.cfg.run.seed * 1_000_003 + step * 1_009 + round_) * 4_096 + index) * 1_024 % (2**62)

    def score(self, results: list[RolloutResult]) -> list[Scored]:
        return score_results(results, self.runner, self.combine, self.cfg.data.default_reward)


def drawn_here(result: RolloutResult) -> int:
    """Completion tokens a request drew itself: a resumed group's less those drawn before (`RolloutRequest.resume`)."""
    before = sum(len(s.completion_token_ids) for s in result.request.resume or ())
    return sum(len(s.completion_token_ids) for s in result.samples) - before


def build_samples(kept: list[Scored], cfg) -> list:
    """The learner's samples of the kept groups, with their group advantages (`algo.advantage`; a None reward is
    left out of its group's baseline) and the sampling distribution each was drawn from."""
    rewards, groups, flat = [], [], []
    for g, (result, totals, parts) in enumerate(kept):
        for s, total, part in zip(result.samples, totals, parts):
            rewards.append(float("nan") if total is None else total)
            groups.append(g)
            flat.append((result, s, total, part))
    if not flat:
        return []
    estimator = get_advantage(cfg.algo.advantage)
    adv = estimator(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups),
                    **options_for(estimator, cfg.algo.options())).tolist()
    modes = cfg.rollout.sampling()
    samples = []
    for (result, s, _, _), a in zip(flat, adv):
        drawn = result.request.sampling or modes[result.request.mode]  # the distribution it was drawn from
        samples.append(TrainSample(result.prompt, s.completion_token_ids, a, s.logprobs, s.mode,
                                   drawn.temperature, drawn.top_k, drawn.top_p))
    return samples
