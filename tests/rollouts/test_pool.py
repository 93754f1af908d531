"""The Ray pool: every request once, weights synced to every worker, a killed worker replaced mid-batch."""

import os
import signal
import time

import pytest

from rollouts.pool import RolloutPool
from tests.rollouts.helpers import SAMPLING, learner_diff, perturbed, requests

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def pool(tiny_ckpt):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    pool = RolloutPool(str(tiny_ckpt), num_workers=2, mode_sampling=SAMPLING, dtype="float32",
                       max_model_len=2048)
    yield pool
    pool.shutdown()
    ray.shutdown()


def test_stream_returns_every_request_once_across_workers(pool, tiny_model):
    reqs = requests(8, n=2, prefix="s")
    results = list(pool.stream(reqs))
    assert sorted(r.request.request_id for r in results) == sorted(r.request_id for r in reqs)
    assert all(r.ok and len(r.samples) == 2 for r in results)
    assert {r.worker_id for r in results} == {0, 1}
    load = pool.load()
    assert all(w["tokens_done"] > 0 and w["in_flight_requests"] == 0 for w in load)
    assert learner_diff(tiny_model, results).max() <= 1e-4
    # the pool learned how long each mode's completions are
    assert pool.expected_tokens["short"] <= SAMPLING["short"].max_new_tokens


def test_sync_reaches_every_worker(pool, tiny_ckpt):
    new = perturbed(tiny_ckpt, seed=11)
    seconds = pool.sync_weights(1, weights=new.state_dict().items())
    assert seconds > 0 and pool.versions() == [1, 1]
    results = pool.generate(requests(6, n=2, prefix="v"))
    assert {r.worker_id for r in results} == {0, 1}
    assert all(r.policy_version == 1 for r in results)
    assert learner_diff(new, results).max() <= 1e-4


def test_killed_worker_is_replaced_and_its_prompts_resubmitted(pool, tiny_ckpt):
    new = perturbed(tiny_ckpt, seed=12)
    pool.sync_weights(2, weights=new.state_dict().items())
    old_pids = pool.pids()
    reqs = requests(12, n=2, prefix="k")
    stream = pool.stream(reqs)
    got = [next(stream)]
    os.kill(old_pids[0], signal.SIGKILL)  # worker 0 still has chunks queued
    got += list(stream)
    ids = [r.request.request_id for r in got]
    assert sorted(ids) == sorted(r.request_id for r in reqs)  # none lost, none twice
    assert all(r.ok and len(r.samples) == 2 for r in got), [r.error for r in got if not r.ok]
    assert pool.load()[0]["restarts"] == 1 and pool.pids()[0] != old_pids[0]
    assert pool.versions() == [2, 2]  # the replacement received the current weights
    from_replacement = [r for r in got if r.worker_id == 0 and r.policy_version == 2]
    assert from_replacement and learner_diff(new, got).max() <= 1e-4


def test_groups_stream_in_completion_order_and_aborted_ones_free_the_workers(pool):
    from rollouts.types import SamplingConfig

    pool.generate(requests(2, n=1, prefix="o-warm"))  # a replaced (cold) engine's first step is slow
    reqs = requests(6, n=2, prefix="o")
    for i, r in enumerate(reqs):  # two long groups (one per worker) submitted first, then four short ones
        r.mode, r.sampling = ("long", SamplingConfig(max_new_tokens=1000)) if i < 2 else \
            ("short", SamplingConfig(max_new_tokens=4))
        r.seed = 1000 * i
    stream = pool.stream(reqs)
    shorts = [next(stream) for _ in range(4)]
    assert {r.request.request_id for r in shorts} == {"o2", "o3", "o4", "o5"}  # before the long ones
    assert sorted(pool.abort(["o0", "o1", "o2"])) == ["o0", "o1"]  # o2 was already returned
    assert list(stream) == []  # aborted groups never come back
    assert [w["in_flight_requests"] for w in pool.load()] == [0, 0]
    assert [ray_get(s.actor.in_flight.remote()) for s in pool.slots] == [0, 0]  # the engines let go of them
    after = pool.generate(requests(4, n=2, prefix="o-after"))
    assert all(r.ok and len(r.samples) == 2 for r in after)


def ray_get(ref):
    import ray

    return ray.get(ref)


