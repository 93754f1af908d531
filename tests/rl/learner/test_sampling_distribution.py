"""At temperature 0.5 and top-k 5 the learner scores a sample under the distribution the engine drew it from: its
log-probs equal the engine's processed ones, and differ from the temperature-1 values."""

import pytest
import torch

from rl.config import LearnerConfig
from rl.learner import LocalLearner, TrainSample
from rollouts.types import SamplingConfig
from rollouts.vllm.worker import RolloutWorker
from tests.rollouts.helpers import requests

pytestmark = pytest.mark.vllm


def test_learner_logprobs_equal_the_engines_at_temperature_and_top_k(tiny_ckpt):
    drawn = SamplingConfig(max_new_tokens=24, temperature=0.5, top_k=5)
    worker = RolloutWorker(str(tiny_ckpt), mode_sampling={m: drawn for m in ("short", "long", "auto")},
                           dtype="float32", max_model_len=2048)
    try:
        results = worker.generate(requests(k=3, n=2))
    finally:
        worker.shutdown()
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=False), device="cpu")
    samples = [TrainSample(r.prompt, s.completion_token_ids, 0.0, s.logprobs, s.mode, 0.5, 5, 1.0)
               for r in results for s in r.samples]
    at_t1 = [TrainSample(x.prompt, x.completion_ids, 0.0) for x in samples]
    ours, plain = learner.logprobs(samples), learner.logprobs(at_t1)
    engine = [torch.tensor(x.rollout_logprobs) for x in samples]
    diff = torch.cat([(a - b).abs() for a, b in zip(ours, engine)])
    assert diff.numel() >= 100 and diff.max() <= 1e-4
    assert torch.cat([(a - b).abs() for a, b in zip(plain, engine)]).max() > 0.1
