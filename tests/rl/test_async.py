"""run.async_mode=one_step_off: the next batch is generated while the learner updates, the samples are at most one
policy version old, and a resumed run regenerates the batch that was in flight (same rows, same seeds).

The overlap is measured with stand-ins that sleep instead of computing (a rollout pool and a learner), so that the
two sides do not share this machine's two cores: a step should then take max(generate, update), not their sum."""

import statistics

import pytest

from bench.stand_ins import SleepingLearner, SleepingPool
from rl.batches import Background, split_stale
from rl.config import ConfigError, load
from rl.trainer import Trainer

GENERATE_S = UPDATE_S = 1.5


def config(tmp_path, mode: str, steps: int = 4, **extra):
    overrides = [f"run.dir={tmp_path / mode}", f"run.steps={steps}", f"run.async_mode={mode}", "run.export=false",
                 "run.progress=false", "run.tensorboard=false", "run.save_every=2", f"data.path={tmp_path / 'd.jsonl'}",
                 "data.demo_rows=32", "rollout.prompts_per_step=2", "rollout.n=2", "reward.workers=1",
                 f"model.path={extra.pop('ckpt')}"] + [f"{k}={v}" for k, v in extra.items()]
    return load("configs/tiny_cpu.yaml", overrides)


def run(cfg, resume=False, pool=None, learner=None):
    pool, learner = pool or SleepingPool(GENERATE_S), learner or SleepingLearner(UPDATE_S)
    history = Trainer(cfg, resume=resume, learner=learner, pool=pool).fit()
    return history, pool, learner


@pytest.mark.parametrize("mode", ["off", "one_step_off"])
def test_the_step_takes_the_longer_side_not_the_sum(tiny_ckpt, tmp_path, mode):
    history, _, _ = run(config(tmp_path, mode, steps=5, ckpt=tiny_ckpt))
    step = statistics.median(h["time/step"] for h in history[1:])  # the first step has nothing to overlap with
    if mode == "one_step_off":
        assert step == pytest.approx(max(GENERATE_S, UPDATE_S), rel=0.15), [h["time/step"] for h in history]
        assert [h["staleness/max"] for h in history] == [0, 1, 1, 1, 1]  # the first batch is on-policy
        assert all(h["time/generate"] >= GENERATE_S for h in history)  # generation ran, hidden behind the update
    else:
        assert step >= GENERATE_S + UPDATE_S
        assert {h["staleness/max"] for h in history} == {0}
    assert all(h["staleness/dropped"] == 0 and h["groups"] == 2 for h in history)


def test_resume_regenerates_the_batch_in_flight(tiny_ckpt, tmp_path):
    cfg = config(tmp_path, "one_step_off", steps=4, ckpt=tiny_ckpt)
    _, straight, _ = run(cfg)
    partial = config(tmp_path, "one_step_off", steps=4, ckpt=tiny_ckpt)
    partial.run.dir = str(tmp_path / "partial")
    partial.run.steps = 2
    _, first, _ = run(partial)
    assert first.drawn == straight.drawn[:2]  # step 3's batch was not drawn: the run ends at step 2
    partial.run.steps = 4
    history, resumed, learner = run(partial, resume=True)
    assert resumed.drawn == straight.drawn[2:]  # the same rows and seeds: none lost, none used twice
    assert learner.version == 4 and [h["staleness/max"] for h in history] == [0, 1]


def test_a_checkpoint_with_a_batch_in_flight_holds_the_state_from_before_it(tiny_ckpt, tmp_path):
    cfg = config(tmp_path, "one_step_off", steps=4, ckpt=tiny_ckpt, **{"run.save_every": 1})
    _, straight, _ = run(cfg)
    cut = config(tmp_path, "one_step_off", steps=4, ckpt=tiny_ckpt, **{"run.save_every": 1})
    cut.run.dir = str(tmp_path / "cut")
    trainer = Trainer(cut, learner=SleepingLearner(UPDATE_S), pool=SleepingPool(GENERATE_S))
    trainer.train_step()  # step 1 updates while step 2's batch is generated
    trainer.step = 1
    trainer.save()  # as if killed right after: the checkpoint must not count step 2's rows as used
    trainer.close()
    history, resumed, _ = run(cut, resume=True)
    assert resumed.drawn == straight.drawn[1:]


def test_stale_groups_are_dropped_and_counted():
    class Group:
        def __init__(self, *versions):
            self.samples = [type("S", (), {"policy_version": v})() for v in versions]

    groups = [(Group(5, 5), [1.0, 0.0], [{}, {}]), (Group(3, 4), [1.0, 0.0], [{}, {}]), (Group(4,), [0.0], [{}])]
    kept, ages, dropped = split_stale(groups, version=5, bound=1)
    assert ages == [0, 2, 1] and dropped == 1 and kept == [groups[0], groups[2]]


def test_background_returns_or_raises_in_the_caller():
    assert Background(lambda x: x + 1, 1).result() == 2

    def fails():
        raise ValueError("in the thread")

    with pytest.raises(ValueError, match="in the thread"):
        Background(fails).result()


@pytest.mark.parametrize("overrides, message", [
    (["run.async_mode=one_step_off", "algo.tis_cap=null"], r"needs algo\.tis_cap"),
    (["run.async_mode=one_step_off", "algo.max_staleness=0"], r"max_staleness=0 would drop every sample"),
    (["run.async_mode=sometimes"], r"run\.async_mode"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(None, overrides)


def test_a_failed_update_ends_the_background_batch_and_reports_its_own_error(tiny_ckpt, tmp_path):
    """The update fails while the next batch is generated on real rollout workers (Ray actors, the fake backend):
    closing shuts the pool first, the background stream ends with PoolClosed (dropped), no worker is replaced or
    synced after it, and the error the caller sees is the update's."""
    import ray

    from rollouts.pool import RolloutPool

    class FailsAtStep2(SleepingLearner):
        def step(self, samples):
            if self.version == 1:
                raise RuntimeError("update 2 failed")
            return super().step(samples)

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = RolloutPool(str(tiny_ckpt), num_workers=1, backend="fake", seconds_per_token=0.05, cpus_per_worker=0)
        trainer = Trainer(config(tmp_path, "one_step_off", steps=4, ckpt=tiny_ckpt), learner=FailsAtStep2(0.0),
                          pool=pool)
        syncs = []
        pool.sync_lora = lambda version, path: syncs.append(version)
        with pytest.raises(RuntimeError, match="update 2 failed"):
            trainer.fit()
        assert pool.closed and trainer._pending is None and syncs == [1]  # synced once, before step 2's update
        assert [s.restarts for s in pool.slots] == [0]  # nothing replaced the workers shut down under the stream
        background = [t for t in __import__("threading").enumerate() if t.name == "rollout-batch"]
        assert not background  # the batch that was in flight has ended
    finally:
        ray.shutdown()
