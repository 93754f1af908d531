"""The policy into the rollout workers (rl/sync.py): full weights in memory through vLLM's weight-transfer API
(rollouts/transfer.py, rollouts/vllm/transfer.py) to every worker at once on vLLM's multiprocess engine (the GPU
default), verified; a killed worker's replacement gets the current weights; a corrupted update is an error naming the
worker and the tensor; the staging folder where it is chosen; the config refuses a transport that cannot act. A
vLLM engine core that dies mid-batch ends its worker, which is replaced as a killed one is."""

import os
import signal
import sys
from pathlib import Path

import pytest
import ray
import torch

from rl.config import LearnerConfig, load
from rl.learner import LocalLearner
from rl.sync import WeightSync
from rollouts.fake import FakeBackend
from rollouts.local import LocalPool
from rollouts.transfer import WeightSyncError
from tests.rl.learner.conftest import samples  # noqa: F401 - the fixture
from tests.rl.learner.test_sync_stream import engine_against_learner
from tests.rollouts.helpers import SAMPLING, requests

CONFIG = Path(__file__).parents[2] / "configs" / "tiny_cpu.yaml"


def config(ckpt, tmp_path, *overrides):
    return load(CONFIG, [f"model.path={ckpt}", f"run.dir={tmp_path / 'run'}", "sync.bucket_mb=1", *overrides])


def full_learner(ckpt) -> LocalLearner:
    return LocalLearner(ckpt, LearnerConfig(lora=False, lr=1e-2, adam_eps=1e-3, entropy_metric=False), device="cpu")


def engine_cores(pid: int) -> list:
    """The vLLM engine core processes under a worker's actor process."""
    import psutil

    return [p for p in psutil.Process(pid).children(recursive=True) if "EngineCore" in " ".join(p.cmdline() + [p.name()])]


def staged_folders() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("minicpmv-rl-")} if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module")
def multiprocess_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}})
    yield
    ray.shutdown()


@pytest.mark.vllm
def test_every_multiprocess_engine_gets_each_version_in_memory_and_a_replacement_the_current_one(
        tiny_ckpt, samples, multiprocess_ray, tmp_path):
    from rollouts.pool import RolloutPool

    cfg = config(tiny_ckpt, tmp_path, "rollout.dtype=float32")
    learner = full_learner(tiny_ckpt)
    pool = RolloutPool(str(tiny_ckpt), num_workers=2, mode_sampling=SAMPLING, dtype="float32", max_model_len=2048,
                       cpus_per_worker=0)
    before = staged_folders()
    sync = WeightSync(cfg, learner, pool, tmp_path / "run", "full")
    try:
        assert sync.transport == "gloo" and not ray.get(pool.slots[0].actor.model_in_process.remote())
        learner.step(samples)
        first = sync(learner.version)
        size = sum(t.numel() * t.element_size() for t in learner.model.state_dict().values())
        assert first["sync/verified"] == 1 and first["sync/gb"] == pytest.approx(size / 1e9)
        assert first["sync/group_seconds"] > 0 and pool.versions() == [1, 1]
        results = pool.generate(requests(4, prefix="a"))
        assert {r.worker_id for r in results} == {0, 1} and all(r.ok and r.policy_version == 1 for r in results)
        assert engine_against_learner(learner, results) <= 1e-4

        os.kill(pool.pids()[0], signal.SIGKILL)  # its replacement receives version 1 from the learner, alone
        results = pool.generate(requests(4, prefix="b"))
        assert pool.load()[0]["restarts"] == 1 and pool.versions() == [1, 1]
        assert all(r.ok and r.policy_version == 1 for r in results)
        assert engine_against_learner(learner, results) <= 1e-4

        # the engine core of worker 1 dies (as under the OOM killer) in the middle of a batch: the worker ends, its
        # replacement receives version 1, and every request comes back once
        kill_engine_core_after_first_result = iter(requests(8, prefix="d"))
        results, killed = [], []
        for result in pool.stream(list(kill_engine_core_after_first_result)):
            results.append(result)
            if not killed:
                killed = engine_cores(pool.pids()[1])
                for proc in killed:
                    proc.kill()
        assert killed and sorted(r.request.request_id for r in results) == sorted(f"d{i}" for i in range(8))
        assert pool.load()[1]["restarts"] == 1 and pool.versions() == [1, 1]
        assert all(r.ok and r.policy_version == 1 for r in results), [(r.error, r.policy_version) for r in results]
        assert engine_against_learner(learner, results) <= 1e-4

        learner.step(samples)
        second = sync(learner.version)  # a new group with both workers (the membership changed)
        assert second["sync/verified"] == 1 and second["sync/group_seconds"] > 0 and pool.versions() == [2, 2]
        third = sync(learner.version)  # the same members: the open group is reused
        assert third["sync/group_seconds"] == 0
        results = pool.generate(requests(4, prefix="c"))
        assert all(r.ok and r.policy_version == 2 for r in results)
        assert engine_against_learner(learner, results) <= 1e-4
        assert staged_folders() == before and not (tmp_path / "run" / ".sync").exists()  # no file was written
    finally:
        pool.shutdown()
        learner.close()


