"""The producer of the fully asynchronous loop (`rl.loops.fully_async`): one thread that keeps the rollout engines fed,
group by group, ahead of the learner.

It draws a round of prompts (rollout.prompts_per_step rows, their modes, requests and seeds made as the collector
makes them) whenever the groups ahead of the learner (running in the engines, or finished and not yet trained on)
leave room for one: at most `run.buffer_groups`, and with `algo.staleness_policy=wait` at most `algo.max_staleness`
batches, so that every group drawn is trained on within the bound. Its stream never ends while the run goes on (it
ticks between results), so a new round joins the engines while a long group of an earlier one still runs: one
batch's tail is filled with the next one's work. Each group is scored the moment it finishes (with dynamic sampling,
dropped when its rewards are all equal, and the producer draws on).

The learner `take`s a batch: the finished groups in the order they were drawn, then finished, a batch's worth. A long
group does not hold its batch back; it goes into a later one, older. With `wait`, a group still running that is as
old as the bound is waited for: it must go into this step's batch.

A checkpoint `pause`s the producer: no new round, the running groups finish (or, with rollout.partial_rollouts, are
interrupted and carried: the next round resumes them from their last tokens), and the finished groups are handed over
(saved with the data state after their draws; a resumed run trains on them first)."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from .batches import Batch, drawn_here
from .modes import measure_pairs, plan_modes
from .scoring import PartHealth, Scored

TICK_S = 0.05
"""How often the producer looks up from a running stream to draw more (a learner step may have made room)."""


@dataclass
class Finished:
    group: Scored
    drawn_at: int
    """The learner's version when its round was drawn (its age counts from there)."""


def oldest(result) -> int:
    """The oldest policy version among a carried group's samples (its age counts from there)."""
    return min(s.policy_version for s in result.samples)


def drawn_version(group: Scored, default: int) -> int:
    versions = [s.policy_version for s in group[0].samples if s.policy_version is not None]
    return min(versions) if versions else default


