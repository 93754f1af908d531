"""The one-step-off loop's overlap, measured with stand-ins that sleep (bench/stand_ins.py), so that generation and
the update do not share the CPU: the step time should be max(generate, update) with `run.async_mode=one_step_off`
and their sum with `off`.

    python bench/overlap.py --json OUT.json [--generate 2.0] [--update 1.5] [--steps 6]
    python bench/overlap.py --json OUT.json --long-tail [--generate 0.1 --update 0.1 --steps 40 --slots 8]

`--long-tail`: a hybrid length mix (8 groups a step, each 8x longer with probability 0.1, `--generate` a short one)
on an engine that runs 8 groups at once (`--slots`; a group waits for a free one), one_step_off against fully_async
(algo.max_staleness=2 for both, staleness_policy=wait, the same prompts and the same length per prompt), reported as
steps per second and `fully_async_over_one_step_off`. One-step-off's batch lasts as long as its longest group, the
other slots idle meanwhile; fully_async's producer fills them with the next rounds' groups, and a long group goes
into a later batch (at most 2 versions old: a step waits for it when it reaches the bound).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stand_ins import SleepingLearner, SleepingPool  # noqa: E402


def step_times(mode: str, generate: float, update: float, steps: int, work: Path, tail=None,
               extra: tuple[str, ...] = (), slots: int | None = None) -> tuple[list[dict], float]:
    """Each step's metrics and the run's wall time (the trainer's set-up excluded)."""
    from model.tiny import build_tiny_checkpoint
    from rl.config import load
    from rl.trainer import Trainer

    ckpt = work / "ckpt"
    if not (ckpt / "config.json").exists():
        build_tiny_checkpoint(ckpt, seed=0)
    cfg = load(ROOT / "configs" / "tiny_cpu.yaml", [
        f"model.path={ckpt}", f"data.path={work / 'data.jsonl'}", f"run.dir={work / mode}", f"run.steps={steps}",
        f"run.async_mode={mode}", "run.export=false", "run.progress=false", "run.tensorboard=false",
        "run.save_every=0", f"rollout.prompts_per_step={8 if tail else 2}", "rollout.n=2", "reward.workers=1",
        *extra])
    start = time.perf_counter()
    history = Trainer(cfg, learner=SleepingLearner(update), pool=SleepingPool(generate, tail, slots)).fit()
    return history, time.perf_counter() - start


def long_tail(args, work: Path) -> dict:
    """Steps per second of one_step_off and fully_async on the same long-tail batches."""
    tail = (0.1, 8.0)
    report = {"generate_short_s": args.generate, "update_s": args.update, "steps": args.steps, "tail": tail,
              "prompts_per_step": 8, "slots": args.slots}
    for mode in ("one_step_off", "fully_async"):
        history, wall = step_times(mode, args.generate, args.update, args.steps, work, tail,
                                   ("algo.max_staleness=2",), args.slots)
        report[f"steps_per_s_{mode}"] = args.steps / wall
        report[f"staleness_max_{mode}"] = max(h["staleness/max"] for h in history)
        report[f"groups_dropped_{mode}"] = sum(h["staleness/dropped"] for h in history)
    report["fully_async_over_one_step_off"] = report["steps_per_s_fully_async"] / report["steps_per_s_one_step_off"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--generate", type=float, default=2.0)
    parser.add_argument("--update", type=float, default=1.5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--long-tail", action="store_true", help="one_step_off against fully_async on a long tail")
    parser.add_argument("--slots", type=int, default=8, help="--long-tail: groups the stand-in engine runs at once")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overlap-"))
    if args.long_tail:
        report = {**long_tail(args, work), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        return
    report = {"generate_s": args.generate, "update_s": args.update, "steps": args.steps,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for mode in ("off", "one_step_off"):
        history, _ = step_times(mode, args.generate, args.update, args.steps, work)
        times = [h["time/step"] for h in history]
        report[f"step_s_{mode}"] = statistics.median(times[1:])  # the first step has nothing to overlap with
        report[f"first_step_s_{mode}"] = times[0]
    report["sum_s"], report["max_s"] = args.generate + args.update, max(args.generate, args.update)
    report["one_step_off_over_max"] = report["step_s_one_step_off"] / report["max_s"]
    report["speedup"] = report["step_s_off"] / report["step_s_one_step_off"]
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
