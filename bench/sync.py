"""Full-weight sync: seconds per sync for each transport available here, with 1 and 2 rollout workers, and the
sync's share of a `configs/learn_cpu.yaml` step. Prints JSON.

    python bench/sync.py [--preset qwen3-0.6b] [--repeats 3] [--json OUT.json] [--skip-step]

Transports: `gloo` (in memory: vLLM's weight-transfer API over a gloo group, `rollouts/transfer.py`) and `staging`
(safetensors shards in /dev/shm that every engine reads); `nccl` needs GPUs. The learner is a `LocalLearner` (full
weights, fp32) on the preset's checkpoint, the engines serve it in bf16 (what travels: the bf16 cast). Each case:
the first sync (which opens the group) and the median of `--repeats` more. `workers_2_over_1` per transport: the
steady seconds with 2 workers over 1 (every engine receives each bucket at once: ideally 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sync_seconds(ckpt: str, transport: str, workers: int, repeats: int, run_dir: Path) -> dict:
    import ray

    from rl.config import load
    from rl.learner import LocalLearner
    from rl.config import LearnerConfig
    from rl.sync import WeightSync
    from rollouts.pool import RolloutPool

    cfg = load(None, [f"model.path={ckpt}", "rollout.dtype=bfloat16", "learner.lora=false",
                      f"sync.transport={transport}", f"run.dir={run_dir}"])
    learner = LocalLearner(ckpt, LearnerConfig(lora=False, entropy_metric=False), device="cpu")
    pool = RolloutPool(ckpt, num_workers=workers, dtype="bfloat16", max_model_len=1024, cpus_per_worker=0)
    sync = WeightSync(cfg, learner, pool, run_dir, "full")
    try:
        times, gb = [], 0.0
        for version in range(1, repeats + 2):
            out = sync(version)
            times.append(out["sync/seconds"])
            gb = out["sync/gb"]
        return {"transport": transport, "workers": workers, "gb": gb, "first_s": times[0],
                "steady_s": statistics.median(times[1:]), "all_s": times}
    finally:
        pool.shutdown()
        learner.close()
        sync.close()
        ray.shutdown()


def step_share(repeats: int) -> dict:
    """`configs/learn_cpu.yaml` for a few steps: the sync's share of a step (the tiny model, full weights)."""
    from rl.config import load
    from rl.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load("configs/learn_cpu.yaml", [f"run.dir={tmp}/run", f"run.steps={repeats + 1}", "run.progress=false",
                                              "run.tensorboard=false", "run.export=false", "run.save_every=0",
                                              f"data.path={tmp}/arith.jsonl"])
        history = Trainer(cfg).fit()[1:]  # the first step opens the group
    sync = statistics.median(h["time/sync"] for h in history)
    step = statistics.median(h["time/step"] for h in history)
    return {"config": "configs/learn_cpu.yaml", "transport": history[0].get("sync/verified") and "gloo",
            "sync_s": sync, "step_s": step, "sync_share": sync / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen3-0.6b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--skip-step", action="store_true")
    args = parser.parse_args()
    import torch

    from model.tiny import build_tiny_checkpoint

    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           "preset": args.preset, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(build_tiny_checkpoint(Path(tmp) / "ckpt", preset=args.preset, dtype=torch.bfloat16))
        for transport in ("gloo", "staging"):
            for workers in (1, 2):
                start = time.perf_counter()
                case = sync_seconds(ckpt, transport, workers, args.repeats, Path(tmp) / f"run-{transport}-{workers}")
                case["wall_s"] = time.perf_counter() - start
                out["cases"].append(case)
                print(json.dumps(case), file=sys.stderr)
    steady = {(c["transport"], c["workers"]): c["steady_s"] for c in out["cases"]}
    out["workers_2_over_1"] = {t: steady[(t, 2)] / steady[(t, 1)] for t in ("gloo", "staging")}
    out["gloo_over_staging"] = {w: steady[("gloo", w)] / steady[("staging", w)] for w in (1, 2)}
    if not args.skip_step:
        out["learn_cpu_step"] = step_share(args.repeats)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
