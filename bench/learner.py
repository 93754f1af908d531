"""Learner throughput with packing vs padding on the hybrid length mix, and the log-prob head's peak memory.

    python bench/learner.py --ckpt DIR --json OUT.json [--samples 16] [--budget 4096] [--padded-batch 4]
                            [--attention auto|sdpa|varlen] [--layouts packed,padded,sorted] [--no-head]
                            [--repeats 1]
    python bench/learner.py --ckpt DIR --json OUT.json --sweep 2048,4096,8192 [--attention auto,sdpa] [--repeats 5]
    python bench/learner.py --head-only --json OUT.json [--head-tokens 4096] [--head-chunk 1024]

Three layouts: packed rows (`packing`), padded micro-batches of `--padded-batch` sequences in arrival order (the
naive baseline), and length-sorted padded micro-batches of at most `--budget` tokens (`sort_by_length`); `--layouts`
picks some. `--attention`: the LLM's attention (`learner.attention`; auto = varlen: no T x T mask for a packed row).
`--sweep BUDGETS`: packed rows only, one learner per (attention, budget) in one process, their timed steps taken in
turn, `--repeats` rounds (on a shared machine the load then falls on every variant alike); fastest and median.
Half the samples are short-mode answers of 16-64 tokens, half long-mode traces of 512-2048 tokens, in a shuffled
order (as a hybrid batch arrives). One learner step each way (after a warm-up step), same samples, same weights.

The log-prob head (`model.logprob_head`, `logprob_head` in the JSON): forward + backward of the head alone over
`--head-tokens` scored tokens with the release's vocabulary (151,748; hidden width `--head-hidden`, small: the
[tokens x vocab] fp32 tensors do not depend on it), unchunked (all tokens at once, autograd), chunked
(`ChunkedLogProbs`, `--head-chunk` tokens) and `torch.utils.checkpoint` per chunk, each in a fresh process: peak RSS
above the process's RSS before the head (VmHWM, reset just before: not ru_maxrss, which Linux carries across exec
from the parent's own peak), in GB and in GB per 1k scored tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
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


def timed_step(learner: LocalLearner, samples: list[TrainSample], repeats: int = 1) -> dict:
    """One warm-up step, then the fastest of `repeats` timed steps (a shared machine's noise only slows a step)."""
    learner.step(samples[:2])  # warm-up
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = learner.step(samples)
        metrics["wall_s"] = time.perf_counter() - start
        best = metrics if best is None or metrics["wall_s"] < best["wall_s"] else best
    return best


def packed_sweep(ckpt: str, samples: list[TrainSample], budgets: list[int], attentions: list[str], repeats: int,
                 lora: bool) -> dict:
    """Packed-row throughput per (attention, budget): warm-up, then `repeats` rounds of one timed step each."""
    tokens = sum(len(s.prompt.input_ids) + len(s.completion_ids) for s in samples)
    learners, walls, micro = {}, {}, {}
    for attention in attentions:
        for budget in budgets:
            cfg = LearnerConfig(lora=lora, micro_batch_tokens=budget, packing=True, attention=attention)
            cfg.entropy_metric = False
            torch.manual_seed(0)
            learners[attention, budget] = learner = LocalLearner(ckpt, cfg)
            learner.step(samples[:2])  # warm-up
            walls[attention, budget] = []
    for _ in range(repeats):
        for key, learner in learners.items():
            start = time.perf_counter()
            micro[key] = learner.step(samples)["micro_batches"]
            walls[key].append(time.perf_counter() - start)
    out = {"tokens": tokens, "repeats": repeats, "rows": []}
    for (attention, budget), w in walls.items():
        w = sorted(w)
        out["rows"].append({"attention": attention, "budget": budget, "micro_batches": micro[attention, budget],
                            "tokens_per_s_best": tokens / w[0], "tokens_per_s_median": tokens / w[len(w) // 2],
                            "wall_s": w})
    for attention in attentions:
        best = {r["budget"]: r["tokens_per_s_best"] for r in out["rows"] if r["attention"] == attention}
        med = {r["budget"]: r["tokens_per_s_median"] for r in out["rows"] if r["attention"] == attention}
        lo = min(budgets)
        for b in budgets:
            if b != lo:
                out[f"{attention}_{b}_over_{lo}_best"] = best[b] / best[lo]
                out[f"{attention}_{b}_over_{lo}_median"] = med[b] / med[lo]
    return out


RELEASE_VOCAB = 151748  # configs/model/minicpm-v-4_5.json
HEAD_VARIANTS = ("unchunked", "chunked", "checkpoint")


def head_peak_here(variant: str, tokens: int, chunk: int, hidden: int, sampling: bool) -> dict:
    """Forward + backward of the log-prob head in this process (run it in a fresh one): bytes above the RSS before."""
    from torch.utils.checkpoint import checkpoint

    from model.logprob_head import token_logprobs

    def rss(field: str) -> int:
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, RELEASE_VOCAB, bias=False)
    h = torch.randn(tokens, hidden, requires_grad=True)
    targets = torch.randint(0, RELEASE_VOCAB, (tokens,))
    params = dict(temperature=torch.full((tokens,), 0.7), top_k=torch.full((tokens,), 50),
                  top_p=torch.full((tokens,), 0.9)) if sampling else {}

    def run(n: int) -> None:
        p = {k: v[:n] for k, v in params.items()}
        if variant == "unchunked":
            lp = token_logprobs(h[:n], head, targets[:n], **p, entropy=True)[0]
        elif variant == "chunked":
            lp = token_logprobs(h[:n], head, targets[:n], **p, chunk_tokens=chunk, entropy=True)[0]
        else:  # checkpoint: the unchunked head per chunk, recomputed in the backward (entropy computed inside)
            parts, hn, tn = [], h[:n], targets[:n]
            for s in range(0, n, chunk):
                pc = {k: v[s:s + chunk] for k, v in p.items()}
                parts.append(checkpoint(lambda x, t, pc=pc: token_logprobs(x, head, t, **pc, entropy=True),
                                        hn[s:s + chunk], tn[s:s + chunk], use_reentrant=False)[0])
            lp = torch.cat(parts)
        lp.sum().backward()

    run(8)  # kernels and allocator warm
    head.zero_grad()
    h.grad = None
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) from here
    before = rss("VmRSS")
    start = time.perf_counter()
    run(tokens)
    seconds = time.perf_counter() - start
    peak = rss("VmHWM") - before
    return {"variant": variant, "peak_gb": peak / 1e9, "peak_gb_per_1k_tokens": peak / 1e9 / (tokens / 1000),
            "seconds": seconds}


