"""The backend contract: the vLLM worker and the fake backend both keep it (every method, same parameters), and the
fake one behaves as the contract says (streaming order by length, abort, errors alone)."""

import ast
import inspect
import re
import time
from pathlib import Path

import pytest

from rollouts.backend import BACKENDS, RolloutBackend, backend_class
from rollouts.fake import FakeBackend
from rollouts.local import LocalPool
from rollouts.types import RolloutRequest, SamplingConfig, resumed
from rollouts.vllm.worker import RolloutWorker

METHODS = [name for name, value in vars(RolloutBackend).items() if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize("cls", [RolloutWorker, FakeBackend])
def test_every_backend_has_the_contracts_methods_and_parameters(cls):
    assert set(METHODS) >= {"version", "stream", "generate", "abort", "load_weights", "load_lora", "unload_lora",
                            "shutdown"}
    for name in METHODS:
        wanted = list(inspect.signature(getattr(RolloutBackend, name)).parameters)
        have = list(inspect.signature(getattr(cls, name)).parameters)
        assert have[:len(wanted)] == wanted, (cls.__name__, name)
    start = inspect.signature(cls.__init__).parameters
    assert {"ckpt", "worker_id", "mode_sampling", "seed", "max_model_len"} <= set(start)


def test_the_contract_lists_every_method_the_pool_and_the_transfer_client_call():
    root = Path(__file__).parents[2] / "rollouts"
    called = set()
    for file in ("pool.py", "transfer.py"):
        source = (root / file).read_text()
        for node in ast.walk(ast.parse(source)):  # actor.<method>.remote(...)
            if isinstance(node, ast.Attribute) and node.attr == "remote" and isinstance(node.value, ast.Attribute):
                called.add(node.value.attr)
        called |= set(re.findall(r'_all\("(\w+)"', source))  # PoolClient._all("<method>", ...)
    called -= {"options", "actor_cls"}  # actor.stream.options(...).remote; actor_cls.remote() starts an actor
    called.add("stream")
    assert called and {"transfer_init", "transfer_update", "load_shared_weights", "pid"} <= called
    assert called <= set(METHODS), called - set(METHODS)


def test_the_backend_name_table():
    assert backend_class("vllm") is RolloutWorker and backend_class("fake") is FakeBackend
    assert backend_class("rollouts.fake:FakeBackend") is FakeBackend and set(BACKENDS) == {"vllm", "fake"}
    with pytest.raises(ValueError, match="rollout.backend='sglang': expected one of \\['fake', 'vllm'\\]"):
        backend_class("sglang")
    with pytest.raises(ValueError, match="cannot import rollouts.fake:Nope"):
        backend_class("rollouts.fake:Nope")


def test_the_fake_backend_streams_by_length_aborts_and_fails_requests_alone(tiny_ckpt):
    backend = FakeBackend(str(tiny_ckpt), respond=lambda r, k, rng: "word " * (200 if r.mode == "long" else 3),
                          seconds_per_token=0.001)
    assert isinstance(backend, RolloutBackend)
    reqs = [RolloutRequest("long", [{"role": "user", "content": "hi"}], mode="long", n=2),
            RolloutRequest("short", [{"role": "user", "content": "hi"}], mode="short", n=2),
            RolloutRequest("bad", [{"role": "user", "content": "hi"}], mode="short", n=0),
            RolloutRequest("cut", [{"role": "user", "content": "hi"}], mode="long", n=1,
                           sampling=SamplingConfig(max_new_tokens=20))]
    stream = LocalPool(backend).stream(reqs)
    got = [next(stream), next(stream), next(stream)]
    assert [r.request.request_id for r in got] == ["bad", "short", "cut"]
    assert "n=0" in got[0].error and got[2].samples[0].truncated and len(got[2].samples[0].completion_token_ids) == 20
    assert backend.abort(["long", "short"]) == ["long"] and list(stream) == [] and backend.in_flight() == 0


def test_the_fake_backend_interrupts_a_group_and_resumes_it(tiny_ckpt):
    """Its sample 0 is long, its sample 1 short: interrupted midway, sample 1 comes back whole, sample 0 cut off
    with its tokens so far; the request resuming it keeps sample 1 and continues sample 0 after its tokens."""
    backend = FakeBackend(str(tiny_ckpt), respond=lambda r, k, rng: "word " * (200 if k == 0 else 3),
                          seconds_per_token=0.002)
    request = RolloutRequest("g", [{"role": "user", "content": "hi"}], mode="long", n=2, seed=3)
    pool = LocalPool(backend)
    stream = pool.stream([request])
    time.sleep(0.1)
    assert pool.interrupt(["g", "unknown"]) == ["g"]
    [partial] = list(stream)
    assert partial.partial and partial.ok and backend.in_flight() == 0
    cut, whole = partial.samples
    assert cut.cut_off and 10 <= len(cut.completion_token_ids) < 150
    assert len(cut.logprobs) == len(cut.completion_token_ids)
    assert not whole.cut_off and whole.finish_reason == "stop"
    backend.policy_version = 1
    [done] = backend.generate([resumed(partial, "g-2", seed=4)])
    assert done.ok and not done.partial and done.samples[1] == whole
    n = len(cut.completion_token_ids)
    assert done.samples[0].completion_token_ids[:n] == cut.completion_token_ids and not done.samples[0].cut_off
    assert done.samples[0].versions == [(0, 0), (1, n)]
    assert backend.interrupt(["g-2"]) == []  # finished: nothing to interrupt
