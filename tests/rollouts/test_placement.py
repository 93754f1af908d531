"""Where the pool's workers run: Ray custom resources, a clear error when no node offers them, and which Ray
cluster the pool joins."""

import time

import pytest
import ray

from rollouts.pool import RolloutPool
from tests.rollouts.helpers import SAMPLING


class _Joined(Exception):
    pass


@pytest.mark.parametrize("address, env, expected", [
    ("ray://head:10001", "10.0.0.1:6379", {"address": "ray://head:10001"}),  # the argument wins
    (None, "10.0.0.1:6379", {"address": "10.0.0.1:6379"}),                   # then RAY_ADDRESS
    (None, None, {"address": "local", "include_dashboard": False}),         # else a new local Ray, even if a
])                                                                           # `ray start` cluster runs here
def test_ray_address_picks_the_cluster_to_join(monkeypatch, address, env, expected):
    calls = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        raise _Joined

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    with pytest.raises(_Joined):
        RolloutPool("unused", ray_address=address)
    assert len(calls) == 1 and expected.items() <= calls[0].items()


@pytest.fixture(scope="module")
def ray_with_a_rollout_node():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, resources={"rollout_node": 1}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.vllm
def test_workers_go_to_the_node_with_their_resource(ray_with_a_rollout_node, tiny_ckpt):
    pool = RolloutPool(str(tiny_ckpt), num_workers=1, mode_sampling=SAMPLING, dtype="float32", max_model_len=2048,
                       cpus_per_worker=0, resources={"rollout_node": 1}, gpu_memory_utilization=0.3)
    try:
        assert pool.worker_kwargs["gpu_memory_utilization"] == 0.3  # handed to make_llm
        node = ray.get(pool.slots[0].actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
        [holder] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "rollout_node" in n["Resources"]]
        assert node == holder
        assert ray.available_resources().get("rollout_node", 0) == 0  # the worker holds it

        # the resource exists but is taken: the start times out, naming what was asked for
        start = time.perf_counter()
        with pytest.raises(TimeoutError, match="rollout_node"):
            RolloutPool(str(tiny_ckpt), num_workers=1, cpus_per_worker=0, resources={"rollout_node": 1},
                        start_timeout_s=2)
        assert time.perf_counter() - start < 30
    finally:
        pool.shutdown()


def test_a_resource_no_node_has_fails_at_once(ray_with_a_rollout_node, tiny_ckpt):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"no Ray node can host a rollout worker.*'gpu_box': 1"):
        RolloutPool(str(tiny_ckpt), num_workers=1, cpus_per_worker=0, resources={"gpu_box": 1})
    assert time.perf_counter() - start < 10
