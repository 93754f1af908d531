"""Video through this project's vLLM class (rollouts/vllm/video.py): the engine builds the learner's prompt token ids
for videos packed by the 3D-Resampler and samples from the learner's distribution, with and without a LoRA adapter;
the plugin registers once and leaves vLLM's own class alone."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from model import MiniCPMV
from model.lora import LLM_LORA_TARGETS
from rollouts.vllm.worker import RolloutWorker
from tests.rollouts.helpers import SAMPLING, learner_diff, requests, video_requests

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def worker(tiny_ckpt):
    w = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=4096, video=True,
                      enable_lora=True, max_lora_rank=8)
    yield w
    w.shutdown()


def test_video_prompts_get_the_learners_token_ids_and_log_probs(worker, processor, tiny_model):
    # one batch: videos alone, an image and a video in one prompt, images alone
    batch = video_requests("v") + video_requests("iv", image=True) + requests(3, n=2, prefix="img")
    results = worker.generate(batch)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]  # the worker compares token ids
    videos = results[:-3]
    for r in videos:
        parts = r.request.messages[0]["content"]
        frames = len(next(p["video"] for p in parts if p["type"] == "video").frames)
        stills = sum(p["type"] == "image" for p in parts)
        assert r.prompt.input_ids == processor(r.request.messages, r.request.mode).input_ids
        # one package of up to 3 frames (64 tokens), and one slice per image beside a video
        assert r.prompt.temporal_ids == [[-1]] * stills + [[round(3 * k) for k in range(i, min(i + 3, frames))]
                                                           for i in range(0, frames, 3)]
    assert learner_diff(tiny_model, videos).max() <= 1e-4
    assert learner_diff(tiny_model, results[-3:]).max() <= 1e-4  # image slices unchanged beside the videos


def test_a_video_past_an_hour_gets_the_learners_log_probs(worker, tiny_model):
    """Frames at 3600 s and later: temporal ids from 36000, past the 36000 rows vLLM's resampler starts with (its
    own growth stops one row short)."""
    results = worker.generate(video_requests("hour", frames=(4,), start=3600.0))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
    assert results[0].prompt.temporal_ids[0][0] == 36000
    assert learner_diff(tiny_model, results).max() <= 1e-4


def test_a_video_group_cut_off_resumes_with_the_learners_log_probs(worker, tiny_model):
    """A partial rollout of a video prompt (with an image beside it): the prompt goes back to the engine as token ids
    with its patterns unexpanded plus the sample's tokens, and the continuation still samples the learner's
    distribution."""
    import dataclasses

    from rollouts.types import INTERRUPTED, resumed

    [whole] = [r for r in worker.generate(video_requests("res", frames=(6,), image=True)) if r.request.mode == "long"]
    assert whole.ok
    cut = [dataclasses.replace(s, completion_token_ids=s.completion_token_ids[:len(s.completion_token_ids) // 2],
                               logprobs=s.logprobs[:len(s.logprobs) // 2], finish_reason=INTERRUPTED, truncated=False)
           for s in whole.samples]
    [done] = worker.generate([resumed(dataclasses.replace(whole, samples=cut, partial=True), "res-again", seed=3)])
    assert done.ok, done.error
    for before, after in zip(cut, done.samples):
        assert after.completion_token_ids[:len(before.completion_token_ids)] == before.completion_token_ids
    assert learner_diff(tiny_model, [done]).max() <= 1e-4


def test_video_log_probs_follow_a_lora_adapter(worker, tiny_ckpt, tmp_path):
    torch.manual_seed(0)
    peft_model = get_peft_model(MiniCPMV.from_pretrained(tiny_ckpt),
                                LoraConfig(r=8, lora_alpha=16, target_modules=LLM_LORA_TARGETS,
                                           init_lora_weights=False)).eval()
    peft_model.save_pretrained(tmp_path / "lora")
    worker.load_lora(1, str(tmp_path / "lora"))
    results = worker.generate(video_requests("lora", frames=(7,)))
    assert all(r.ok and r.policy_version == 1 for r in results)
    assert learner_diff(peft_model, results).max() <= 1e-4
    with peft_model.disable_adapter():
        assert learner_diff(peft_model, results).max() > 1e-2


def test_the_plugin_registers_its_own_name_once_and_keeps_vllms_class():
    from vllm import ModelRegistry

    from rollouts.vllm.plugin import ARCH, register

    register()
    register()
    ours, theirs = ModelRegistry.models[ARCH], ModelRegistry.models["MiniCPMV"]
    assert (ours.module_name, ours.class_name) == ("rollouts.vllm.video", "MiniCPMV45Video")
    assert (theirs.module_name, theirs.class_name) == ("vllm.model_executor.models.minicpmv", "MiniCPMV")
    from importlib.metadata import entry_points

    assert any(e.value == "rollouts.vllm.plugin:register" for e in entry_points(group="vllm.general_plugins"))
