"""run.async_mode=fully_async: a producer generates batch after batch ahead of the learner; staleness stays within
its bound (wait) or is dropped (drop); the weights load while requests run, so a sample spans versions; a
checkpoint saves the batches held and a resumed run trains on them, no row lost or drawn twice.

Stand-ins sleep instead of computing (`bench/stand_ins.py`), so the two sides do not share the two cores."""

import json
import time

import pytest

from bench.stand_ins import SleepingLearner, SleepingPool
from rl.errors import NothingTrained
from rl.trainer import Trainer
from rollouts.fake import FakeBackend
from rollouts.local import LocalPool
from tests.rl.test_async import config, run

GENERATE_S = UPDATE_S = 1.0


def timed(name: str, fn, events: list):
    """fn, recording each call's (name, start, end) in `events`."""
    def call(*args):
        start = time.monotonic()
        out = fn(*args)
        events.append((name, start, time.monotonic()))
        return out
    return call


def test_generation_overlaps_the_update_within_the_staleness_bound(tiny_ckpt, tmp_path):
    """Groups are generated while the learner updates (the order of events, not a timing); no group is older than
    the bound."""
    events = []
    pool, learner = SleepingPool(GENERATE_S), SleepingLearner(UPDATE_S)
    pool._run, learner.step = timed("generate", pool._run, events), timed("update", learner.step, events)
    history, _, _ = run(config(tmp_path, "fully_async", steps=5, ckpt=tiny_ckpt), pool=pool, learner=learner)
    updates = [e[1:] for e in events if e[0] == "update"]
    generates = [e[1:] for e in events if e[0] == "generate"]
    overlapped = [(c, d) for c, d in generates if any(min(b, d) - max(a, c) > 0.5 for a, b in updates)]
    assert len(generates) == 10 and len(overlapped) >= 6, events  # half a second or more inside an update
    assert all(h["staleness/max"] <= 1 and h["staleness/dropped"] == 0 and h["groups"] == 2 for h in history)
    assert learner.version == 5 and all("async/buffer_groups" in h for h in history)


def test_a_long_group_does_not_hold_its_batch_and_is_trained_within_the_bound(tiny_ckpt, tmp_path):
    """The first group drawn takes 3 s, every other 0.1 s: the first update runs on short groups (of the next round
    too) before the long one is done, and under `wait` the long group goes into the step at which it reaches the
    bound (age 2), none dropped."""
    class OneLong(SleepingPool):
        def group_seconds(self, request):
            return 3.0 if request.request_id == "s0-0-0" else 0.1

    events = []
    pool, learner = OneLong(0.1), SleepingLearner(0.2)
    pool._run, learner.step = timed("generate", pool._run, events), timed("update", learner.step, events)
    cfg = config(tmp_path, "fully_async", steps=4, ckpt=tiny_ckpt, **{"algo.max_staleness": 2, "run.save_every": 0})
    history, _, _ = run(cfg, pool=pool, learner=learner)
    long_end = max((e for e in events if e[0] == "generate"), key=lambda e: e[2] - e[1])[2]
    updates = [start for name, start, _ in events if name == "update"]
    assert updates[0] < long_end <= updates[2]  # the first step did not wait for it; the third trained on it
    assert [h["groups"] for h in history] == [2, 2, 2, 2] and sum(h["staleness/dropped"] for h in history) == 0
    assert [h["staleness/max"] for h in history][:3] == [0, 1, 2]  # the long one (drawn at 0) at step 2
    assert len(pool.drawn) == 4  # every group drawn is trained, once


@pytest.mark.parametrize("policy", ["wait", "drop"])
def test_the_staleness_policy_waits_or_drops(tiny_ckpt, tmp_path, policy):
    """Fast generation, slow updates, room for 3 batches ahead: `wait` keeps every group within the bound by not
    drawing early; `drop` draws as far ahead as the buffer lets it and drops what is too old when it is learnt."""
    cfg = config(tmp_path, "fully_async", steps=6, ckpt=tiny_ckpt, **{
        "run.buffer_groups": 6, "algo.staleness_policy": policy, "run.save_every": 0})
    history, pool, _ = run(cfg, pool=SleepingPool(0.05), learner=SleepingLearner(0.5))
    assert all(h["staleness/max"] <= 1 for h in history if h["groups"])  # kept groups are within the bound
    dropped = sum(h["staleness/dropped"] for h in history)
    if policy == "wait":
        assert dropped == 0 and all(h["groups"] == 2 for h in history)
    else:
        assert dropped > 0 and max(h["async/buffer_groups"] for h in history) >= 2


