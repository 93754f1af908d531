"""Rollout throughput: the worker pool vs bare vLLM vs transformers' generate, on the same prompts and weights.

    python bench/rollout.py --ckpt DIR --json OUT.json [--prompts 8] [--n 8] [--max-tokens 64] [--workers 1]

Prompts: image + text questions, half short mode, half long mode, groups of n. All three paths sample the same
number of tokens per request (min_tokens = max_tokens, EOS ignored), so tokens/s compare like for like.
Hybrid length mix (`hybrid_*`): the same prompts with short mode at --hybrid-short (64) and long mode at
--hybrid-long (512) new tokens, long groups submitted first; the pool streams them, and the report gives when the
first group, the first short group and the last long group came back, against one bare vLLM generate call.
Weight sync: full weights (in-memory tensors through the object store) and a LoRA adapter, timed through the pool.
The first generate of each engine (a one-time warm-up) is excluded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import force_full_length  # noqa: E402
from core.modes import MODES  # noqa: E402
from model import MiniCPMV  # noqa: E402
from model.lora import LLM_LORA_TARGETS  # noqa: E402
from model.processor import Processor  # noqa: E402
from model.synthetic import shapes_image  # noqa: E402
from rollouts.vllm.engine import make_llm  # noqa: E402
from rollouts.types import RolloutRequest, SamplingConfig  # noqa: E402


def make_requests(k: int, n: int) -> list[RolloutRequest]:
    return [RolloutRequest(f"b{i}", [{"role": "user", "content": [
        {"type": "image", "image": shapes_image(i % 5 + 1, (224 + 100 * (i % 4), 224), seed=i)},
        {"type": "text", "text": "How many circles are there?"}]}], mode="long" if i % 2 else "short", n=n)
        for i in range(k)]


def vllm_params(n: int, max_tokens: int, seed: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(n=n, max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=1.0,
                          logprobs=0, seed=seed)


def bench_vllm(ckpt, prompts, n, max_tokens, dtype):
    llm = make_llm(ckpt, dtype=dtype, max_model_len=4096)
    reqs = [{"prompt": p.text, "multi_modal_data": {"image": p.images}} for p in prompts]
    llm.generate(reqs[:1], vllm_params(1, 4), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(reqs, vllm_params(n, max_tokens), use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    del llm
    gc.collect()
    return tokens / seconds, tokens, seconds


@torch.no_grad()
def bench_hf(ckpt, prompts, n, max_tokens, dtype):
    model = MiniCPMV.from_pretrained(ckpt, dtype=getattr(torch, dtype)).eval()
    embeds = [model.embed(torch.tensor([p.input_ids]), p.pixel_values, p.tgt_sizes, [p.image_bound], p.temporal_ids)[0]
              for p in prompts]
    width = max(e.shape[0] for e in embeds)
    batch = torch.zeros(len(embeds), width, embeds[0].shape[-1], dtype=embeds[0].dtype)
    mask = torch.zeros(len(embeds), width, dtype=torch.long)
    for i, e in enumerate(embeds):  # left padding, as generate expects
        batch[i, width - e.shape[0]:] = e
        mask[i, width - e.shape[0]:] = 1
    gen = dict(do_sample=True, temperature=1.0, top_k=0, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
               pad_token_id=0, num_return_sequences=n)
    model.llm.generate(inputs_embeds=batch[:1], attention_mask=mask[:1], **dict(gen, max_new_tokens=4,
                                                                                min_new_tokens=4))
    start = time.perf_counter()
    out = model.llm.generate(inputs_embeds=batch, attention_mask=mask, **gen)
    seconds = time.perf_counter() - start
    tokens = out.shape[0] * max_tokens
    del model
    gc.collect()
    return tokens / seconds, tokens, seconds


def hybrid_requests(requests: list[RolloutRequest], lengths: dict[str, int]) -> list[RolloutRequest]:
    """Copies with each mode's length, long ones first (submission order)."""
    out = [RolloutRequest(f"h-{r.request_id}", r.messages, r.mode, r.n,
                          SamplingConfig(max_new_tokens=lengths[r.mode])) for r in requests]
    return sorted(out, key=lambda r: r.mode != "long")


def hybrid_stream(pool, requests, lengths: dict[str, int]) -> dict:
    """Seconds from submission to the first group, the first short group and the last long group (pool.stream)."""
    arrivals = []
    start = time.perf_counter()
    for result in pool.stream(hybrid_requests(requests, lengths)):
        arrivals.append((time.perf_counter() - start, result.request.mode,
                         sum(len(s.completion_token_ids) for s in result.samples)))
    return {"first_group_s": arrivals[0][0], "first_short_s": min(t for t, m, _ in arrivals if m == "short"),
            "last_long_s": max(t for t, m, _ in arrivals if m == "long"), "total_s": arrivals[-1][0],
            "tokens": sum(k for _, _, k in arrivals)}


