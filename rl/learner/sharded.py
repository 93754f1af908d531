"""The sharded learner: N ranks as Ray actors in one placement group, joined by torch.distributed (gloo on the CPU,
NCCL on GPUs). Each rank holds a `LocalLearner` over the FSDP2-sharded model (`fsdp.py`) and gets a share of every
batch (balanced by tokens); the loss is normalised by the whole batch's counts, so the gradient, and every weight
after a step, does not depend on the number of ranks (tested against the local learner).

    learner = ShardedLearner(ckpt, LearnerConfig(...), AlgoConfig(...), ranks=8, gpus_per_rank=1)
    metrics = learner.step(samples)                # the same interface as LocalLearner
    kind, folder = learner.sync_payload("full", staging=Staging(f"{run_dir}/.sync"))  # full tensors gathered one
    # at a time, written by rank 0 bucket by bucket into a new staging folder (/dev/shm when it has room): only the
    # folder's path comes back
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import socket
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from core.process import Owner, exit_with, private_tempdir
from rollouts.transfer import SendReport, TransferPlan
from rollouts.weights import Staging

from ..config import AlgoConfig, LearnerConfig
from ..errors import LearnerRankLost
from .base import TrainSample
from .local import LocalLearner, Reduced, mini_batches, sample_lengths
from .memory import resident_mb

PER_RANK = ("grad_norm", "lr", "updates", "skipped_steps")
"""Step metrics every rank computes identically (taken from rank 0)."""
SUMMED = ("tokens", "completion_tokens", "micro_batches", "dispatch_mb")
"""Step metrics that are counts: summed over the ranks."""
MAXED = ("peak_mb",)
"""Step metrics whose largest rank is what matters (memory: the rank that runs out first)."""
MB = 2**20


def pack_share(samples: list[TrainSample], parts: list[list[int]] | None = None) -> bytes:
    """One rank's share of a batch as it travels, serialized once: its samples (no other rank's) with every
    prompt stripped of what the learner does not read (`images`, `stills`, `videos`: PIL images, whose pixels are
    already in `pixel_values`), and `parts`, index lists into them (its part of each global mini-batch). Samples
    that share a prompt object (a group) still share one after the trip: one stripped copy per distinct prompt, and
    pickle writes a shared object once."""
    stripped: dict[int, Any] = {}
    light = []
    for s in samples:
        prompt = stripped.get(id(s.prompt))
        if prompt is None:
            prompt = stripped[id(s.prompt)] = s.prompt.without_images()
        light.append(dataclasses.replace(s, prompt=prompt))
    return pickle.dumps((light, parts), protocol=pickle.HIGHEST_PROTOCOL)


def unpack_share(blob: bytes) -> tuple[list[TrainSample], list[list[int]] | None]:
    return pickle.loads(blob)


class LearnerRank:
    """One rank (a Ray actor): its process group membership and its LocalLearner."""

    def __init__(self, rank: int, world: int, ckpt: str, config: LearnerConfig, algo: AlgoConfig, seed: int,
                 threads: int, owner: Owner | None = None):
        # temp files in a folder of its own (removed by close: the actor is killed after it); dies with the trainer
        self.own_tempdir = private_tempdir() if owner is not None else None
        exit_with(owner)
        self.rank, self.world, self.ckpt, self.config, self.algo, self.seed = rank, world, ckpt, config, algo, seed
        self.learner: LocalLearner | None = None
        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))

    def address(self) -> tuple[str, int]:
        """This node's address and a free port: rank 0's becomes the process group's rendezvous."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master: str, port: int) -> str:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR=master, MASTER_PORT=str(port))
        cuda = torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo", rank=self.rank, world_size=self.world)
        if cuda:
            torch.cuda.set_device(0)  # Ray shows each rank its own GPU(s)
        torch.manual_seed(self.seed)  # the same LoRA initialisation on every rank, as a local learner's
        before = resident_mb(reset_peak=True)[0]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        self.learner = LocalLearner(self.ckpt, self.config, self.algo, device="cuda" if cuda else "cpu",
                                    sharded=True)
        now, peak = resident_mb()
        self.startup = {"rss_before_mb": before, "rss_mb": now, "peak_rss_mb": peak,
                        "peak_gpu_mb": torch.cuda.max_memory_allocated() / MB if cuda else 0.0}
        """Resident memory (MB) around building the learner: before, after, and the peak in between (the peak of
        the process so far where the kernel cannot reset it); the GPU's peak."""
        return ray.get_runtime_context().get_node_id()

    def startup_memory(self) -> dict[str, float]:
        return self.startup

    def call(self, method: str, *args, **kwargs) -> Any:
        return getattr(self.learner, method)(*args, **kwargs)

    def version(self) -> int:
        return self.learner.version

    def step_share(self, blob: bytes) -> dict[str, float]:
        """`LocalLearner.step` over this rank's share (`pack_share`: its samples, its part of each mini-batch);
        `dispatch_mb`: the share's size as it came."""
        samples, parts = unpack_share(blob)
        out = self.learner.step(samples, parts=[[samples[i] for i in idx] for idx in parts])
        out["dispatch_mb"] = len(blob) / MB
        return out

    def logprobs_share(self, blob: bytes, reference: bool = False) -> list[torch.Tensor]:
        """`LocalLearner.logprobs` over this rank's share (`pack_share`)."""
        return self.learner.logprobs(unpack_share(blob)[0], reference)

    def profiled(self, method: str, *args) -> tuple[Any, dict[str, float]]:
        """`call(method, *args)` under torch's profiler: the result, and this rank's seconds inside
        torch.distributed's collectives (c10d ops, their waits included), peak resident memory and peak GPU
        memory (for bench/learner_scale.py)."""
        import resource

        from torch.profiler import ProfilerActivity, profile

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = self.call(method, *args)
        comm = sum(e.self_cpu_time_total for e in prof.key_averages() if "c10d" in e.key) / 1e6
        return out, {"comm_seconds": comm,
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0}

    def close(self) -> None:
        import torch.distributed as dist

        self.learner.close_sender()
        if dist.is_initialized():
            dist.destroy_process_group()
        if self.own_tempdir is not None:
            shutil.rmtree(self.own_tempdir, ignore_errors=True)


