"""The paper's hybrid table in miniature: does a hybrid-mode run keep each mode as good as its specialist, on fewer
training tokens? Five arms on one task, with the same warm start, steps, seeds and prompts.

    python bench/hybrid_table.py --json bench/results/hybrid_table_cpu.json [--plot OUT.png]   # the full run
    python bench/hybrid_table.py --quick --json OUT.json                                     # the suite's smoke run
    python bench/hybrid_table.py --warm-steps 1200 --steps 60 --lr 3e-4 --json ...           # the first recorded run

The task (`bench/hybrid_task.py`, fixed before the arms were compared): the last digit of a sum of k digits, easy
(k in 2..3) or hard (k in 6..7); the long-mode demonstration writes the running sums inside the think block.

1. **Warm start.** The tiny model learns the format of both modes (and of auto mode's choice, thinking on half of
   the demonstrations whatever the difficulty) from demonstrations: supervised steps through the learner itself,
   i.e. its policy-gradient loss with advantage 1 on fixed completions (the ratio is 1, so the gradient is the
   token-mean log-likelihood's). The result is exported as a checkpoint that every arm starts from.
2. **Arms** (`ARMS`), each `rl-train`'s Trainer on the same config (`base_overrides`, `REWARD`) plus its own overrides:
   - `short_only`, `long_only`: the specialists (modes.long_fraction 0 or 1);
   - `hybrid_50`: the paper's recipe, half the prompts long;
   - `benefit`: modes.schedule=benefit (a prompt goes long by its measured benefit, a quarter of prompts paired);
   - `auto`: every prompt in auto mode, charged `hybrid_task.TOKEN_COST` per token, Thinkless's choice weight.
   One vLLM engine serves all arms (started once, which is most of the quick run's time); each arm's trainer first
   loads the warm-start weights into it, through the same weight sync a step uses.
3. **Evaluation.** Each arm's last step evaluates the held-out rows (the same rows for every arm: the trainer holds
   them out of training by the data seed) in short, long and auto mode, `run.eval_n` samples each at the training
   temperature (1.0: accuracy is the policy's expected accuracy, not greedy decoding's). The warm start is
   evaluated the same way, as a reference row.

Prints one JSON object: `{"arms": {ARM: {"accuracy": {MODE: {"easy", "hard", "all"}}, "train_tokens",
"think_rate": {"easy", "hard"}, ...}}, "warm_start": {...}, "checks": {...}, ...}`. `train_tokens` = completion
tokens generated for training (`tokens/total`); `think_rate` = the share of auto-mode samples that think (every arm
is evaluated in auto mode; only `auto` is trained in it). `checks` holds the issue's four claims, each with its
numbers and whether it held: they are measured and reported, never asserted here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hybrid_task as task  # noqa: E402

ARMS: dict[str, list[str]] = {
    "short_only": ["modes.long_fraction=0.0"],
    "long_only": ["modes.long_fraction=1.0"],
    "hybrid_50": ["modes.long_fraction=0.5"],
    "benefit": ["modes.schedule=benefit", "modes.paired_fraction=0.25", "modes.token_cost=1.0",
                "modes.token_scale=100"],  # lambda: 0.01 reward per token, the auto arm's charge
    "auto": ["modes.auto_fraction=1.0", "algo.choice_weight=1.0",
             "reward.combine.parts.cost=bench/hybrid_task.py:token_cost", "reward.combine.weights.cost=1.0"],
}
REWARD = ["reward.combine.parts={acc: acc, format: format, repetition: repetition}",
          "reward.combine.weights={acc: 1.0, format: 1.0, repetition: 1.0}", "reward.combine.group_normalize=[]"]
"""Every arm's reward: the paper's parts without a reward model (none is served here); the auto arm adds its cost."""
MODES = ("short", "long", "auto")
SEED = 0
TRAIN_ROWS, EVAL_ROWS = 4096, 200


def sizes(quick: bool) -> dict:
    """Every size of the run; --quick shrinks them for the suite (the same code path, seconds of work)."""
    if quick:
        return dict(warm_steps=30, warm_batch=16, steps=2, lr=1e-3, prompts=4, n=4, eval_rows=8, eval_n=1)
    return dict(warm_steps=2000, warm_batch=64, steps=100, lr=1e-3, prompts=8, n=8, eval_rows=EVAL_ROWS, eval_n=4)


def base_overrides(size: dict, data: Path, model: Path) -> list[str]:
    """The config every arm shares (on top of configs/tiny_cpu.yaml); `run_arm` adds the arm's and its folder."""
    return [f"model.path={model}", "model.build_tiny_if_missing=false", f"data.path={data}", "data.demo=null",
            f"rollout.prompts_per_step={size['prompts']}", f"rollout.n={size['n']}", "rollout.max_model_len=256",
            "rollout.short={max_new_tokens: 8}", "rollout.long={max_new_tokens: 48}",
            "rollout.auto={max_new_tokens: 48}",
            "learner.lora=false", f"learner.lr={size['lr']}", "learner.micro_batch_tokens=4096",
            f"run.steps={size['steps']}", "run.save_every=0", "run.export=false", f"run.seed={SEED}",
            f"run.eval_every={size['steps']}", f"run.eval_rows={size['eval_rows']}", f"run.eval_n={size['eval_n']}",
            "run.eval_modes=[short, long, auto]", "run.progress=false", *REWARD]