def test_a_stream_grows_ticks_and_the_workers_idle_share_is_read(pool):
    """`extend` adds requests to a running stream, whose results come from the same stream; with `tick` the stream
    yields None while nothing finishes and does not end until closed; each worker's idle share since the last
    reading is below 1 while it generated, and near 1 for a pool left idle."""
    pool.idle_shares()
    stream = pool.stream(requests(2, n=1, prefix="g1-"), tick=0.05)
    pool.extend(requests(1, n=1, prefix="g0-"))  # before its first result
    got, extended = [], False
    while len(got) < 5:
        result = next(stream)
        if result is None:
            continue
        got.append(result)
        if not extended:
            pool.extend(requests(2, n=1, prefix="g2-"))
            extended = True
            with pytest.raises(ValueError, match="unique"):
                pool.extend(requests(1, n=1, prefix="g2-"))  # g2-0 runs already
    assert sorted(r.request.request_id for r in got) == ["g0-0", "g1-0", "g1-1", "g2-0", "g2-1"]
    assert all(r.ok for r in got)
    assert next(stream) is None  # nothing running: a tick, not the end
    stream.close()
    with pytest.raises(RuntimeError, match="no stream is running"):
        pool.extend(requests(1, n=1, prefix="g3-"))
    working = pool.idle_shares()
    time.sleep(0.5)
    idle = pool.idle_shares()
    assert all(0 <= s < 0.9 for s in working) and all(s > 0.9 for s in idle), (working, idle)


def test_interrupted_groups_come_back_partial_through_the_stream_and_resume_on_any_worker(pool):
    """Through Ray: `interrupt` stops two long groups (one per worker); the stream yields them partial, with their
    tokens and log-probs so far; resumed, each sample goes on from its last token to its budget."""
    from rollouts.types import SamplingConfig, resumed

    pool.generate(requests(2, n=1, prefix="p-warm"))
    reqs = requests(2, n=2, prefix="p")
    for r in reqs:
        r.mode, r.sampling, r.seed = "long", SamplingConfig(max_new_tokens=1400), 77
    stream = pool.stream(reqs)
    deadline = time.monotonic() + 60
    while [ray_get(s.actor.in_flight.remote()) for s in pool.slots] != [1, 1] and time.monotonic() < deadline:
        time.sleep(0.05)  # both groups in their engines
    time.sleep(0.2)
    assert sorted(pool.interrupt(["p0", "p1", "unknown"])) == ["p0", "p1"]
    partial = sorted(stream, key=lambda r: r.request.request_id)
    assert [r.request.request_id for r in partial] == ["p0", "p1"] and all(r.partial and r.ok for r in partial)
    assert [w["in_flight_requests"] for w in pool.load()] == [0, 0]
    samples = [s for r in partial for s in r.samples]
    assert all(len(s.logprobs) == len(s.completion_token_ids) for s in samples)
    assert all(s.cut_off or s.finish_reason == "stop" for s in samples)  # (EOS before the interrupt: whole)
    assert any(s.cut_off for s in samples)
    done = pool.generate([resumed(r, f"{r.request.request_id}-again", seed=5) for r in partial])
    for before, after in zip(partial, done):
        assert after.ok and not after.partial
        for s, t in zip(before.samples, after.samples):
            n = len(s.completion_token_ids)
            assert t.completion_token_ids[:n] == s.completion_token_ids and t.logprobs[:n] == s.logprobs
            assert not t.cut_off and len(t.completion_token_ids) >= n and (s.cut_off or t == s)


def test_a_closed_pool_stays_closed(pool, tiny_ckpt, tmp_path):
    """Shut down under a running stream (as the trainer's close does under the one-step-off loop's background
    collect): the stream ends with PoolClosed, no worker is replaced, and nothing more runs on the pool. Last in
    this module: it closes the module's pool."""
    from rollouts.pool import PoolClosed

    restarts = [s.restarts for s in pool.slots]
    stream = pool.stream(requests(12, n=2, prefix="c"))
    next(stream)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        list(stream)
    assert [s.restarts for s in pool.slots] == restarts  # no replacement engine was started
    with pytest.raises(PoolClosed):
        next(pool.stream(requests(1, prefix="after")))
    with pytest.raises(PoolClosed):
        pool.sync_lora(9, str(tmp_path))
    with pytest.raises(PoolClosed):
        pool.sync_weights(9, path=str(tmp_path))

