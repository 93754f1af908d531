"""A batch of samples for the learner tests (image and text prompts, completions of several lengths), and a
local Ray for the sharded learner's ranks."""

import pytest
import ray
import torch

from model.synthetic import shapes_image
from rl.learner import TrainSample


@pytest.fixture(scope="session")
def samples(processor):
    g = torch.Generator().manual_seed(0)
    prompts = [processor([{"role": "user", "content": [{"type": "image", "image": shapes_image(i + 1, seed=i)},
                                                       {"type": "text", "text": "Count."}]}], "long")
               for i in range(3)]
    prompts += [processor([{"role": "user", "content": "What is 1+1?"}], "short")] * 2
    lengths = [40, 8, 25, 3, 12]
    return [TrainSample(p, torch.randint(5, 600, (n,), generator=g).tolist(), adv, None)
            for p, n, adv in zip(prompts, lengths, [1.0, -0.5, 0.25, -1.0, 0.75])]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
