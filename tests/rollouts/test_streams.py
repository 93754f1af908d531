"""A stream that grows while it runs (`rollouts.streams.MergedStream`, through `LocalPool`): `extend` joins requests
to the running stream, a ticking stream yields None while nothing finishes and ends only when closed, `abort` takes
back results that finished but were not yet read, and the idle clock measures the time with nothing held."""

import time

import pytest

from rollouts.fake import FakeBackend
from rollouts.local import LocalPool
from rollouts.streams import IdleClock
from rollouts.types import RolloutRequest


def reqs(prefix: str, k: int) -> list[RolloutRequest]:
    return [RolloutRequest(f"{prefix}{i}", [{"role": "user", "content": f"What is {i} + {i}?"}], mode="short", n=2)
            for i in range(k)]


@pytest.fixture
def pool(tiny_ckpt):
    pool = LocalPool(FakeBackend(str(tiny_ckpt), seconds_per_token=0.01))
    yield pool
    pool.shutdown()


def test_a_ticking_stream_grows_and_ends_only_when_closed(pool):
    stream = pool.stream(reqs("a", 2), tick=0.02)
    got, ticks = [], 0
    while len(got) < 4:
        result = next(stream)
        if result is None:
            ticks += 1
        else:
            got.append(result.request.request_id)
            if len(got) == 1:
                pool.extend(reqs("b", 2))
    assert sorted(got) == ["a0", "a1", "b0", "b1"] and ticks > 0
    assert next(stream) is None  # nothing running: a tick, not the end
    with pytest.raises(ValueError, match="unique"):
        pool.extend(reqs("c", 1) * 2)
    stream.close()
    with pytest.raises(RuntimeError, match="no stream is running"):
        pool.extend(reqs("d", 1))


def test_abort_takes_back_results_finished_but_not_read(pool):
    stream = pool.stream(reqs("e", 3))
    time.sleep(1.0)  # all three finished and wait in the stream
    assert sorted(pool.abort(["e1", "e2", "unknown"])) == ["e1", "e2"]
    assert [r.request.request_id for r in stream] == ["e0"]  # never yielded once taken back


def test_the_idle_clock_counts_the_time_with_nothing_held():
    clock = IdleClock()
    time.sleep(0.2)
    clock.busy(2)
    time.sleep(0.2)
    clock.free()
    time.sleep(0.1)  # one still held: busy
    clock.free()
    time.sleep(0.2)
    share = clock.read()
    assert 0.65 * 0.4 / 0.7 < share < 1.35 * 0.4 / 0.7  # idle 0.2 + 0.2 of 0.7 s
    time.sleep(0.1)
    assert clock.read() > 0.9  # since the last reading: idle throughout