class Producer:
    def __init__(self, trainer, restored: list[Batch] | None = None):
        cfg = trainer.cfg
        self.trainer, self.collector, self.pool, self.cfg = trainer, trainer.collector, trainer.pool, cfg
        self.target = cfg.rollout.prompts_per_step
        limit = cfg.run.buffer_size(self.target)
        self.wait = cfg.algo.staleness_policy == "wait"
        self.bound = cfg.algo.max_staleness
        self.limit = min(limit, self.bound * self.target) if self.wait else limit
        self.give_up = 1 + (cfg.algo.max_refill_rounds if cfg.algo.dynamic_sampling else 0)
        self.steps_done = self.taken = trainer.step  # steps the learner finished; batches it took
        self.ready = [Finished(g, drawn_version(g, trainer.step)) for b in restored or [] for g in b.kept]
        self.running: dict[str, tuple[int, int]] = {}  # request id -> (drawn_at, round)
        self.round_left: dict[int, int] = {}  # round -> its requests still running
        self.rounds_finished = 0  # rounds that lost a group (dropped or failed) and are over, since the last take
        self.lossy: set[int] = set()  # running rounds that lost a group
        self.cut_rounds: set[int] = set()  # rounds a pause interrupted groups of (partial rollouts)
        self.seen = Batch()  # what finished since the last take (its metrics)
        self.halves: dict[str, Scored] = {}  # a paired prompt's first finished group, until the other one
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.paused = self.stopped = self.streaming = self.drawing = False
        self.thread = threading.Thread(target=self._run, name="rollout-producer", daemon=True)
        self.thread.start()

    # ---- the producer's thread ----
    def _may_draw(self) -> bool:
        ahead = len(self.ready) + len(self.running)
        if self.stopped or self.paused or ahead >= (self.cfg.run.steps - self.taken) * self.target:
            return False  # (the last one: what is ahead covers the batches the run will still take)
        stuck = not self.running and len(self.ready) < self.target  # nothing else would ever fill the batch
        return stuck or ahead + self.target <= self.limit

    def _run(self) -> None:
        stream = None
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.stopped or self._may_draw() or self.running or stream)
                    if self.stopped:
                        return
                    draw, running = self._may_draw(), bool(self.running)
                    self.drawing = draw  # (a pause waits for the round: the data state is saved after its draw)
                if draw:
                    requests = self._draw()
                    if stream is None:
                        with self.cond:
                            self.streaming = True
                        stream = self.pool.stream(requests, tick=TICK_S)
                    else:
                        self.pool.extend(requests)
                elif not running:  # idle: its stream closed, so an evaluation can open one of its own
                    stream.close()
                    stream = None
                    with self.cond:
                        self.streaming = False
                        self.cond.notify_all()
                else:
                    result = next(stream)
                    if result is not None:
                        self._finished(result)
        except BaseException as e:  # noqa: BLE001 - handed to the learner's next take()
            with self.cond:
                self.error = e
                self.cond.notify_all()
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - the pool was shut down under it
                    pass

    def _draw(self) -> list:
        """A round: the groups a pause interrupted first (partial rollouts, `Collector.carried`; those past the bound
        dropped), then new rows up to prompts_per_step, their modes (the schedule at the learner's step), requests
        and seeds."""
        collector, index = self.collector, self.collector.rounds
        carried, too_old = [], 0
        while collector.carried and len(carried) < self.target:
            group = collector.carried.pop(0)
            if self.steps_done - oldest(group) > self.bound:
                too_old += 1
            else:
                carried.append(group)
        rows = collector.dataset.take(self.target - len(carried))
        plans = plan_modes(rows, self.steps_done, self.cfg.modes, collector.rng, collector.benefit)
        requests = collector.requests(rows, plans, index, 0, carried)
        collector.rounds += 1
        with self.cond:
            self.round_left[index] = len(requests)
            self.running.update({r.request_id: (oldest(g) if g is not None else self.steps_done, index)
                                 for r, g in zip(requests, [*carried, *[None] * len(requests)])})
            self.seen.resumed, self.seen.too_old = self.seen.resumed + len(carried), self.seen.too_old + too_old
            self.drawing = False
        return requests

    def _finished(self, result) -> None:
        """Score a finished group (outside the lock: the sandbox takes its time) and file it; an interrupted one
        (a pause, with partial rollouts) is carried to the next round."""
        drawn_at, index = self.running[result.request.request_id]
        if result.partial:
            with self.cond:
                del self.running[result.request.request_id]
                self.collector.carried.append(dataclasses.replace(result, prompt=None))
                self.seen.tokens_carried += drawn_here(result)
                self.cut_rounds.add(index)  # (its groups are not all in: it does not count as a round finished)
                self._round_done(index)
                self.cond.notify_all()
            return
        found, start = Batch(), time.perf_counter()
        if result.ok:
            [kept] = self.collector.judge(found, [result])
        else:
            found.failed, kept = self.collector.failed_requests([result]), None
        found.seconds["score"] = time.perf_counter() - start
        for group in found.seen:
            pair = group[0].request.meta.get("pair")
            if pair is not None and pair not in self.halves:
                self.halves[pair] = group
            elif pair is not None:
                for measure in measure_pairs([self.halves.pop(pair), group], self.cfg.modes):
                    self.collector.benefit.observe(measure.prompt, measure.source, measure.delta)
                    found.pairs.append(measure)
        with self.cond:
            del self.running[result.request.request_id]
            seen = self.seen
            seen.seen += found.seen
            seen.pairs += found.pairs
            seen.dropped, seen.failed = seen.dropped + found.dropped, seen.failed + found.failed
            seen.tokens_saved += found.tokens_saved
            seen.seconds["score"] = seen.seconds.get("score", 0.0) + found.seconds["score"]
            for part, health in found.health.items():
                seen.health.setdefault(part, PartHealth()).add(health)
            if kept is not None:
                self.ready.append(Finished(kept, drawn_at))
            else:
                self.lossy.add(index)
            self._round_done(index)
            self.cond.notify_all()

    def _round_done(self, index: int) -> None:
        """One more group of round `index` is in; a round over that lost a group counts toward the give-up (a round
        whose groups all arrived cannot be why a batch is short: its groups are in `ready`, or taken already)."""
        self.round_left[index] -= 1
        if not self.round_left[index]:
            del self.round_left[index]
            self.rounds_finished += index in self.lossy and index not in self.cut_rounds
            self.lossy.discard(index)
            self.cut_rounds.discard(index)

    # ---- the learner's side ----
    def _due(self) -> bool:
        """A running group as old as the bound (`wait`): this step's batch must wait for it."""
        return self.wait and any(self.steps_done - drawn >= self.bound for drawn, _ in self.running.values())

    def _takeable(self) -> bool:
        if self.error is not None:
            return True
        if self._due():
            return False
        return len(self.ready) >= self.target or self.rounds_finished >= self.give_up

    def take(self) -> Batch:
        """A batch: the oldest finished groups (by draw, then finish), once there are a batch's worth (or, with
        dynamic sampling dropping groups, once 1 + algo.max_refill_rounds rounds that lost groups finished since the
        last take);
        what stopped the producer, raised."""
        with self.cond:
            self.cond.wait_for(self._takeable)
            if self.error is not None:
                raise self.error
            self.ready.sort(key=lambda f: f.drawn_at)  # stable: finishing order within a draw
            chosen, self.ready = self.ready[:self.target], self.ready[self.target:]
            batch, self.seen, self.rounds_finished = self.seen, Batch(), 0
            self.taken += 1
            batch.kept = [f.group for f in chosen]
            self.cond.notify_all()
            return batch

    def stepped(self) -> None:
        """The learner finished a step (the bound and the room move)."""
        with self.cond:
            self.steps_done += 1
            self.cond.notify_all()

    def ahead(self) -> dict[str, int]:
        with self.cond:
            return {"async/buffer_groups": len(self.ready), "async/running_groups": len(self.running)}

    def pause(self) -> list[Batch]:
        """No new round; the running groups finish, or with rollout.partial_rollouts are interrupted and carried
        (`Collector.carried`: saved with a checkpoint, resumed first by the next round). The finished groups, not
        yet trained on (kept, in order)."""
        with self.cond:
            self.paused = True
            self.cond.notify_all()
            running = list(self.running) if self.cfg.rollout.partial_rollouts else []
        if running:  # (they come back through the producer's stream, partial)
            self.pool.interrupt(running)
        with self.cond:
            self.cond.wait_for(lambda: not (self.running or self.streaming or self.drawing) or self.error is not None)
            if self.error is not None:
                raise self.error
            return [Batch(kept=[f.group for f in self.ready])] if self.ready else []

    def resume(self) -> None:
        with self.cond:
            self.paused = False
            self.cond.notify_all()

    def stop(self, timeout: float = 120) -> None:
        """No more rounds; the running ones are aborted (the pool is closed first by `Trainer.close`)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join(timeout)
