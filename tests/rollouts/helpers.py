"""Helpers shared by the rollout tests."""

import torch

from model import MiniCPMV
from model.processor import Video, collate
from model.synthetic import shapes_image
from rollouts.types import RolloutRequest, SamplingConfig

SAMPLING = {"short": SamplingConfig(max_new_tokens=12), "long": SamplingConfig(max_new_tokens=24),
            "auto": SamplingConfig(max_new_tokens=16)}


def requests(k: int = 4, n: int = 2, prefix: str = "r") -> list[RolloutRequest]:
    """Alternating short/long, image and text prompts."""
    out = []
    for i in range(k):
        content = ([{"type": "image", "image": shapes_image(i % 4 + 1, (224 + 200 * (i % 3), 224), seed=i)},
                    {"type": "text", "text": "How many circles?"}] if i % 3 != 2 else f"What is {i} + {i}?")
        out.append(RolloutRequest(f"{prefix}{i}", [{"role": "user", "content": content}],
                                  mode="long" if i % 2 else "short", n=n))
    return out


def learner_diff(model: torch.nn.Module, results) -> torch.Tensor:
    """|sampling logprob - learner logprob| over every sampled token of every result."""
    diffs = []
    with torch.no_grad():
        for r in results:
            for s in r.samples:
                b = collate([r.prompt], [s.completion_token_ids], pad_id=0)
                ours = model(**b).logprobs[b["target_mask"]]
                diffs.append((ours - torch.tensor(s.logprobs)).abs())
    return torch.cat(diffs)


def perturbed(ckpt, seed: int, scale: float = 0.05) -> MiniCPMV:
    """The tiny model with noise on every weight: stands in for the learner after an update."""
    model = MiniCPMV.from_pretrained(ckpt).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * (p.std() if p.numel() > 1 else 1))
    return model


def video_requests(prefix: str, frames=(1, 6, 7, 13), packing: int = 3, image: bool = False,
                   start: float = 0.0) -> list[RolloutRequest]:
    """Per frame count, a video prompt (synthetic frames 0.3 s apart from `start` seconds, `packing` frames per
    package) in each fixed mode, seeded; `image`: an image (wide enough to be sliced on its own) before the video in
    the same prompt."""
    out = []
    for n in frames:
        video = Video([shapes_image(k % 4 + 1, (224, 224), seed=k) for k in range(n)],
                      [start + 0.3 * k for k in range(n)], packing)
        still = [{"type": "image", "image": shapes_image(3, (700, 400), seed=n)}] if image else []
        for mode in ("short", "long"):
            out.append(RolloutRequest(f"{prefix}{n}-{mode}", [{"role": "user", "content": still + [
                {"type": "video", "video": video}, {"type": "text", "text": "Which shape moves?"}]}],
                mode=mode, n=2, seed=10 * n))
    return out
