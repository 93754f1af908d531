"""Vision once per group: samples that share their prompt object (a group's n completions) share one copy of its
pixels in a collated batch, encoded once, and the model computes exactly what it computes from n copies."""

import copy

import pytest
import torch

from model import MiniCPMV
from model.processor import collate, shared_vision, visual_tokens
from tests.model.test_modeling import prompts

COMPLETIONS = [[40, 41, 42, 7, 8], [50, 51, 2], [60, 61, 62, 63], [70, 2], [9, 9, 9], [11, 12]]


def group(processor):
    """An image prompt shared by three samples, a video prompt by two, and a text prompt."""
    image, text, video, _ = prompts(processor)
    return [image, image, video, text, image, video]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_a_shared_prompt_is_encoded_once_and_gives_the_copies_log_probs_and_gradients(processor, tiny_ckpt, packed):
    model = MiniCPMV.from_pretrained(tiny_ckpt)
    shared = group(processor)
    copies = [copy.copy(p) for p in shared]  # distinct objects, equal contents: no sharing
    image, video = shared[0], shared[2]
    a = collate(shared, COMPLETIONS, 0, packed=packed)
    b = collate(copies, COMPLETIONS, 0, packed=packed)
    assert len(a["pixel_values"]) == len(image.pixel_values) + len(video.pixel_values)  # each prompt's pixels once
    assert len(b["pixel_values"]) == 3 * len(image.pixel_values) + 2 * len(video.pixel_values)
    assert b["vision_index"] is None and a["vision_index"].numel() == 3 * visual_tokens(image) + 2 * visual_tokens(
        video)
    outs, grads = [], []
    for batch in (a, b):
        model.zero_grad()
        out = model(**batch).logprobs
        out.sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    assert grads[0]["vpm.embeddings.patch_embedding.weight"].abs().sum() > 0
    for name, g in grads[0].items():  # the vision tower's and resampler's gradients summed over the sharing samples
        scale = float(grads[1][name].abs().max())  # (in another order: fp32 rounding, relative to the largest entry)
        torch.testing.assert_close(g, grads[1][name], rtol=0, atol=1e-5 * max(1.0, scale), msg=name)


def test_a_video_group_holds_its_frames_once(processor):
    video = prompts(processor)[2]
    distinct, index = shared_vision([video] * 8)
    assert distinct == [video] and index.numel() == 8 * visual_tokens(video)
    batch = collate([video] * 8, [[5, 6]] * 8, 0, packed=True)
    assert len(batch["pixel_values"]) == len(video.pixel_values) and batch["temporal_ids"] == video.temporal_ids
    assert all(batch["pixel_values"][k] is video.pixel_values[k] for k in range(len(video.pixel_values)))