def test_a_checkpoint_saves_the_groups_held_and_the_resumed_run_trains_on_them(tiny_ckpt, tmp_path):
    """Killed right after a checkpoint: the rounds drawn before it and the resumed run's are the uninterrupted run's,
    in order, and every group drawn is trained once (5 steps of 2 groups from 5 rounds of 2: a group lost would
    make a step wait for a sixth round)."""
    straight_cfg = config(tmp_path, "fully_async", steps=5, ckpt=tiny_ckpt, **{"run.save_every": 0,
                                                                               "algo.max_staleness": 2})
    _, straight, _ = run(straight_cfg, pool=SleepingPool(0.2), learner=SleepingLearner(0.2))
    assert len(straight.drawn) == 5
    cut = config(tmp_path, "fully_async", steps=5, ckpt=tiny_ckpt, **{"run.save_every": 0, "algo.max_staleness": 2})
    cut.run.dir = str(tmp_path / "cut")
    pool = SleepingPool(0.2)
    trainer = Trainer(cut, learner=SleepingLearner(0.2), pool=pool)
    for _ in range(2):
        trainer.train_step()
        trainer.step += 1
    trainer.save()  # as if killed right after: whatever the producer draws from here on is lost
    trainer.close()
    history, resumed, learner = run(cut, resume=True, pool=SleepingPool(0.2), learner=SleepingLearner(0.2))
    before = 5 - len(resumed.drawn)  # rounds drawn before the checkpoint
    assert before >= 3  # the round the third step needs was drawn ahead (and saved)
    assert pool.drawn[:before] + resumed.drawn == straight.drawn
    assert learner.version == 5 and [h["groups"] for h in history] == [2, 2, 2]


def test_weights_change_while_a_request_runs_and_the_sample_says_so(tiny_ckpt, tmp_path):
    """The fake backend simulates in-flight loads: a sample whose request saw the weights change carries two
    version runs; the step logs how many versions its samples span."""
    cfg = config(tmp_path, "fully_async", steps=4, ckpt=tiny_ckpt, **{"run.save_every": 0, "algo.max_staleness": 2})
    backend = FakeBackend(str(tiny_ckpt), seconds_per_token=0.05, in_flight_updates=True)
    history = Trainer(cfg, learner=SleepingLearner(0.1), pool=LocalPool(backend)).fit()
    assert max(h["staleness/versions_per_sample_max"] for h in history) == 2
    assert [v for kind, v, _ in backend.loads] == [1, 2, 3, 4]


def test_an_evaluation_pauses_the_producer_and_the_run_goes_on(tiny_ckpt, tmp_path):
    """Every 2 steps the producer pauses (its running groups finish, its stream closes), the evaluation runs on the
    pool alone, and the producer resumes: every step trains a full batch, and both evaluations are logged."""
    cfg = config(tmp_path, "fully_async", steps=4, ckpt=tiny_ckpt, **{
        "run.save_every": 0, "run.eval_every": 2, "run.eval_rows": 2, "algo.max_staleness": 2})
    history, pool, _ = run(cfg, pool=SleepingPool(0.1), learner=SleepingLearner(0.2))
    assert [h["groups"] for h in history] == [2, 2, 2, 2]
    assert [any(k.startswith("eval/") for k in h) for h in history] == [False, True, False, True]
    assert len(pool.drawn) == 4 + 2  # four training rounds, two evaluations (one call each)


def wordy(request, index, rng):
    """Short mode ends at its budget (24 tokens), long mode at its own (48): groups finish out of submission order."""
    answer = request.meta["answer"] if index % 2 == 0 else "no idea"
    return "</think>\n\n" * (request.mode == "long") + "word " * 60 + f"\\boxed{{{answer}}}"


