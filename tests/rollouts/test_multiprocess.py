"""The rollout worker on vLLM's multiprocess engine (VLLM_ENABLE_V1_MULTIPROCESSING=1, vLLM's default and the
GPU path): weight sync of every kind and LoRA adapters, proven by log-probabilities, and a shutdown that leaves no
process and no shared memory behind. One engine serves the whole module (its start-up takes ~15-25 s on CPU)."""

import os
import shutil
from pathlib import Path

import psutil
import pytest
import torch
from peft import LoraConfig, get_peft_model

from model import MiniCPMV
from model.lora import LLM_LORA_TARGETS, merged_weights
from rollouts.weights import to_shared
from rollouts.vllm.worker import RolloutWorker

from tests.rollouts.helpers import SAMPLING, learner_diff, perturbed, requests, video_requests

pytestmark = pytest.mark.vllm

SHM = Path("/dev/shm")
STAGED = "minicpmv-rl-w0-"
OURS_IN_SHM = ("psm_", "vllm", STAGED)
"""/dev/shm names of vLLM's message queues (multiprocessing.shared_memory: psm_*) and of this worker's weight
staging directories (other tests running beside this one may stage the pool's: minicpmv-rl-v*)."""


def shm_names() -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith(OURS_IN_SHM)} if SHM.is_dir() else set()


def engine_processes(worker: RolloutWorker) -> list[psutil.Process]:
    """The engine-core processes the worker's engine started, and their children (vLLM's model workers)."""
    manager = worker.llm.llm_engine.engine_core.resources.engine_manager
    cores = [psutil.Process(p.pid) for p in manager.processes]
    return cores + [c for core in cores for c in core.children(recursive=True)]


def mapped_shm(procs: list[psutil.Process]) -> set[str]:
    """/dev/shm files the processes have mapped."""
    names = set()
    for proc in procs:
        for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines():
            if " /dev/shm/" in line:
                names.add(line.split(" /dev/shm/", 1)[1].split()[0])
    return names


def left_behind(before: set[str]) -> set[str]:
    """/dev/shm files made since `before` that no running process has mapped: what a stopped engine left. (Files
    another job's live engines hold, a second test suite beside this one, are not this test's.)"""
    new = shm_names() - before
    if not new:
        return set()
    held = set()
    for proc in psutil.process_iter():
        try:
            held |= mapped_shm([proc]) & new
        except (psutil.Error, OSError):
            continue
    return new - held


def peft_lora(ckpt, seed: int):
    torch.manual_seed(seed)
    return get_peft_model(MiniCPMV.from_pretrained(ckpt),
                          LoraConfig(r=8, lora_alpha=16, target_modules=LLM_LORA_TARGETS,
                                     init_lora_weights=False)).eval()


@pytest.fixture(scope="module")
def mp(tiny_ckpt):
    """A worker whose engine runs in other processes, with what existed before it started."""
    import vllm.envs

    patch = pytest.MonkeyPatch()
    patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    patch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # both cores for the engine (cpu-setup.md, trap 3)
    # An in-process engine started earlier in this session froze vLLM's environment (vllm.envs caches every
    # variable once an engine core starts): read it afresh.
    vllm.envs.disable_envs_cache()
    before = {"shm": shm_names(), "children": {p.pid for p in psutil.Process().children(recursive=True)}}
    # video=True: the engine processes load this project's vLLM class by the plugin's entry point
    worker = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=4096,
                           enable_lora=True, max_lora_rank=8, video=True)
    yield worker, before
    worker.shutdown()
    patch.undo()
    vllm.envs.disable_envs_cache()


def test_the_engine_runs_in_other_processes(mp, tiny_model):
    from vllm.v1.engine.core_client import SyncMPClient

    worker, _ = mp
    assert type(worker.llm.llm_engine.engine_core) is SyncMPClient and not worker.model_in_process()
    procs = engine_processes(worker)
    assert procs and all(p.pid != os.getpid() and p.is_running() for p in procs)
    assert any("EngineCore" in " ".join(p.cmdline()) or "EngineCor" in p.name() for p in procs)
    assert learner_diff(tiny_model, worker.generate(requests(3, prefix="base"))).max() <= 1e-4


def test_video_prompts_in_the_multiprocess_engine(mp, tiny_model):
    worker, _ = mp
    results = worker.generate(video_requests("mp", frames=(7,)))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
    assert learner_diff(tiny_model, results).max() <= 1e-4