def bench_vllm_hybrid(ckpt, prompts, requests, lengths, dtype) -> tuple[float, int]:
    """One bare generate call on the hybrid mix: (seconds, tokens); nothing comes back before the end."""
    llm = make_llm(ckpt, dtype=dtype, max_model_len=4096)
    order = sorted(range(len(requests)), key=lambda i: requests[i].mode != "long")
    reqs = [{"prompt": prompts[i].text, "multi_modal_data": {"image": prompts[i].images}} for i in order]
    params = [vllm_params(requests[i].n, lengths[requests[i].mode]) for i in order]
    llm.generate(reqs[:1], vllm_params(1, 4), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(reqs, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    del llm
    gc.collect()
    return seconds, tokens


def bench_pool(ckpt, requests, n, max_tokens, dtype, workers, hybrid_tokens):
    import ray
    from peft import LoraConfig, get_peft_model

    from rollouts.pool import RolloutPool

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    sampling = {m: SamplingConfig(max_new_tokens=max_tokens) for m in MODES}
    options = dict(mode_sampling=sampling, dtype=dtype, max_model_len=4096, cpus_per_worker=os.cpu_count() / workers)
    pool = RolloutPool(ckpt, num_workers=workers, **options)
    ray.get([s.actor.__ray_call__.remote(force_full_length) for s in pool.slots])
    pool.generate(requests[:1])  # warm-up
    start = time.perf_counter()
    results = pool.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(len(s.completion_token_ids) for r in results for s in r.samples)
    hybrid = hybrid_stream(pool, requests, hybrid_tokens)
    model = MiniCPMV.from_pretrained(ckpt, dtype=getattr(torch, dtype))
    sync_full = {transport: min(pool.sync_weights(v, weights=model.state_dict().items(), transport=transport)
                                for v in (1, 2))
                 for transport in ("auto", "shm", "object_store")}
    pool.shutdown()
    # LoRA sync needs LoRA-enabled engines, which generate more slowly: a separate one-worker pool.
    pool = RolloutPool(ckpt, num_workers=1, enable_lora=True, max_lora_rank=16, **options)
    with tempfile.TemporaryDirectory() as tmp:
        peft_model = get_peft_model(model, LoraConfig(
            r=16, lora_alpha=32, target_modules=LLM_LORA_TARGETS))
        peft_model.save_pretrained(tmp)
        sync_lora = pool.sync_lora(2, tmp)
        start_first = time.perf_counter()
        pool.generate(requests[:1])  # vLLM reads the adapter on its first use
        lora_first = time.perf_counter() - start_first
        start_again = time.perf_counter()
        pool.generate(requests[:1])
        lora_load = lora_first - (time.perf_counter() - start_again)
    pool.shutdown()
    ray.shutdown()
    return tokens / seconds, tokens, seconds, sync_full, sync_lora, lora_load, hybrid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hybrid-short", type=int, default=64)
    parser.add_argument("--hybrid-long", type=int, default=512)
    args = parser.parse_args()
    processor = Processor.from_pretrained(args.ckpt)
    requests = make_requests(args.prompts, args.n)
    prompts = [processor(r.messages, r.mode) for r in requests]
    n_params = sum(p.numel() for p in MiniCPMV.from_pretrained(args.ckpt).parameters())

    tps_vllm, tok_vllm, s_vllm = bench_vllm(args.ckpt, prompts, args.n, args.max_tokens, args.dtype)
    tps_hf, tok_hf, s_hf = bench_hf(args.ckpt, prompts, args.n, args.max_tokens, args.dtype)
    lengths = {"short": args.hybrid_short, "long": args.hybrid_long, "auto": args.hybrid_long}
    s_vllm_hybrid, tok_vllm_hybrid = bench_vllm_hybrid(args.ckpt, prompts, requests, lengths, args.dtype)
    tps_pool, tok_pool, s_pool, sync_full, sync_lora, lora_load, hybrid = bench_pool(
        args.ckpt, requests, args.n, args.max_tokens, args.dtype, args.workers, lengths)
    report = {
        "tokens_per_s_pool": tps_pool, "tokens_per_s_vllm": tps_vllm, "tokens_per_s_hf": tps_hf,
        "pool_over_vllm": tps_pool / tps_vllm, "vllm_over_hf": tps_vllm / tps_hf,
        "sync_full_s": sync_full["auto"], "sync_full_s_shm": sync_full["shm"],
        "sync_full_s_object_store": sync_full["object_store"], "sync_lora_s": sync_lora,
        "generate_step_s_pool": s_pool, "sync_full_over_generate": sync_full["auto"] / s_pool, "lora_first_use_load_s": lora_load,
        "hybrid_first_group_s": hybrid["first_group_s"], "hybrid_first_short_s": hybrid["first_short_s"],
        "hybrid_last_long_s": hybrid["last_long_s"], "hybrid_total_s_pool": hybrid["total_s"],
        "hybrid_total_s_vllm": s_vllm_hybrid, "hybrid_tokens_per_s_pool": hybrid["tokens"] / hybrid["total_s"],
        "hybrid_tokens_per_s_vllm": tok_vllm_hybrid / s_vllm_hybrid, "hybrid_lengths": lengths,
        "tokens_pool": tok_pool, "tokens_vllm": tok_vllm, "tokens_hf": tok_hf,
        "generate_s_vllm": s_vllm, "generate_s_hf": s_hf,
        "model_params": n_params, "prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens,
        "prompt_tokens_mean": sum(len(p.input_ids) for p in prompts) / len(prompts), "workers": args.workers,
        "dtype": args.dtype, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