def test_groups_finishing_out_of_order_still_fill_every_batch(tiny_ckpt, tmp_path):
    """A round is over once its last group is in, and some of its groups may be trained already by then: that is not
    a reason to take a short batch (only rounds that lost groups count toward the give-up)."""
    cfg = config(tmp_path, "fully_async", steps=4, ckpt=tiny_ckpt, **{"run.save_every": 0, "algo.max_staleness": 2})
    history = Trainer(cfg, learner=SleepingLearner(0.05),
                      pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=wordy, seconds_per_token=0.03))).fit()
    assert [h["groups"] for h in history] == [2, 2, 2, 2]


def test_dynamic_sampling_gives_up_a_batch_after_rounds_that_lost_groups(tiny_ckpt, tmp_path):
    """Every group right every time (no reward variance): all are dropped; each step takes what it has (nothing)
    once 1 + algo.max_refill_rounds rounds that lost groups are over, instead of waiting for ever."""
    cfg = config(tmp_path, "fully_async", steps=2, ckpt=tiny_ckpt, **{
        "run.save_every": 0, "algo.dynamic_sampling": "true", "algo.max_refill_rounds": 1})
    always = FakeBackend(str(tiny_ckpt), respond=lambda r, k, rng: f"</think>\n\n\\boxed{{{r.meta['answer']}}}")
    with pytest.raises(NothingTrained, match="groups dropped by dynamic sampling"):  # (the run ends, no hang)
        Trainer(cfg, learner=SleepingLearner(0.05), pool=LocalPool(always)).fit()
    history = [json.loads(line) for line in (tmp_path / "fully_async" / "metrics.jsonl").read_text().splitlines()]
    assert [h["groups"] for h in history] == [0, 0]
    assert all(h["dynamic/groups_dropped"] >= 2 * 2 for h in history)  # two rounds of two, at least


def test_with_partial_rollouts_a_checkpoint_interrupts_the_running_groups_and_the_next_round_resumes_them(
        tiny_ckpt, tmp_path):
    """rollout.partial_rollouts: the checkpoint at step 2 does not wait for the running groups; it interrupts them,
    saves what they drew, and the next round resumes them (in this run, and in a run resumed from that checkpoint),
    so their tokens are not drawn again."""
    import shutil

    import torch

    extra = {"run.save_every": 2, "algo.max_staleness": 2, "rollout.partial_rollouts": "true"}
    cfg = config(tmp_path, "fully_async", steps=4, ckpt=tiny_ckpt, **extra)
    history = Trainer(cfg, learner=SleepingLearner(0.05),
                      pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=wordy, seconds_per_token=0.03))).fit()
    saved = torch.load(tmp_path / "fully_async" / "checkpoints" / "step-000002" / "state.pt", weights_only=False)
    carried = saved["carried"]
    assert carried and all(r.partial and r.prompt is None for r in carried)
    assert any(s.cut_off and s.completion_token_ids for r in carried for s in r.samples)
    assert [h["groups"] for h in history] == [2, 2, 2, 2]
    assert sum(h["rollout/partial_resumed"] for h in history[2:]) >= len(carried)
    assert sum(h["rollout/partial_tokens_saved"] for h in history) > 0

    cfg.run.steps = 4
    cfg.run.dir = str(tmp_path / "again")
    shutil.copytree(tmp_path / "fully_async" / "checkpoints" / "step-000002",
                    tmp_path / "again" / "checkpoints" / "step-000002")
    shutil.copy(tmp_path / "fully_async" / "config.yaml", tmp_path / "again" / "config.yaml")
    again = Trainer(cfg, resume=True, learner=SleepingLearner(0.05),
                    pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=wordy, seconds_per_token=0.03)))
    assert [r.request.meta["row"] for r in again.collector.carried] == [r.request.meta["row"] for r in carried]
    steps = again.fit()
    assert sum(h["rollout/partial_resumed"] for h in steps) == len(carried) and [h["groups"] for h in steps] == [2, 2]