class ShardedLearner:
    """`Learner` over `ranks` processes (Ray actors; `resources` are Ray custom resources each rank requests, which
    is how a config puts the learner on chosen nodes)."""

    def __init__(self, ckpt: str | Path, config: LearnerConfig | None = None, algo: AlgoConfig | None = None,
                 ranks: int = 2, cpus_per_rank: float = 1, gpus_per_rank: float = 0,
                 resources: dict[str, float] | None = None, seed: int = 0, timeout_s: float = 600):
        self.config, self.algo = config or LearnerConfig(), algo or AlgoConfig()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        bundle = {"CPU": cpus_per_rank, **({"GPU": gpus_per_rank} if gpus_per_rank else {}), **(resources or {})}
        self.placement = placement_group([dict(bundle) for _ in range(ranks)], strategy="PACK")
        try:
            ray.get(self.placement.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.placement)
            raise RuntimeError(f"the cluster cannot place {ranks} learner ranks of {bundle} each within {timeout_s} s "
                               f"(cluster.learner_*); it has {ray.cluster_resources()}") from None
        actor = ray.remote(num_cpus=cpus_per_rank, num_gpus=gpus_per_rank, resources=resources or None)(LearnerRank)
        self.ranks = [actor.options(scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, i)).remote(
            i, ranks, str(ckpt), self.config, self.algo, seed, int(cpus_per_rank), Owner.this_process())
            for i in range(ranks)]
        master, port = ray.get(self.ranks[0].address.remote())
        self.nodes = self._gather([r.setup.remote(master, port) for r in self.ranks], "setup")
        """The node id of each rank (where Ray placed it)."""
        self.version = 0

    # ---- the batch over the ranks ----
    def split(self, samples: list[TrainSample]) -> list[list[int]]:
        """Sample indices per rank, balanced by tokens (longest first onto the least-loaded rank)."""
        load = [0] * len(self.ranks)
        parts: list[list[int]] = [[] for _ in self.ranks]
        sizes = sample_lengths(samples)
        for i in sorted(range(len(samples)), key=lambda i: -sizes[i]):
            k = load.index(min(load))
            parts[k].append(i)
            load[k] += sizes[i]
        return [sorted(p) for p in parts]

    def _on_all(self, method: str, *args) -> list[Any]:
        return self._gather([r.call.remote(method, *args) for r in self.ranks], method)

    def _gather(self, refs: list, what: str) -> list[Any]:
        """Each rank's answer, in rank order. A rank that died (its process killed, out of memory) is a
        `LearnerRankLost` naming it as soon as it is known, not when the other ranks give up waiting for it in a
        collective; an exception a rank raised comes back as itself."""
        index = {ref: i for i, ref in enumerate(refs)}
        pending, out = list(refs), [None] * len(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = index[ready[0]]
            try:
                out[i] = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                cause = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                raise LearnerRankLost(f"learner rank {i} of {len(refs)} died during {what} ({cause[:300]}); "
                                      "continue from the latest checkpoint with --resume") from None
        return out

    def shares(self, samples: list[TrainSample]) -> list[tuple[list[int], list[list[int]]]]:
        """Per rank: the indices of its samples in `samples` and, in positions into those, its part of each global
        mini-batch (formed first, as the local learner forms them, then each shared out). Its samples are its parts
        one after the other (what `LocalLearner.step` expects of `samples` and `parts`)."""
        out: list[tuple[list[int], list[list[int]]]] = [([], []) for _ in self.ranks]
        for idx in mini_batches(len(samples), self.algo.mini_batches):
            for (mine, parts), chosen in zip(out, self.split([samples[i] for i in idx])):
                parts.append(list(range(len(mine), len(mine) + len(chosen))))
                mine.extend(idx[i] for i in chosen)
        return out

    def step(self, samples: list[TrainSample]) -> dict[str, float]:
        """Each rank gets its share only, once (`pack_share`: one object per rank, no PIL images); `dispatch_mb`
        is their total size."""
        blobs = [pack_share([samples[i] for i in mine], parts) for mine, parts in self.shares(samples)]
        outs = self._gather([r.step_share.remote(ray.put(blob)) for r, blob in zip(self.ranks, blobs)], "step")
        del blobs
        reduced = Reduced()
        for out in outs:
            reduced.add({k: v for k, v in out.items() if k not in PER_RANK + SUMMED + MAXED + (
                "seconds", "tokens_per_s", "padding_fraction")})
        metrics = reduced.values
        metrics.update({k: outs[0][k] for k in PER_RANK})
        metrics.update({k: sum(o[k] for o in outs) for k in SUMMED})
        metrics.update({k: max(o[k] for o in outs) for k in MAXED})
        metrics["seconds"] = max(o["seconds"] for o in outs)
        metrics["tokens_per_s"] = metrics["tokens"] / metrics["seconds"]
        metrics["padding_fraction"] = sum(o["padding_fraction"] * o["tokens"] for o in outs) / max(1, metrics["tokens"])
        self.version += 1
        return metrics

    def logprobs(self, samples: list[TrainSample], reference: bool = False) -> list[torch.Tensor]:
        parts = self.split(samples)
        outs = self._gather([r.logprobs_share.remote(ray.put(pack_share([samples[i] for i in idx])), reference)
                             for r, idx in zip(self.ranks, parts)], "logprobs")
        result: list[torch.Tensor | None] = [None] * len(samples)
        for idx, values in zip(parts, outs):
            for i, v in zip(idx, values):
                result[i] = v
        return result

    # ---- weights and state (collective: every rank takes part) ----
    def resolve_sync_kind(self, kind: str = "auto") -> str:
        return LocalLearner.resolve_sync_kind(self, kind)

    def sync_payload(self, kind: str = "auto", adapter_dir: str | None = None,
                     staging: Staging | None = None) -> tuple[str, Any]:
        """Every rank takes part in each gather; rank 0 writes (with `staging`: into a folder on its node, or on
        the shared `staging.fallback`) and only its answer, a path, comes back."""
        return self._on_all("sync_payload", kind, adapter_dir, staging)[0]

    def send_weights(self, kind: str, plan: TransferPlan) -> SendReport:
        """Every rank takes part in each gather; rank 0 broadcasts to the engines (`LocalLearner.send_weights`)
        and its report comes back (the plan, with the workers' actor handles, travels to every rank)."""
        return self._on_all("send_weights", kind, plan)[0]

    def save_state(self, path: Path) -> None:
        self._on_all("save_state", Path(path))

    def load_state(self, path: Path) -> None:
        self._on_all("load_state", Path(path))
        self.version = ray.get(self.ranks[0].version.remote())

    def export(self, out: Path) -> None:
        self._on_all("export", Path(out))

    def close(self) -> None:
        try:
            ray.get([r.close.remote() for r in self.ranks], timeout=30)
        except Exception:  # noqa: BLE001  (a dead rank: killed below anyway)
            pass
        for r in self.ranks:
            ray.kill(r)
        remove_placement_group(self.placement)
