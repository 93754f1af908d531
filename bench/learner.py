"""Learner throughput with packing vs padding on the hybrid length mix.

    python bench/learner.py --ckpt DIR --json OUT.json [--samples 16] [--budget 4096] [--padded-batch 4]

Three layouts: packed rows (`packing`), padded micro-batches of `--padded-batch` sequences in arrival order (the
naive baseline), and length-sorted padded micro-batches of at most `--budget` tokens (`sort_by_length`).
Half the samples are short-mode answers of 16-64 tokens, half long-mode traces of 512-2048 tokens, in a shuffled
order (as a hybrid batch arrives). One learner step each way (after a warm-up step), same samples, same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.processor import Processor  # noqa: E402
from rl.config import LearnerConfig  # noqa: E402
from rl.learner import LocalLearner, TrainSample  # noqa: E402


def hybrid_samples(processor: Processor, count: int, vocab: int, seed: int = 0) -> list[TrainSample]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        mode = "long" if i % 2 else "short"
        length = rng.randint(512, 2048) if mode == "long" else rng.randint(16, 64)
        prompt = processor([{"role": "user", "content": f"Question {i}: what is {i} + {i * 3}?"}], mode)
        completion = [rng.randrange(10, vocab) for _ in range(length)]
        out.append(TrainSample(prompt, completion, rng.uniform(-1, 1), None, mode))
    rng.shuffle(out)
    return out


def timed_step(learner: LocalLearner, samples: list[TrainSample]) -> dict:
    learner.step(samples[:2])  # warm-up
    start = time.perf_counter()
    metrics = learner.step(samples)
    metrics["wall_s"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--budget", type=int, default=2048, help="packed micro-batch token budget")
    parser.add_argument("--padded-batch", type=int, default=4, help="sequences per padded micro-batch")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    processor = Processor.from_pretrained(args.ckpt)
    samples = hybrid_samples(processor, args.samples, len(processor.tokenizer))
    tokens = sum(len(s.prompt.input_ids) + len(s.completion_ids) for s in samples)
    results = {}
    for name, cfg in (("packed", LearnerConfig(lora=args.lora, micro_batch_tokens=args.budget, packing=True)),
                      ("padded", LearnerConfig(lora=args.lora, packing=False, sort_by_length=False,
                                               padded_batch_size=args.padded_batch)),
                      ("sorted", LearnerConfig(lora=args.lora, packing=False, micro_batch_tokens=args.budget))):
        cfg.entropy_metric = False
        torch.manual_seed(0)
        results[name] = timed_step(LocalLearner(args.ckpt, cfg), samples)
    report = {
        "tokens_per_s_packed": tokens / results["packed"]["wall_s"],
        "tokens_per_s_padded": tokens / results["padded"]["wall_s"],
        "packed_over_padded": results["padded"]["wall_s"] / results["packed"]["wall_s"],
        "padding_fraction_packed": results["packed"]["padding_fraction"],
        "padding_fraction_padded": results["padded"]["padding_fraction"],
        "tokens_per_s_sorted": tokens / results["sorted"]["wall_s"],
        "padding_fraction_sorted": results["sorted"]["padding_fraction"],
        "micro_batches_packed": results["packed"]["micro_batches"],
        "micro_batches_padded": results["padded"]["micro_batches"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "tokens": tokens, "samples": args.samples, "budget": args.budget, "padded_batch": args.padded_batch,
        "lora": args.lora,
        "model_params": sum(p.numel() for p in LocalLearner.base_model(LocalLearner(args.ckpt, LearnerConfig())
                                                                  .model).parameters()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
