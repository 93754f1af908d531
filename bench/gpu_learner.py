"""The learner on a lent GPU, in one call (torch, transformers and PEFT only: no vLLM, no Ray). Prints JSON.

    python bench/gpu_learner.py --workdir /tmp/gpu --layers 36 --json OUT.json     # the full 8.7B shapes
    python bench/gpu_learner.py --workdir /tmp/cpu --tiny                            # a CPU smoke run of the same code

1. `learner`: one LoRA step (r 64, gradient checkpointing: `configs/minicpm-v-4_5_lora_1gpu.yaml`) on the release's
   shapes (random weights, `configs/model/minicpm-v-4_5.json` with `--layers` decoder layers, written once as a bf16
   checkpoint in `--workdir`) over text samples of the hybrid length mix, packed into micro-batches of each
   `--budgets` token count: peak GPU memory (`torch.cuda.max_memory_allocated`), tokens/s and MFU (model FLOPs of
   the step, 4 x params x tokens for LoRA (forward + the backward's input gradients) or 6 x for full weights, plus
   attention's, over the step's time and `--peak-tflops`, the card's dense bf16 peak: H100/H200 989).
2. `attention`: the same step with `learner.attention` varlen (torch's `varlen_attn` on CUDA) and sdpa (a dense
   T x T block-diagonal mask) at the largest budget.
3. `sharded`: the sharded learner's code path at world size 1 (NCCL on a GPU, gloo on the CPU), full weights:
   start-up peak memory (sharded loading) against its state's arithmetic, the step's time against the local
   learner's, and the dtype of the temperature and top-p the log-prob head sees under the bf16 policy.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model import MiniCPMV, MiniCPMVConfig  # noqa: E402
from model.checkpoint import load_config  # noqa: E402
from model.processor import PromptInputs  # noqa: E402
from rl.config import AlgoConfig, LearnerConfig  # noqa: E402
from rl.learner import LocalLearner, TrainSample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "configs" / "model" / "minicpm-v-4_5.json"


def checkpoint(workdir: Path, layers: int, tiny: bool) -> Path:
    """A random bf16 checkpoint of the release's shapes with `layers` decoder layers (the tiny one with --tiny)."""
    out = workdir / ("tiny" if tiny else f"release-{layers}-layers")
    if (out / "config.json").is_file():
        return out
    if tiny:
        from model.tiny import build_tiny_checkpoint

        return build_tiny_checkpoint(out, dtype=torch.bfloat16)
    config = MiniCPMVConfig.from_json_file(str(RELEASE))
    config.num_hidden_layers = layers
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("meta"):
        model = MiniCPMV(config)
    model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model._rebuild_buffers()
    model.to(torch.bfloat16)
    config.dtype = "bfloat16"
    model.save_pretrained(out)
    return out


def samples(count: int, vocab: int, seed: int = 0) -> list[TrainSample]:
    """The hybrid mix: half short answers (16-64 tokens), half long traces (512-4096), 64-token prompts."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        long = i % 2 == 1
        prompt = PromptInputs(text="", input_ids=[rng.randrange(10, vocab) for _ in range(64)])
        n = rng.randint(512, 4096) if long else rng.randint(16, 64)
        out.append(TrainSample(prompt, [rng.randrange(10, vocab) for _ in range(n)], rng.uniform(-1, 1)))
    return out


def step_figures(learner: LocalLearner, batch: list[TrainSample], full: bool, peak_tflops: float) -> dict:
    cuda = learner.device.type == "cuda"
    learner.step(batch[:2])  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = learner.step(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cfg = learner.base_config
    params = sum(p.numel() for n, p in learner.model.named_parameters() if ".lora_" not in n)
    lengths = [len(s.prompt.input_ids) + len(s.completion_ids) for s in batch]
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * sum(n * n for n in lengths) / 2  # causal QK^T + AV
    flops = (6 if full else 4) * params * sum(lengths) + (3 if full else 2) * attention
    return {"tokens": sum(lengths), "seconds": seconds, "tokens_per_s": sum(lengths) / seconds,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
            "mfu": flops / seconds / (peak_tflops * 1e12) if cuda else None,
            "micro_batches": metrics["micro_batches"], "padding_fraction": metrics["padding_fraction"]}


def learner_runs(ckpt: Path, budgets: list[int], count: int, peak_tflops: float, device: str) -> dict:
    vocab = load_config(ckpt).vocab_size
    batch = samples(count, vocab)
    out = {"budgets": {}, "attention": {}}
    for budget in budgets:
        cfg = LearnerConfig(lora=True, lora_rank=64, lora_alpha=128, lr=1e-5, gradient_checkpointing=True,
                            micro_batch_tokens=budget, entropy_metric=False)
        out["budgets"][str(budget)] = step_figures(LocalLearner(ckpt, cfg, device=device), batch, False, peak_tflops)
    for attention in ("varlen", "sdpa"):
        cfg = LearnerConfig(lora=True, lora_rank=64, lora_alpha=128, gradient_checkpointing=True,
                            micro_batch_tokens=max(budgets), attention=attention, entropy_metric=False)
        out["attention"][attention] = step_figures(LocalLearner(ckpt, cfg, device=device), batch, False,
                                                   peak_tflops)
    return out


def sharded_run(ckpt: Path, count: int, peak_tflops: float, device: str) -> dict:
    """World size 1 through the sharded learner's code (FSDP2, sharded loading, the bf16 policy)."""
    import torch.distributed as dist

    import model.modeling as modeling

    cuda = device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{tempfile.mkdtemp()}/store", rank=0,
                            world_size=1)
    seen = set()
    head = modeling.token_logprobs

    def spy(hidden, lm_head, targets, temperature=1.0, top_k=None, top_p=None, **kw):
        seen.update({str(getattr(temperature, "dtype", type(temperature))), str(getattr(top_p, "dtype", None))})
        return head(hidden, lm_head, targets, temperature, top_k, top_p, **kw)

    modeling.token_logprobs = spy
    cfg = LearnerConfig(lora=False, gradient_checkpointing=True, micro_batch_tokens=8192, entropy_metric=False,
                        cpu_bf16=not cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    learner = LocalLearner(ckpt, cfg, AlgoConfig(), device=device, sharded=True)
    startup = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    state = sum(p.numel() * p.element_size() for p in learner.model.parameters()) / 1e9
    batch = [TrainSample(s.prompt, s.completion_ids, s.advantage, None, "long", 0.7, 0, 0.99)
             for s in samples(count, load_config(ckpt).vocab_size)]
    figures = step_figures(learner, batch, True, peak_tflops)
    dist.destroy_process_group()
    modeling.token_logprobs = head
    return {"startup_peak_gb": startup, "state_gb": state, "step": figures, "head_sampling_dtypes": sorted(seen)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/gpu-learner")
    parser.add_argument("--layers", type=int, default=36, help="decoder layers of the release's shapes (36: 8.7B)")
    parser.add_argument("--budgets", default="4096,8192,16384")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint (a CPU smoke run)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: learner, sharded")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = checkpoint(Path(args.workdir), args.layers, args.tiny)
    result = {"machine": {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
                          "torch": torch.__version__}, "checkpoint": str(ckpt), "layers": None if args.tiny else args.layers}
    skip = set(filter(None, args.skip.split(",")))
    budgets = [int(b) for b in args.budgets.split(",")]
    if "learner" not in skip:
        result["learner"] = learner_runs(ckpt, budgets, args.samples, args.peak_tflops, device)
    if "sharded" not in skip:
        result["sharded"] = sharded_run(ckpt, args.samples, args.peak_tflops, device)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