def test_full_weights_in_memory_from_a_directory_and_from_shared_memory(mp, tiny_ckpt, tmp_path):
    worker, before = mp
    old = MiniCPMV.from_pretrained(tiny_ckpt).eval()
    assert learner_diff(old, worker.generate(requests(3, prefix="a"))).max() <= 1e-4  # old-weight KV cached

    new = perturbed(tiny_ckpt, seed=1)
    assert worker.load_weights(1, weights=new.state_dict().items()) == 1  # a one-pass iterable
    after = worker.generate(requests(3, prefix="a"))  # the same prompts
    assert all(r.policy_version == 1 and s.policy_version == 1 for r in after for s in r.samples)
    assert learner_diff(new, after).max() <= 1e-4
    assert learner_diff(old, after).max() > 1e-2  # neither stale weights nor stale cache
    assert not {n for n in shm_names() - before["shm"] if n.startswith(STAGED)}  # the staged copy is gone

    newer = perturbed(tiny_ckpt, seed=2)
    newer.save_pretrained(tmp_path / "v2")
    worker.load_weights(2, path=str(tmp_path / "v2"))
    results = worker.generate(requests(3, prefix="b"))
    assert learner_diff(newer, results).max() <= 1e-4 and learner_diff(new, results).max() > 1e-2

    newest = perturbed(tiny_ckpt, seed=3)  # the pool's object-store transport: numpy views, a generator
    worker.load_shared_weights(3, to_shared(newest.state_dict().items()))
    results = worker.generate(requests(3, prefix="c"))
    assert learner_diff(newest, results).max() <= 1e-4 and learner_diff(newer, results).max() > 1e-2


def test_merged_lora_weights(mp, tiny_ckpt):
    worker, _ = mp
    peft_model = peft_lora(tiny_ckpt, seed=3)
    worker.load_weights(4, weights=merged_weights(peft_model))
    results = worker.generate(requests(3, prefix="m"))
    assert learner_diff(peft_model, results).max() <= 1e-4
    with peft_model.disable_adapter():
        assert learner_diff(peft_model, results).max() > 1e-2


def test_lora_adapters_load_eagerly_so_their_directory_may_go(mp, tiny_ckpt, tmp_path):
    worker, _ = mp
    base = tmp_path / "base"
    MiniCPMV.from_pretrained(tiny_ckpt).save_pretrained(base)
    worker.load_weights(5, path=str(base))
    for version, seed in ((6, 0), (7, 1)):
        peft_model = peft_lora(tiny_ckpt, seed)
        peft_model.save_pretrained(tmp_path / f"lora{version}")
        worker.load_lora(version, str(tmp_path / f"lora{version}"))
        shutil.rmtree(tmp_path / f"lora{version}")  # as the trainer does once every worker has it
        results = worker.generate(requests(3, prefix=f"l{version}"))
        assert all(r.ok and r.policy_version == version for r in results), [r.error for r in results]
        assert learner_diff(peft_model, results).max() <= 1e-4
        with peft_model.disable_adapter():
            assert learner_diff(peft_model, results).max() > 1e-2  # the adapter, and not an older one
    assert set(worker.llm.llm_engine.list_loras()) == {8}  # version 7's id; version 6's was removed
    worker.unload_lora(8)
    assert not worker.llm.llm_engine.list_loras()
    assert learner_diff(MiniCPMV.from_pretrained(tiny_ckpt).eval(),
                        worker.generate(requests(3, prefix="u"))).max() <= 1e-4


def test_shutdown_leaves_no_process_and_no_shared_memory(mp):
    worker, before = mp
    procs = engine_processes(worker)
    held = mapped_shm(procs)
    assert any(name.startswith("psm_") for name in held)  # the engine's message queues live in /dev/shm
    worker.shutdown()
    worker.shutdown()  # idempotent
    assert not any(p.is_running() for p in procs)  # exited and reaped (a zombie would count as running)
    new_children = [p for p in psutil.Process().children(recursive=True) if p.pid not in before["children"]]
    # multiprocessing's resource tracker starts once per interpreter and stays for its life (it owns nothing)
    assert all("resource_tracker" in " ".join(p.cmdline()) for p in new_children), new_children
    assert not any((SHM / name).exists() for name in held)
    assert left_behind(before["shm"]) == set()


def test_pool_shutdown_frees_multiprocess_engines(tiny_ckpt):
    """cpu-setup.md trap 8: Ray kills an actor outright, and the multiprocess engine inside it left its message
    queues in /dev/shm (~400 MB). The pool now has each worker stop its engine first."""
    import ray

    from rollouts.pool import RolloutPool

    if ray.is_initialized():
        ray.shutdown()
    shm_before = shm_names()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}})
    try:
        pool = RolloutPool(str(tiny_ckpt), num_workers=1, mode_sampling=SAMPLING, dtype="float32",
                           max_model_len=2048, cpus_per_worker=0)
        try:
            actor = pool.slots[0].actor
            pids = ray.get(actor.__ray_call__.remote(
                lambda w: [p.pid for p in engine_processes(w)] if not w.model_in_process() else []))
            assert pids
            procs = [psutil.Process(pid) for pid in pids]
            held = mapped_shm(procs)
            new = perturbed(tiny_ckpt, seed=4)
            pool.sync_weights(1, weights=new.state_dict().items(), transport="object_store")
            assert learner_diff(new, pool.generate(requests(2, prefix="p"))).max() <= 1e-4
        finally:
            pool.shutdown()
        assert not any(p.is_running() for p in procs)
        assert any(n.startswith("psm_") for n in held) and not any((SHM / n).exists() for n in held)
        assert left_behind(shm_before) == set()
    finally:
        ray.shutdown()
