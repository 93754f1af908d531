"""`rl-doctor CKPT_DIR [--json]`: do vLLM and `model/` compute the same function of the same weights?

Samples completions for text, image and video prompts in short and long mode with vLLM (the engine the rollout
workers run for video: this project's class, `make_llm(video=True)`, which changes only the video path), recomputes
their log-probabilities with `model.MiniCPMV`, and reports the agreement, and whether both sides built the same
prompt token ids. Run it on a real checkpoint after upgrading vLLM: an RL update on mismatched log-probabilities
is silently wrong (vLLM's MiniCPM-V resampler has had such bugs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from core.modes import FIXED_MODES
from model.modeling import MiniCPMV
from model.processor import Processor, Video, collate, to_device
from model.synthetic import shapes_image

from .engine import engine_prompt, make_llm

QUESTIONS = ["How many circles are in the picture?", "What color are the shapes?", "Count the red circles.",
             "Describe the image in one word."]
TEXT_QUESTIONS = ["What is 17 + 25?", "Name a prime number larger than 10.", "Is 91 a prime number?"]
# Sizes chosen to cover no slicing, a 2-slice grid and a 3x2 grid (the LLaVA-UHD paths).
IMAGE_SIZES = [(224, 224), (700, 400), (1100, 800)]
# Video frame counts, frames per package, and an image in the same prompt: one frame, packages of 3 with a short last
# one, no packing, and an image beside a video.
VIDEOS = [(1, 3, False), (7, 3, False), (6, 1, False), (7, 3, True)]


def doctor_prompts() -> list[list[dict]]:
    prompts = []
    for i, size in enumerate(IMAGE_SIZES):
        image = shapes_image(3 + i, size=size, seed=i)
        prompts.append([{"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]}])
    prompts += [[{"role": "user", "content": q}] for q in TEXT_QUESTIONS]
    for frames, packing, image in VIDEOS:
        video = Video([shapes_image(k % 4 + 1, (224, 224), seed=k) for k in range(frames)],
                      [0.3 * k for k in range(frames)], packing)
        still = [{"type": "image", "image": shapes_image(2, (700, 400), seed=frames)}] if image else []
        prompts.append([{"role": "user", "content": still + [{"type": "video", "video": video},
                                                             {"type": "text", "text": "Which shape moves?"}]}])
    return prompts


def run(ckpt: str, dtype: str = "float32", max_tokens: int = 32, n: int = 2, seed: int = 0,
        temperature: float = 1.0, top_k: int = 0, device: str | None = None) -> dict:
    from vllm import SamplingParams

    start = time.perf_counter()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = Processor.from_pretrained(ckpt)
    llm = make_llm(ckpt, dtype=dtype, seed=seed, video=True)
    model = MiniCPMV.from_pretrained(ckpt, dtype=torch_dtype, device=device).eval()
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_k=top_k, logprobs=0, seed=seed)
    diffs, prompt_mismatch, n_image_prompts, n_video_prompts, modes = [], [], 0, 0, list(FIXED_MODES)
    video_diffs = []
    for mode in modes:
        inputs = [processor(messages, mode) for messages in doctor_prompts()]
        n_image_prompts += sum(bool(p.images) and not p.videos for p in inputs)
        n_video_prompts += sum(bool(p.videos) for p in inputs)
        requests = [engine_prompt(p) for p in inputs]
        outputs = llm.generate(requests, params, use_tqdm=False)
        for p, out in zip(inputs, outputs):
            if list(out.prompt_token_ids) != p.input_ids:
                prompt_mismatch.append({"mode": mode, "prompt": p.text[:80]})
            for sample in out.outputs:
                tokens = list(sample.token_ids)
                if not tokens:
                    continue
                vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(sample.logprobs, tokens)])
                batch = collate([p], [tokens], pad_id=processor.tokenizer.pad_token_id)
                batch = to_device(batch, device)
                with torch.no_grad():
                    ours = model(**batch, temperature=temperature, top_k=top_k).logprobs[batch["target_mask"]].cpu()
                diffs.append((ours - vllm_lp).abs())
                if p.videos:
                    video_diffs.append(diffs[-1])
    diff = torch.cat(diffs) if diffs else torch.zeros(0)
    video_diff = torch.cat(video_diffs) if video_diffs else torch.zeros(0)
    import vllm

    return {
        "checkpoint": str(Path(ckpt).resolve()),
        "max_abs_logprob_diff": float(diff.max()) if diff.numel() else None,
        "mean_abs_logprob_diff": float(diff.mean()) if diff.numel() else None,
        "n_tokens": int(diff.numel()),
        "n_image_prompts": n_image_prompts,
        "n_video_prompts": n_video_prompts,
        "max_abs_logprob_diff_video": float(video_diff.max()) if video_diff.numel() else None,
        "n_text_prompts": len(modes) * len(TEXT_QUESTIONS),
        "modes": modes,
        "prompt_ids_match": not prompt_mismatch,
        "prompt_mismatches": prompt_mismatch,
        "dtype": dtype,
        "temperature": temperature,
        "top_k": top_k,
        "device": device,
        "vllm_version": vllm.__version__,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl-doctor", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--n", type=int, default=2, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sample and score at this temperature (the engine's processed log-probs)")
    parser.add_argument("--top-k", type=int, default=0, help="and this top-k (0: off)")
    parser.add_argument("--tol", type=float, default=None,
                        help="fail (exit 1) above this max abs diff (default 1e-4 in fp32, 0.1 otherwise)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    from model.checkpoint import CheckpointError, verify_checkpoint

    try:
        verify_checkpoint(args.ckpt_dir)  # a corrupt directory is named here, not 85 lines into vLLM's start-up
        report = run(args.ckpt_dir, args.dtype, args.max_tokens, args.n, args.seed, args.temperature, args.top_k)
    except (CheckpointError, OSError) as e:
        if args.debug:
            raise
        print(f"rl-doctor: error: {e}", file=sys.stderr)
        return 2
    tol = args.tol if args.tol is not None else (1e-4 if args.dtype == "float32" else 0.1)
    ok = report["prompt_ids_match"] and report["max_abs_logprob_diff"] is not None and \
        report["max_abs_logprob_diff"] <= tol
    report["tolerance"], report["ok"] = tol, ok
    if args.json:
        print(json.dumps(report))
    else:
        print(f"checkpoint {report['checkpoint']} ({args.dtype}, vLLM {report['vllm_version']})")
        print(f"  prompt token ids identical: {report['prompt_ids_match']}")
        print(f"  {report['n_tokens']} sampled tokens, {report['n_image_prompts']} image prompts, "
              f"{report['n_video_prompts']} video prompts, modes {report['modes']}")
        print(f"  |logprob(vLLM) - logprob(model/)|: max {report['max_abs_logprob_diff']:.3g}, "
              f"mean {report['mean_abs_logprob_diff']:.3g} (tolerance {tol:g})")
        print("  OK" if ok else "  MISMATCH: rollouts and the learner compute different functions")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
