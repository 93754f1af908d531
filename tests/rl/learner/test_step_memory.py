"""Memory that follows the work, not the group size: a step on a group of 8 samples sharing one 1344x1344 image (10
slices) holds the image's pixels and its encoding once per micro-batch, and micro-batches reach the device one at a
time. Measured as the peak of live tensor memory over the step (torch's profiler memory timeline), above what was
live when it started."""

import copy

import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import MemoryProfileTimeline

from model.synthetic import shapes_image
from rl.config import LearnerConfig
from rl.learner import LocalLearner, TrainSample

MB = 2**20


def step_peak_growth(learner, samples) -> float:
    """MB of tensor memory at the step's peak above its start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        learner.step(samples)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    return (max(sum(s) for s in sizes) - sum(sizes[0])) / MB


def test_a_group_sharing_one_large_image_costs_its_encoding_once(tiny_ckpt, processor):
    image = shapes_image(3, seed=0).resize((1344, 1344))
    prompt = processor([{"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": "Count."}]}], "long")
    assert len(prompt.pixel_values) == 10  # the source image and a 3 x 3 grid of slices
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, entropy_metric=False), device="cpu")
    group = [TrainSample(prompt, list(range(10, 60)), (-1.0) ** i) for i in range(8)]
    copies = [TrainSample(copy.copy(prompt), s.completion_ids, s.advantage) for s in group]  # no sharing
    shared_mb = step_peak_growth(learner, group)
    copies_mb = step_peak_growth(learner, copies)
    assert shared_mb <= 120, f"{shared_mb:.0f} MB"  # (467 MB before: pixels per sample, every micro-batch at once)
    assert copies_mb > 1.5 * shared_mb, (shared_mb, copies_mb)  # the sharing is what keeps it there