def head_peaks(tokens: int, chunk: int, hidden: int) -> dict:
    """Each variant of the head in a fresh process (the peak RSS is the process's high-water mark)."""
    out = {"vocab": RELEASE_VOCAB, "hidden": hidden, "tokens": tokens, "chunk_tokens": chunk}
    runs = [(v, False) for v in HEAD_VARIANTS] + [(v, True) for v in HEAD_VARIANTS[1:]]  # unchunked + top-p: ~20 GB
    for variant, sampling in runs:
        cmd = [sys.executable, __file__, "--head-variant", variant, "--head-tokens", str(tokens), "--head-chunk",
               str(chunk), "--head-hidden", str(hidden)] + (["--head-sampling"] if sampling else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        key = variant + ("_top_k_top_p" if sampling else "")
        for k in ("peak_gb", "peak_gb_per_1k_tokens", "seconds"):
            out[f"{key}_{k}"] = result[k]
    out["unchunked_over_chunked_peak"] = out["unchunked_peak_gb"] / out["chunked_peak_gb"]
    return out


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt")
    parser.add_argument("--json")
    parser.add_argument("--head-only", action="store_true", help="only the log-prob head's peak memory")
    parser.add_argument("--head-tokens", type=int, default=4096, help="scored tokens through the log-prob head")
    parser.add_argument("--head-chunk", type=int, default=1024, help="chunked head: tokens per chunk")
    parser.add_argument("--head-hidden", type=int, default=64, help="hidden width of the head benchmark")
    parser.add_argument("--head-variant", choices=HEAD_VARIANTS, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--head-sampling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--budget", type=int, default=2048, help="packed micro-batch token budget")
    parser.add_argument("--padded-batch", type=int, default=4, help="sequences per padded micro-batch")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--attention", default="auto", help="learner.attention: auto, sdpa or varlen")
    parser.add_argument("--layouts", default="packed,padded,sorted", help="comma-separated: packed, padded, sorted")
    parser.add_argument("--no-head", action="store_true", help="skip the log-prob head's memory benchmark")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per layout; the fastest counts")
    parser.add_argument("--sweep", help="comma-separated packed budgets, timed in turn in one process (see above)")
    args = parser.parse_args()
    if args.head_variant:
        print(json.dumps(head_peak_here(args.head_variant, args.head_tokens, args.head_chunk, args.head_hidden,
                                        args.head_sampling)))
        return
    head = None if args.no_head or args.sweep else head_peaks(args.head_tokens, args.head_chunk, args.head_hidden)
    if args.head_only:
        report = {"logprob_head": head, "machine": machine()}
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        return
    if not args.ckpt or not args.json:
        parser.error("--ckpt and --json are required (unless --head-only)")
    processor = Processor.from_pretrained(args.ckpt)
    samples = hybrid_samples(processor, args.samples, len(processor.tokenizer))
    tokens = sum(len(s.prompt.input_ids) + len(s.completion_ids) for s in samples)
    if args.sweep:
        report = {"packed_sweep": packed_sweep(args.ckpt, samples, [int(b) for b in args.sweep.split(",")],
                                               args.attention.split(","), args.repeats, args.lora),
                  "samples": args.samples, "lora": args.lora, "machine": machine(),
                  "load_average_after": os.getloadavg()}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        return
    layouts = args.layouts.split(",")
    results = {}
    for name, cfg in (("packed", LearnerConfig(lora=args.lora, micro_batch_tokens=args.budget, packing=True)),
                      ("padded", LearnerConfig(lora=args.lora, packing=False, sort_by_length=False,
                                               padded_batch_size=args.padded_batch)),
                      ("sorted", LearnerConfig(lora=args.lora, packing=False, micro_batch_tokens=args.budget))):
        if name not in layouts:
            continue
        cfg.entropy_metric = False
        cfg.attention = args.attention
        torch.manual_seed(0)
        results[name] = timed_step(LocalLearner(args.ckpt, cfg), samples, args.repeats)
    report = {}
    for name, r in results.items():
        report[f"tokens_per_s_{name}"] = tokens / r["wall_s"]
        report[f"padding_fraction_{name}"] = r["padding_fraction"]
        report[f"micro_batches_{name}"] = r["micro_batches"]
    if {"packed", "padded"} <= results.keys():
        report["packed_over_padded"] = results["padded"]["wall_s"] / results["packed"]["wall_s"]
    report.update({
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "tokens": tokens, "samples": args.samples, "budget": args.budget, "padded_batch": args.padded_batch,
        "lora": args.lora, "attention": args.attention, "repeats": args.repeats,
        "model_params": sum(p.numel() for p in LocalLearner.base_model(LocalLearner(args.ckpt, LearnerConfig())
                                                                  .model).parameters()),
        "logprob_head": head,
        "machine": machine(),
    })
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