def load_config(overrides: list[str]):
    from rl.config import loader

    return loader.load(ROOT / "configs" / "tiny_cpu.yaml", overrides)


def warm_start(base: Path, out: Path, size: dict, lr: float = 3e-3) -> dict:
    """Supervised steps on demonstrations of every mode through the learner (advantage 1), exported to `out`.
    Returns the mean token NLL of a fixed batch of demonstrations before and after, and the seconds taken."""
    from tqdm.auto import tqdm

    from model.processor import Processor
    from rl.checkpointing import export_checkpoint
    from rl.learner import make_learner
    from rl.learner.base import TrainSample

    start = time.perf_counter()
    cfg = load_config([f"model.path={base}", "learner.lora=false", f"learner.lr={lr}",
                       "learner.micro_batch_tokens=8192"])
    learner = make_learner(cfg, base)
    processor = Processor.from_pretrained(base)
    tok = processor.tokenizer
    rng = random.Random(SEED + 1)  # apart from the rows' seeds

    def sample() -> TrainSample:
        mode, difficulty = rng.choice(MODES), rng.choice(("easy", "hard"))
        digits = task.digits_of(rng, difficulty)
        text = task.demonstration(digits, mode, think=rng.random() < 0.5)
        prompt = processor([{"role": "user", "content": task.question(digits)}], mode=mode)
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return TrainSample(prompt, ids, 1.0, None, mode)

    fixed = [sample() for _ in range(64)]

    def nll() -> float:
        logprobs = learner.logprobs(fixed)
        return -float(sum(lp.sum() for lp in logprobs) / sum(len(lp) for lp in logprobs))

    try:
        before = nll()
        for _ in tqdm(range(size["warm_steps"]), desc="warm start", disable=not sys.stderr.isatty()):
            learner.step([sample() for _ in range(size["warm_batch"])])
        after = nll()
        export_checkpoint(learner, base, out)
    finally:
        learner.close()
    return {"nll_before": round(before, 4), "nll_after": round(after, 4),
            "seconds": round(time.perf_counter() - start, 1)}


def by_difficulty(records: list[dict], key: str) -> dict[str, float | None]:
    """The mean of `key` over scored records, per difficulty and over all."""
    out = {}
    for name in ("easy", "hard", "all"):
        values = [float(r[key]) for r in records if r["error"] is None and r[key] is not None
                  and (name == "all" or task.difficulty_of(r["row_id"]) == name)]
        out[name] = sum(values) / len(values) if values else None
    return out