class Corrupting(FakeBackend):
    """Receives every bucket and reports a wrong checksum for one tensor."""

    def transfer_finish(self, version):
        reports = super().transfer_finish(version)
        reports[0]["checksums"][3] += 1
        return reports


def test_an_engine_whose_weights_differ_is_an_error_naming_it_and_the_tensor(tiny_ckpt, tmp_path):
    learner = full_learner(tiny_ckpt)
    pool = LocalPool(Corrupting(str(tiny_ckpt)))
    sync = WeightSync(config(tiny_ckpt, tmp_path), learner, pool, tmp_path / "run", "full")
    fourth = list(learner.model.state_dict())[3]
    with pytest.raises(WeightSyncError, match=f"rollout worker 0: tensor '{fourth}' arrived with checksum"):
        sync(1)
    pool.backend.__class__ = FakeBackend  # an engine that receives correctly: the next sync opens a new group
    assert sync(1)["sync/verified"] == 1 and pool.versions() == [1]
    assert pool.backend.loads[-1] == ("transfer", 1, None)


def test_the_staging_transport_writes_the_folder_the_workers_read(tiny_ckpt, tmp_path):
    learner = full_learner(tiny_ckpt)
    pool = LocalPool(FakeBackend(str(tiny_ckpt)))
    sync = WeightSync(config(tiny_ckpt, tmp_path, "sync.transport=staging"), learner, pool, tmp_path / "run", "full")
    out = sync(1)
    kind, version, folder = pool.backend.loads[-1]
    assert (kind, version) == ("weights", 1) and "sync/verified" not in out and out["sync/gb"] > 0
    assert os.path.isdir(folder)  # kept for a replaced worker until the next version is loaded
    sync(2)
    assert not os.path.exists(folder)
    pool.shutdown()


def test_a_transport_that_cannot_act_is_a_config_error(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="sync.transport=gloo moves full or merged weights.*LoRA adapter"):
        config(tiny_ckpt, tmp_path, "learner.lora=true", "sync.transport=gloo")
    with pytest.raises(ValueError, match="sync.transport=nccl needs the learner ranks and the rollout engines on GPUs"):
        config(tiny_ckpt, tmp_path, "learner.lora=false", "sync.transport=nccl")
    with pytest.raises(ValueError, match="transport"):
        config(tiny_ckpt, tmp_path, "sync.transport=ipc")
    cfg = config(tiny_ckpt, tmp_path, "learner.lora=false", "rollout.gpus_per_worker=1",
                 "cluster.learner_gpus_per_rank=1")
    assert cfg.sync.resolved_transport("full", cfg.on_gpus()) == "nccl"
    shared = config(tiny_ckpt, tmp_path, "learner.lora=false", "rollout.gpus_per_worker=0.5",
                    "cluster.learner_gpus_per_rank=0.5")  # one GPU for both: NCCL cannot join them
    assert shared.sync.resolved_transport("full", shared.on_gpus()) == "gloo"
    assert cfg.sync.resolved_transport("adapter", True) == "adapter"


