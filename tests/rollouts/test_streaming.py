"""One continuous batch per worker: groups come back as they finish, aborted requests free the engine and are never
returned, and a stream closed early leaves nothing running (in-process here; through Ray in test_pool.py)."""

import pytest

from rollouts.types import SamplingConfig
from rollouts.vllm.worker import RolloutWorker
from tests.rollouts.helpers import SAMPLING, learner_diff, requests

pytestmark = pytest.mark.vllm

LONG, SHORT = 300, 4


@pytest.fixture(scope="module")
def worker(tiny_ckpt):
    w = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=2048)
    yield w
    w.shutdown()


def mixed(prefix: str, long_first: int = 1, short: int = 2):
    """`long_first` long groups, then `short` short ones (submitted in that order)."""
    reqs = requests(long_first + short, n=2, prefix=prefix)
    for i, r in enumerate(reqs):
        r.mode = "long" if i < long_first else "short"
        r.sampling = SamplingConfig(max_new_tokens=LONG if i < long_first else SHORT)
        r.seed = 100 * i
    return reqs


def engine_idle(worker) -> bool:
    core = worker.llm.llm_engine.engine_core.engine_core  # the in-process engine's scheduler
    return (worker.in_flight() == 0 and not worker.llm.llm_engine.has_unfinished_requests()
            and not core.scheduler.running and not core.scheduler.waiting and core.scheduler.kv_cache_manager.usage == 0)


def test_short_groups_are_yielded_before_a_long_one_submitted_first(worker, tiny_model):
    reqs = mixed("order")
    got = list(worker.stream(reqs))
    assert [r.request.request_id for r in got] == ["order1", "order2", "order0"]
    assert all(r.ok for r in got)
    assert max(len(s.completion_token_ids) for s in got[-1].samples) > SHORT  # it really was longer
    assert got[0].timings["generate_s"] < got[-1].timings["generate_s"]
    assert learner_diff(tiny_model, got).max() <= 1e-4  # continuous batching changes nothing the learner sees
    assert engine_idle(worker)


def test_aborted_requests_free_the_engine_and_are_never_returned(worker, tiny_model):
    reqs = mixed("ab", long_first=2, short=1)
    stream = worker.stream(reqs)
    first = next(stream)
    assert first.request.request_id == "ab2"
    assert sorted(worker.abort(["ab0", "ab1", "ab2", "unknown"])) == ["ab0", "ab1"]  # ab2 had finished
    assert list(stream) == []  # the stream ends: nothing aborted comes back
    assert engine_idle(worker)  # no running, waiting or KV blocks left
    after = worker.generate(requests(3, n=2, prefix="after"))
    assert all(r.ok and len(r.samples) == 2 for r in after)
    assert learner_diff(tiny_model, after).max() <= 1e-4


def test_a_stream_closed_early_aborts_the_rest(worker):
    stream = worker.stream(mixed("close", long_first=2, short=1))
    assert next(stream).request.request_id == "close2"
    stream.close()
    assert engine_idle(worker)


def test_weights_load_only_once_the_batch_is_done(worker, tiny_ckpt):
    """A control call waits for an idle engine: every sample of a stream comes from one policy version."""
    import threading

    stream = worker.stream(mixed("sync", long_first=1, short=1))
    assert next(stream).policy_version == 0
    loaded = threading.Thread(target=worker.load_weights, args=(7,), kwargs={"path": str(tiny_ckpt)})
    loaded.start()
    rest = list(stream)  # the long group finishes on the old weights
    loaded.join(timeout=60)
    assert [r.policy_version for r in rest] == [0] and worker.version() == 7
