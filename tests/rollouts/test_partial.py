"""Partial rollouts on the real engine: an interrupted group comes back with what it drew (tokens, the engine's
log-probs, versions), and a request resuming it goes on from its last token, so nothing is drawn twice. The stitched
samples are what the learner scores: their log-probs agree with the learner's at 1e-4, on the same weights and across
a weight update between the interrupt and the resume (each part against the weights that drew it)."""

import pytest
import torch

from model.processor import collate
from rollouts.types import RolloutRequest, SamplingConfig, resumed
from rollouts.vllm.worker import RolloutWorker
from model.synthetic import shapes_image
from tests.rollouts.helpers import SAMPLING, learner_diff, perturbed
from tests.rollouts.test_in_flight import full_length, stream_until

pytestmark = pytest.mark.vllm

TOKENS = 120


def request(rid: str, image: bool, mode: str = "long", tokens: int = TOKENS) -> RolloutRequest:
    content = [{"type": "image", "image": shapes_image(3, (500, 300), seed=1)}, {"type": "text", "text": "Count."}] \
        if image else "Count to a hundred."
    return RolloutRequest(rid, [{"role": "user", "content": content}], mode=mode, n=2, seed=7,
                          sampling=SamplingConfig(max_new_tokens=tokens))


def interrupt_at(worker, requests, at: int, ids: list[str]):
    """Stream `requests`, interrupt `ids` once every running sample has `at` tokens; (what interrupt returned, every
    result of the stream)."""
    thread, results = stream_until(worker, requests, at)
    cut = worker.interrupt(ids)
    thread.join(timeout=120)
    assert not thread.is_alive() and worker.in_flight() == 0
    return cut, {r.request.request_id: r for r in results}


def logprobs(model, result, sample) -> torch.Tensor:
    with torch.no_grad():
        b = collate([result.prompt], [sample.completion_token_ids], pad_id=0)
        return model(**b).logprobs[b["target_mask"]]


@pytest.fixture(scope="module")
def worker(tiny_ckpt):
    worker = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=1024)
    full_length(worker)
    yield worker
    worker.shutdown()


@pytest.mark.parametrize("image", [False, True])
def test_an_interrupted_group_resumes_from_its_last_token(worker, tiny_model, image):
    short = request("short", image, mode="short", tokens=8)
    cut, results = interrupt_at(worker, [short, request("long", image)], 30, ["short", "long", "unknown"])
    assert cut == ["long"]  # the short group had finished: it came back whole
    assert results["short"].ok and not results["short"].partial
    partial = results["long"]
    assert partial.ok and partial.partial and len(partial.samples) == 2
    for k, s in enumerate(partial.samples):
        assert s.cut_off and s.index == k and 30 <= len(s.completion_token_ids) < TOKENS
        assert len(s.logprobs) == len(s.completion_token_ids) and s.policy_version == 0
    assert learner_diff(tiny_model, [partial]).max() < 1e-4  # the prefix's engine log-probs are the model's

    [done] = worker.generate([resumed(partial, "long-2", seed=11)])
    assert done.ok and not done.partial and done.request.request_id == "long-2"
    for before, after in zip(partial.samples, done.samples):
        n = len(before.completion_token_ids)
        assert len(after.completion_token_ids) == TOKENS and after.finish_reason == "length" and after.truncated
        assert after.completion_token_ids[:n] == before.completion_token_ids and after.logprobs[:n] == before.logprobs
        assert after.prompt_token_ids == done.prompt.input_ids and after.versions is None
    assert learner_diff(tiny_model, [done]).max() < 1e-4


def test_a_group_resumed_on_newer_weights_records_both_versions(tiny_ckpt, tiny_model, worker):
    cut, results = interrupt_at(worker, [request("old", image=True)], 20, ["old"])
    partial = results["old"]
    assert cut == ["old"] and partial.partial
    new = perturbed(tiny_ckpt, seed=3)
    try:
        assert worker.load_weights(1, weights=list(new.state_dict().items())) == 1
        [done] = worker.generate([resumed(partial, "old-2", seed=5)])
        assert done.ok
        for before, after in zip(partial.samples, done.samples):
            n = len(before.completion_token_ids)
            assert after.versions == [(0, 0), (1, n)] and after.token_versions() == [0] * n + [1] * (TOKENS - n)
            engine = torch.tensor(after.logprobs)
            assert (logprobs(tiny_model, done, after)[:n] - engine[:n]).abs().max() < 1e-4  # drawn by version 0
            assert (logprobs(new, done, after)[n:] - engine[n:]).abs().max() < 1e-4  # and then by version 1
            assert (logprobs(tiny_model, done, after)[n:] - engine[n:]).abs().max() > 1e-2  # (the two differ)
    finally:
        worker.load_weights(0, path=str(tiny_ckpt))


def test_a_resumed_group_whose_samples_all_finished_comes_back_at_once(worker):
    [whole] = worker.generate([request("whole", image=False, mode="short", tokens=6)])
    [again] = worker.generate([resumed(whole, "whole-2", seed=1)])
    assert again.ok and [s.completion_token_ids for s in again.samples] == [s.completion_token_ids
                                                                            for s in whole.samples]
    assert again.timings["generate_s"] == 0.0


def test_a_resume_of_another_prompt_fails_alone(worker):
    [whole] = worker.generate([request("a", image=False, mode="short", tokens=6)])
    other = resumed(whole, "b", seed=1)
    other.messages = [{"role": "user", "content": "Something else entirely."}]
    [failed] = worker.generate([other])
    assert not failed.ok and "another prompt" in failed.error
