"""The rollout worker in-process: sampling, per-request failures, and weight sync proven by log-probabilities."""

import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from model import MiniCPMV
from model.lora import LLM_LORA_TARGETS, merged_weights
from model.synthetic import shapes_image
from rollouts.types import RolloutRequest
from rollouts.vllm.worker import RolloutWorker

from tests.rollouts.helpers import SAMPLING, learner_diff, perturbed, requests

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def worker(tiny_ckpt):
    return RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=2048,
                         enable_lora=True, max_lora_rank=8)


def test_samples_carry_what_the_learner_needs(worker, processor, tiny_model):
    results = worker.generate(requests(4, n=3))
    for r in results:
        assert r.ok and len(r.samples) == 3 and r.policy_version == 0
        assert r.prompt.input_ids == processor(r.request.messages, r.request.mode).input_ids
        for s in r.samples:
            assert s.mode == r.request.mode and s.prompt_token_ids == r.prompt.input_ids
            assert len(s.logprobs) == len(s.completion_token_ids) > 0
            budget = SAMPLING[s.mode].max_new_tokens
            assert s.truncated == (s.finish_reason == "length") == (len(s.completion_token_ids) == budget)
    assert learner_diff(tiny_model, results).max() <= 1e-4
    short = results[0].prompt.text
    assert short.endswith("<think>\n\n</think>\n\n") and results[1].prompt.text.endswith("<think>\n")


def test_bad_requests_fail_alone(worker):
    bad = [RolloutRequest("bad-image", [{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}]),
           RolloutRequest("n0", [{"role": "user", "content": "hi"}], mode="short", n=0),
           RolloutRequest("too-long", [{"role": "user", "content": "seven " * 3000}], mode="short", n=1),
           # passes our checks, but vLLM rejects it (limit_mm_per_prompt=4): the engine call is retried per request
           RolloutRequest("5-images", [{"role": "user", "content": [{"type": "image", "image": shapes_image(1)}] * 5}],
                          mode="short", n=1)]
    results = worker.generate(requests(2) + bad)
    assert [r.ok for r in results] == [True, True, False, False, False, False]
    assert "content[0].image: cannot decode image" in results[2].error
    assert "n=0" in results[3].error
    assert "max_model_len=2048" in results[4].error
    assert "image" in results[5].error
    assert all(len(r.samples) == 2 for r in results[:2])
    assert all(r.ok for r in worker.generate(requests(2, prefix="again")))  # nothing left behind in the engine


def test_video_requests_are_refused_with_the_reason(worker, tmp_path):
    from model.video import write_video

    path = write_video(tmp_path / "v.mp4", [shapes_image(k + 1, (64, 64)) for k in range(6)], fps=6)
    video = RolloutRequest("video", [{"role": "user", "content": [{"type": "video", "video": str(path)}]}], n=1)
    [refused, fine] = worker.generate([video] + requests(1, prefix="with-video"))
    assert "video prompts need the engine started with video=True" in refused.error and fine.ok
    assert "temporal ids" in refused.error


def test_seeded_batch_larger_than_one_engine_step(worker):
    """More prompt tokens than one engine step schedules, every request seeded: on CPU a split prefill of a seeded
    request failed the whole batch in vLLM 0.32 ("CPU Generator does not use offset"); the engine now never splits."""
    batch = requests(40, n=2, prefix="big")
    for i, r in enumerate(batch):
        r.seed = 1000 + 16 * i
    budget = worker.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    first = worker.generate(batch)
    assert sum(2 * len(r.prompt.input_ids) for r in first) > budget
    assert all(r.ok for r in first), [r.error for r in first if not r.ok][:1]
    again = worker.generate(batch)
    assert [[s.completion_token_ids for s in r.samples] for r in again] == \
        [[s.completion_token_ids for s in r.samples] for r in first]


def test_full_sync_in_memory_and_from_a_directory(worker, tiny_ckpt, tmp_path):
    assert worker.model_in_process()  # pairs go straight to vLLM; test_multiprocess.py covers the other path
    before = worker.generate(requests(3, prefix="a"))  # fills the prefix cache with old-weight KV
    new = perturbed(tiny_ckpt, seed=1)
    assert worker.load_weights(1, weights=list(new.state_dict().items())) == 1
    after = worker.generate(requests(3, prefix="a"))  # the same prompts
    assert all(r.policy_version == 1 and s.policy_version == 1 for r in after for s in r.samples)
    assert learner_diff(new, after).max() <= 1e-4
    old = MiniCPMV.from_pretrained(tiny_ckpt).eval()
    assert learner_diff(old, after).max() > 1e-2  # not served from stale weights or stale cache
    assert learner_diff(old, before).max() <= 1e-4

    newer = perturbed(tiny_ckpt, seed=2)
    newer.save_pretrained(tmp_path / "v2")
    worker.load_weights(2, path=str(tmp_path / "v2"))
    assert learner_diff(newer, worker.generate(requests(3, prefix="b"))).max() <= 1e-4


def test_lora_sync_matches_the_peft_model_never_serves_an_old_adapter_and_outlives_its_directory(worker, tiny_ckpt, tmp_path):
    base = tmp_path / "base"
    MiniCPMV.from_pretrained(tiny_ckpt).save_pretrained(base)
    worker.load_weights(3, path=str(base))  # back to the base weights
    for version, seed in ((4, 0), (5, 1)):
        torch.manual_seed(seed)
        peft_model = get_peft_model(MiniCPMV.from_pretrained(tiny_ckpt),
                                    LoraConfig(r=8, lora_alpha=16, target_modules=LLM_LORA_TARGETS,
                                               init_lora_weights=False)).eval()
        peft_model.save_pretrained(tmp_path / f"lora{version}")
        worker.load_lora(version, str(tmp_path / f"lora{version}"))
        shutil.rmtree(tmp_path / f"lora{version}")  # loaded eagerly: the trainer may delete it right away
        results = worker.generate(requests(3, prefix=f"l{version}"))
        assert all(r.policy_version == version for r in results)
        assert learner_diff(peft_model, results).max() <= 1e-4
        with peft_model.disable_adapter():
            assert learner_diff(peft_model, results).max() > 1e-2


def test_merged_lora_sync_matches_the_peft_model(worker, tiny_ckpt):
    torch.manual_seed(3)
    peft_model = get_peft_model(MiniCPMV.from_pretrained(tiny_ckpt),
                                LoraConfig(r=8, lora_alpha=16, target_modules=LLM_LORA_TARGETS,
                                           init_lora_weights=False)).eval()
    merged = merged_weights(peft_model)
    assert {n for n, _ in merged} == set(MiniCPMV.from_pretrained(tiny_ckpt).state_dict())
    worker.load_weights(6, weights=merged)
    results = worker.generate(requests(3, prefix="m"))
    assert learner_diff(peft_model, results).max() <= 1e-4
    assert any(p.requires_grad for p in peft_model.parameters())  # the adapter is still there to train