def summary(records: list[dict]) -> dict:
    per_mode = {m: [r for r in records if r["mode"] == m] for m in MODES}
    think = by_difficulty(per_mode["auto"], "thinks")
    return {"accuracy": {m: by_difficulty(rs, "correct") for m, rs in per_mode.items()},
            "tokens": {m: by_difficulty(rs, "tokens") for m, rs in per_mode.items()},
            "think_rate": {"easy": think["easy"], "hard": think["hard"]},
            "eval_samples": {m: len(rs) for m, rs in per_mode.items()}}


def read_eval(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SharedPool:
    """The bench's one engine, lent to each arm's trainer: the trainer's shutdown leaves it running."""

    def __init__(self, pool):
        self._pool = pool

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def shutdown(self, timeout: float = 60.0) -> None:
        pass


def run_arm(name: str, base: list[str], folder: Path, pool, warm_eval: bool = False) -> dict | list[dict]:
    """One arm's run in `folder`, on the shared engine, and its evaluation's summary (with `warm_eval`: the
    records of the warm start's evaluation alone, no step)."""
    from rl.trainer import Trainer

    cfg = load_config(base + ARMS.get(name, []) + [f"run.dir={folder}"])
    shutil.rmtree(folder, ignore_errors=True)  # eval.jsonl is appended to: nothing of an earlier run may remain
    start = time.perf_counter()
    trainer = Trainer(cfg, pool=SharedPool(pool))
    trainer.sync()  # the warm-start weights into the engine, which holds the previous arm's
    if warm_eval:  # the reference row: the warm start, evaluated as the arms are; its records
        trainer.evaluate()
        trainer.close()
        return read_eval(trainer.dir / "eval.jsonl")
    history = trainer.fit()
    out = summary([r for r in read_eval(trainer.dir / "eval.jsonl") if r["step"] == cfg.run.steps])
    out.update(train_tokens=int(history[-1]["tokens/total"]), seconds=time.perf_counter() - start,
               reward_first=history[0].get("reward/mean"), reward_last=history[-1].get("reward/mean"),
               long_share=sum(h.get("mode/long_share", 0.0) for h in history) / len(history))
    return out


def checks(arms: dict) -> dict:
    """The issue's four claims, measured: each with its numbers and whether it held."""
    def acc(arm, mode, part="all"):
        return arms[arm]["accuracy"][mode][part]

    def gap(a, b):
        return None if a is None or b is None else round(a - b, 4)

    def tokens(arm):
        return arms[arm]["train_tokens"] / max(arms["long_only"]["train_tokens"], 1)

    valid = gap(acc("long_only", "long", "hard"), acc("short_only", "short", "hard"))
    h_long, h_short = gap(acc("hybrid_50", "long"), acc("long_only", "long")), \
        gap(acc("hybrid_50", "short"), acc("short_only", "short"))
    b_long = gap(acc("benefit", "long"), acc("long_only", "long"))
    think = arms["auto"]["think_rate"]
    return {
        "task_valid": {"long_only_long_minus_short_only_short_hard": valid,
                       "held": valid is not None and valid >= 0.15},
        "hybrid_50": {"long_minus_long_only": h_long, "short_minus_short_only": h_short,
                      "tokens_over_long_only": round(tokens("hybrid_50"), 4),
                      "held": None not in (h_long, h_short) and h_long >= -0.02 and h_short >= -0.02
                      and tokens("hybrid_50") <= 0.75},
        "benefit": {"long_minus_long_only": b_long, "tokens_over_long_only": round(tokens("benefit"), 4),
                    "held": b_long is not None and b_long >= -0.02 and tokens("benefit") <= 0.5},
        "auto": {"think_rate_hard": think["hard"], "think_rate_easy": think["easy"],
                 "held": None not in think.values() and think["hard"] >= 0.8 and think["easy"] <= 0.2},
    }


def plot(result: dict, out: Path) -> Path:
    """Accuracy against training tokens, one panel per mode, a colour per arm (o: hard prompts, s: easy ones)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.4))
    axes = fig.subplots(1, len(MODES))
    arms = result["arms"]
    colors = {name: f"C{i}" for i, name in enumerate(arms)}
    for ax, mode in zip(axes, MODES):
        for name, arm in arms.items():
            x = arm["train_tokens"] / 1000
            for part, marker in (("hard", "o"), ("easy", "s")):
                y = arm["accuracy"][mode][part]
                if y is not None:
                    ax.scatter(x, y, marker=marker, color=colors[name],
                               label=name if mode == MODES[0] and part == "hard" else None)
        ax.set_title(f"{mode} mode")
        ax.set_xlabel("completion tokens generated for training (thousands)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (o hard, s easy)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Hybrid table in miniature (bench/hybrid_table.py)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def run(work: Path, quick: bool = False, arms: list[str] | None = None, **overrides) -> dict:
    """The bench; `overrides` replace entries of `sizes(quick)` (warm_steps, steps, ...)."""
    from model.tiny import build_tiny_checkpoint
    from rollouts.local import LocalPool
    from rollouts.vllm.worker import RolloutWorker

    size = {**sizes(quick), **{k: v for k, v in overrides.items() if v is not None}}
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    base_ckpt = build_tiny_checkpoint(work / "tiny-model", seed=SEED)
    warm = work / "warm-start"
    warm_info = warm_start(base_ckpt, warm, size)
    data = task.write_rows(work / "data" / "train.jsonl", TRAIN_ROWS if not quick else 64, SEED)
    base = base_overrides(size, data, warm)
    cfg = load_config(base)
    engine = RolloutWorker(str(warm), mode_sampling=cfg.rollout.sampling(), seed=SEED, dtype="float32",
                           max_model_len=cfg.rollout.max_model_len)
    pool = LocalPool(engine)
    try:
        warm_records = run_arm("warm_start", base, work / "arms" / "warm_start", pool, warm_eval=True)
        results = {}
        for name in arms or list(ARMS):
            results[name] = run_arm(name, base, work / "arms" / name, pool)
            print(f"{name}: {json.dumps(results[name]['accuracy'])} tokens {results[name]['train_tokens']}",
                  file=sys.stderr, flush=True)
        # every arm starts from the warm start's weights on the shared engine: evaluated again after the arms
        # (same weights, same seeds), it must give the very same completions
        again = run_arm("warm_start", base, work / "arms" / "warm_start_again", pool, warm_eval=True)
    finally:
        engine.shutdown()
    warm_info.update(summary(warm_records))
    result = {"task": {"easy_k": task.EASY_K, "hard_k": task.HARD_K, "token_cost": task.TOKEN_COST,
                       "seed": SEED},
              "sizes": size, "arms": results, "warm_start": warm_info,
              "engine_reset_exact": [r["text"] for r in again] == [r["text"] for r in warm_records],
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, cpu",
              "seconds": round(time.perf_counter() - started, 1)}
    if set(ARMS) <= set(results):
        result["checks"] = checks(results)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--plot", type=Path, help="the plot (default: beside --json, .png)")
    parser.add_argument("--work", type=Path, default=Path("runs/hybrid_table"), help="run folders, checkpoints")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (the test suite's run)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--warm-steps", type=int, help="supervised steps of the warm start (default: sizes())")
    parser.add_argument("--steps", type=int, help="RL steps per arm (default: sizes())")
    parser.add_argument("--lr", type=float, help="the arms' learning rate (default: sizes())")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: {', '.join(unknown)} not among {', '.join(ARMS)}")
    result = run(args.work, args.quick, arms, warm_steps=args.warm_steps, steps=args.steps,
                 lr=args.lr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    target = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if target:
        plot(result, target)


if __name__ == "__main__":
    main()
