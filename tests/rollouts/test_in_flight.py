"""In-flight weight updates (`run.async_mode=fully_async`): the engine loads new weights between two steps with
its requests kept, and each sample says which policy version drew which token. With kv_after_update=recompute the
tokens after the update are exactly the new weights' (the engine's log-probs equal the new model's, the earlier ones
the old model's); with keep, nothing is recomputed and the request still finishes on the new version."""

import threading
import time

import pytest
import torch

from model.processor import collate
from rollouts.types import RolloutRequest, SamplingConfig
from rollouts.vllm.worker import RolloutWorker, tokens_so_far, version_runs
from model.synthetic import shapes_image
from tests.rollouts.helpers import SAMPLING, perturbed

pytestmark = pytest.mark.vllm

TOKENS = 200


def full_length(worker) -> None:
    original = worker.sampling_for

    def sampling_for(request, prompt, *args):
        params = original(request, prompt, *args)
        params.ignore_eos = True  # not min_tokens: it masks EOS, and the log-probs would not be the model's
        return params

    worker.sampling_for = sampling_for


def request(rid: str, image: bool = False) -> RolloutRequest:
    content = [{"type": "image", "image": shapes_image(3, (500, 300), seed=1)}, {"type": "text", "text": "Count."}] \
        if image else "Count to a hundred."
    return RolloutRequest(rid, [{"role": "user", "content": content}], mode="long", n=2, seed=7,
                          sampling=SamplingConfig(max_new_tokens=TOKENS))


def stream_until(worker, requests, at: int, samples: int = 2) -> tuple[threading.Thread, list]:
    """Stream `requests` in a thread until `samples` samples run, each with `at` tokens or more; (the thread, the
    list it fills with the results)."""
    results = []
    thread = threading.Thread(target=lambda: results.extend(worker.stream(requests)))
    thread.start()
    deadline, counts = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        counts = [n for per_sample in worker.loop.call(lambda: tokens_so_far(worker.llm), in_flight=True).values()
                  for n in per_sample.values()]
        if len(counts) == samples and min(counts) >= at:
            return thread, results
        time.sleep(0.01)
    pytest.fail(f"the requests never reached {at} tokens: {counts}")


def update_mid_request(worker, weights, image: bool, at: int = 40):
    """Stream one long group, load `weights` as version 1 once every sample has `at` tokens; its result."""
    thread, results = stream_until(worker, [request("r", image)], at)
    assert worker.load_weights(1, weights=weights) == 1  # returns while the request still runs
    assert thread.is_alive() and worker.in_flight() == 1
    thread.join(timeout=300)
    [result] = results
    return result


def logprobs(model, result, sample) -> torch.Tensor:
    with torch.no_grad():
        b = collate([result.prompt], [sample.completion_token_ids], pad_id=0)
        return model(**b).logprobs[b["target_mask"]]


@pytest.mark.parametrize("kv,image", [("recompute", False), ("recompute", True), ("keep", False)])
def test_a_weight_update_mid_request_keeps_it_and_versions_its_tokens(tiny_ckpt, tiny_model, kv, image):
    worker = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=1024,
                           in_flight_updates=True, kv_after_update=kv)
    try:
        full_length(worker)
        new = perturbed(tiny_ckpt, seed=1)
        result = update_mid_request(worker, list(new.state_dict().items()), image)
        assert result.ok and worker.version() == 1
        for sample in result.samples:
            assert len(sample.completion_token_ids) == TOKENS  # kept, not restarted
            [(v0, start), (v1, switch)] = sample.versions
            assert (v0, start, v1) == (0, 0, 1) and 40 <= switch < TOKENS and sample.policy_version == 0
            versions = torch.tensor(sample.token_versions())
            assert len(versions) == TOKENS and (versions[:switch] == 0).all() and (versions[switch:] == 1).all()
            engine = torch.tensor(sample.logprobs)
            old, now = logprobs(tiny_model, result, sample), logprobs(new, result, sample)
            assert (engine[:switch] - old[:switch]).abs().max() <= 1e-4  # drawn by the old weights
            if kv == "recompute":  # the later tokens are exactly the new policy's
                assert (engine[switch:] - now[switch:]).abs().max() <= 1e-4
            else:  # their keys and values before the switch came from the old weights: close to neither exactly
                assert (engine[switch:] - now[switch:]).abs().max() > 1e-4
        # the engine is idle again: what the old weights cached is gone, a new request is the new weights' alone
        after = worker.generate([request("after", image)])[0]
        assert all(s.versions is None and s.policy_version == 1 for s in after.samples)
        assert (torch.tensor(after.samples[0].logprobs) - logprobs(new, after, after.samples[0])).abs().max() <= 1e-4
    finally:
        worker.shutdown()


def test_version_runs():
    assert version_runs(3, [], 10) == [(3, 0)]
    assert version_runs(3, [(4, 5), (5, 8)], 10) == [(3, 0), (4, 5), (5, 8)]
    assert version_runs(3, [(4, 0)], 10) == [(4, 0)]  # updated before its first token
    assert version_runs(3, [(4, 10)], 10) == [(3, 0)]  # after its last: it had finished
