"""Sharded learner scaling: the sharded learner (FSDP2 over Ray actor ranks) on 1 and 2 ranks against the local
learner, on the same batch.

    python bench/learner_scale.py [--ckpt DIR] --json OUT.json [--samples 8] [--ranks 1,2] [--budget 2048]
        [--lora/--no-lora]

The batch is bench/learner.py's hybrid length mix (half short answers of 16-64 tokens, half long traces of
512-2048). Without --ckpt, a random `small`-preset checkpoint (`rl-tiny-model OUT --preset small`) is built in a
temporary folder. Each variant: one warm-up step (the first two samples), then one timed step on the whole batch.
tokens/s = the step's tokens / the wall seconds of the step as the driver sees it. Sharded variants are timed
through `LearnerRank.profiled("step", shard)` on every rank at once (the shards from
`ShardedLearner.split`, as `ShardedLearner.step` calls it), so their wall includes torch's profiler and Ray's
dispatch; per rank: seconds inside torch.distributed's collectives, peak memory (MB: GPU memory on CUDA, else the
rank process's peak RSS). The local learner's peak RSS is the driver's, which includes everything before it.
On the CPU the ranks run gloo and split the machine's cores (cores // ranks threads each); on GPUs, NCCL and one
GPU per rank.
Each variant then times one streamed weight sync (`sync_stream_s`): the full weights (merged, for LoRA) gathered
and written bucket by bucket (`--bucket-mb`) into a staging folder (/dev/shm when it has room) as `rl-train`
syncs them, with the bytes written and the writer's peak of held bytes (`sync_bytes`, `sync_peak_bytes`); and, for
comparison, the same weights delivered to the driver as (name, tensor) pairs (`sync_pairs_to_driver_s`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402

from bench.learner import hybrid_samples  # noqa: E402
from model.checkpoint import INDEX  # noqa: E402
from model.processor import Processor  # noqa: E402
from model.tiny import PRESETS, build_tiny_checkpoint  # noqa: E402
from rl.config import LearnerConfig  # noqa: E402
from rl.learner import LocalLearner, TrainSample  # noqa: E402
from rl.learner.sharded import ShardedLearner  # noqa: E402
from rollouts.weights import Staging  # noqa: E402


def timed_sync(learner, lora: bool, bucket_mb: int) -> dict:
    """One streamed sync (`Learner.sync_payload` with staging), as the driver sees it; the folder is removed. For
    comparison, the same weights gathered as (name, tensor) pairs delivered to the driver (the path before)."""
    kind = "merged" if lora else "full"
    start = time.perf_counter()
    pairs = learner.sync_payload(kind)[1]
    pairs_s = time.perf_counter() - start
    del pairs
    fallback = tempfile.mkdtemp()
    try:
        start = time.perf_counter()
        _, folder = learner.sync_payload(kind, staging=Staging(fallback, bucket_mb=bucket_mb))
        seconds = time.perf_counter() - start
        meta = json.loads((Path(folder) / INDEX).read_text())["metadata"]
        shutil.rmtree(folder)
    finally:
        shutil.rmtree(fallback, ignore_errors=True)
    return {"sync_stream_s": seconds, "sync_bytes": meta["total_size"], "sync_peak_bytes": meta["peak_bytes"],
            "sync_in_shm": folder.startswith("/dev/shm/"), "sync_pairs_to_driver_s": pairs_s}


def run_local(ckpt: str, cfg: LearnerConfig, samples: list[TrainSample], bucket_mb: int) -> dict:
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    learner = LocalLearner(ckpt, cfg)
    learner.step(samples[:2])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = learner.step(samples)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sync = timed_sync(learner, cfg.lora, bucket_mb)
    del learner
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()  # the ranks may be given this GPU next
    return {"tokens": metrics["tokens"], "tokens_per_s": metrics["tokens"] / wall, "wall_s": wall,
            "step_seconds": [metrics["seconds"]], "comm_seconds": [0.0],
            "peak_mb": [torch.cuda.max_memory_allocated() / 2**20 if cuda else rss], "peak_rss_mb": [rss],
            "threads": torch.get_num_threads(), **sync}


def profiled_step(sharded: ShardedLearner, samples: list[TrainSample]) -> tuple[float, list, list]:
    parts = sharded.split(samples)
    start = time.perf_counter()
    outs = ray.get([r.profiled.remote("step", [samples[i] for i in idx])
                    for r, idx in zip(sharded.ranks, parts)])
    return time.perf_counter() - start, outs, parts


def run_sharded(ckpt: str, cfg: LearnerConfig, samples: list[TrainSample], ranks: int, bucket_mb: int) -> dict:
    cuda = torch.cuda.is_available()
    cpus = max(1, (os.cpu_count() or 1) // ranks)
    sharded = ShardedLearner(ckpt, cfg, ranks=ranks, cpus_per_rank=cpus, gpus_per_rank=1 if cuda else 0, seed=0)
    try:
        profiled_step(sharded, samples[:2])  # warm-up (the profiler's too)
        wall, outs, parts = profiled_step(sharded, samples)
        sync = timed_sync(sharded, cfg.lora, bucket_mb)
    finally:
        sharded.close()
    tokens = sum(m["tokens"] for m, _ in outs)
    return {"tokens": tokens, "tokens_per_s": tokens / wall, "wall_s": wall,
            "step_seconds": [m["seconds"] for m, _ in outs],
            "comm_seconds": [p["comm_seconds"] for _, p in outs],
            "peak_mb": [p["peak_gpu_mb"] if cuda else p["peak_rss_mb"] for _, p in outs],
            "peak_rss_mb": [p["peak_rss_mb"] for _, p in outs],
            "rank_tokens": [m["tokens"] for m, _ in outs], "rank_samples": [len(idx) for idx in parts],
            "threads": 0 if cuda else cpus, **sync}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint; default: a `small`-preset one built in a temporary folder")
    parser.add_argument("--json", required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts of the sharded learner")
    parser.add_argument("--budget", type=int, default=2048, help="packed micro-batch token budget")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--bucket-mb", type=int, default=512, help="the streamed sync's bucket (sync.bucket_mb)")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",") if r]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            preset = "small" if "small" in PRESETS else "tiny"
            ckpt = str(build_tiny_checkpoint(Path(tmp) / preset, preset=preset))
        processor = Processor.from_pretrained(ckpt)
        samples = hybrid_samples(processor, args.samples, len(processor.tokenizer))
        cfg = LearnerConfig(lora=args.lora, micro_batch_tokens=args.budget, packing=True)
        cfg.entropy_metric = False
        variants = {"local": run_local(ckpt, cfg, samples, args.bucket_mb)}
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        try:
            for n in ranks:
                variants[f"sharded_{n}"] = run_sharded(ckpt, cfg, samples, n, args.bucket_mb)
        finally:
            ray.shutdown()
    cuda = torch.cuda.is_available()
    report = {
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "ray": ray.__version__,
                    "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
                    "backend": "nccl" if cuda else "gloo",
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"ckpt": args.ckpt or "temporary small preset", "samples": args.samples,
                     "tokens": variants["local"]["tokens"], "ranks": ranks, "budget": args.budget,
                     "lora": args.lora, "packing": True, "warmup_steps": 1, "timed_steps": 1,
                     "sync_bucket_mb": args.bucket_mb},
        "variants": variants,
        "wall_over_local": {k: v["wall_s"] / variants["local"]["wall_s"] for k, v in variants.items()
                               if k != "local"},
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