def test_weights_sent_in_bf16_are_the_learners_cast(tiny_ckpt, tmp_path):
    """The wire dtype is the engines' (rollout.dtype): each tensor is cast before it is sent, and what arrives is
    the learner's cast, bit for bit."""
    learner = full_learner(tiny_ckpt)
    received = []

    class Keeping(FakeBackend):
        def transfer_update(self, info):
            from rollouts.transfer import metas_of, receive_buckets

            self._report["checksums"] += receive_buckets(
                self._group, metas_of(info), self._bucket_bytes, lambda ps: received.extend((n, t.clone()) for n, t in ps))
            self._report["names"] += list(info["names"])

    pool = LocalPool(Keeping(str(tiny_ckpt)))
    out = WeightSync(config(tiny_ckpt, tmp_path, "rollout.dtype=bfloat16"), learner, pool, tmp_path / "run", "full")(1)
    state = learner.model.state_dict()
    assert [n for n, _ in received] == list(state)
    assert all(torch.equal(t, state[n].bfloat16()) for n, t in received if state[n].is_floating_point())
    assert out["sync/gb"] == pytest.approx(sum(t.numel() * 2 for t in state.values()) / 1e9)


class DiesMidTransfer(FakeBackend):
    """Worker 1 dies (its process exits) in the middle of its first weight update."""

    def transfer_update(self, info):
        if self.worker_id == 1 and not os.environ.get("DIED_ONCE"):
            os._exit(1)
        return super().transfer_update(info)


def test_a_worker_lost_during_the_transfer_is_replaced_and_every_worker_gets_the_version(tiny_ckpt, tmp_path,
                                                                                          multiprocess_ray):
    from ray import cloudpickle

    from rollouts.pool import RolloutPool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors have no tests/ on their path
    learner = full_learner(tiny_ckpt)
    pool = RolloutPool(str(tiny_ckpt), num_workers=2, backend=DiesMidTransfer, cpus_per_worker=0)
    try:
        sync = WeightSync(config(tiny_ckpt, tmp_path, "sync.timeout_s=60"), learner, pool, tmp_path / "run", "full")
        first = pool.pids()
        # the replacement must not die again: its environment says it is the second life
        pool.actor_cls = pool.actor_cls.options(runtime_env={"env_vars": {"DIED_ONCE": "1"}})
        out = sync(1)
        assert out["sync/verified"] == 1 and pool.versions() == [1, 1]
        assert pool.load()[1]["restarts"] == 1 and pool.pids()[1] != first[1] and pool.pids()[0] == first[0]
        assert sync(2)["sync/verified"] == 1 and pool.versions() == [2, 2]
    finally:
        pool.shutdown()


@pytest.mark.vllm
def test_rl_train_finishes_every_step_when_an_engine_core_dies_mid_step(tiny_ckpt, multiprocess_ray, tmp_path):
    """vLLM's multiprocess engine (the GPU default): step 2's engine core is killed once the first group of the
    batch is back; the worker ends, its replacement gets the current weights in memory, the rest of the batch is
    resubmitted, and every step trains on all its groups, none failed, lost or repeated."""
    from rl.trainer import Trainer

    cfg = config(tiny_ckpt, tmp_path, "learner.lora=false", "run.steps=3", "run.progress=false",
                 "run.tensorboard=false", "run.export=false", "run.save_every=0", "rollout.prompts_per_step=4",
                 "rollout.n=2", f"data.path={tmp_path / 'd.jsonl'}", "data.demo_rows=32", "reward.workers=1",
                 "rollout.cpus_per_worker=1")
    trainer = Trainer(cfg)
    stream, calls, killed, returned = trainer.pool.stream, [], [], []

    def stream_and_kill(requests):
        calls.append(len(requests))
        for result in stream(requests):
            returned.append(result.request.request_id)
            if len(calls) == 2 and not killed:  # step 2, the first group back: the others are still generating
                killed.extend(engine_cores(trainer.pool.pids()[0]))
                for proc in killed:
                    proc.kill()
            yield result

    trainer.pool.stream = stream_and_kill
    history = trainer.fit()
    assert killed and trainer.pool.slots[0].restarts == 1
    assert [h["groups"] for h in history] == [4, 4, 4] and all(h["failed_requests"] == 0 for h in history)
    assert len(returned) == len(set(returned)) == 12  # every request of the 3 steps once
    assert all(h["sync/verified"] == 1 for h in history)
    assert history[2]["learner/rollout_learner_logp_abs_diff_max"] <= 1e-4  # the replacement has the weights
