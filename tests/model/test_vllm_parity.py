"""vLLM and model/ see the same prompt and compute the same log-probabilities on the tiny checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.synthetic import shapes_image

pytestmark = pytest.mark.vllm


def image_messages(size=(700, 400)):
    return [{"role": "user", "content": [{"type": "image", "image": shapes_image(3, size)},
                                         {"type": "text", "text": "How many circles?"}]}]


@pytest.mark.parametrize("mode", ["short", "long", "auto"])
def test_prompt_ids_match_vllm_generate(llm, processor, mode):
    from vllm import SamplingParams

    inputs = [processor(image_messages(), mode), processor(image_messages((224, 224)), mode),
              processor([{"role": "user", "content": "What is 2+3?"}], mode)]
    reqs = [{"prompt": p.text, "multi_modal_data": {"image": p.images}} if p.images else {"prompt": p.text}
            for p in inputs]
    outs = llm.generate(reqs, SamplingParams(max_tokens=1), use_tqdm=False)
    for p, o in zip(inputs, outs):
        assert list(o.prompt_token_ids) == p.input_ids


@pytest.mark.parametrize("mode", ["short", "long"])
def test_vllm_chat_thinking_switch_gives_the_same_prompt(llm, processor, mode):
    """Through LLM.chat, the switch is chat_template_kwargs={"enable_thinking": ...}."""
    from vllm import SamplingParams

    image = shapes_image(3, (700, 400))
    msgs = [{"role": "user", "content": [{"type": "image_pil", "image_pil": image},
                                         {"type": "text", "text": "How many circles?"}]}]
    out = llm.chat(msgs, SamplingParams(max_tokens=1), use_tqdm=False,
                   chat_template_kwargs={"enable_thinking": mode == "long"})[0]
    ours = processor([{"role": "user", "content": [{"type": "image", "image": image},
                                                   {"type": "text", "text": "How many circles?"}]}], mode)
    assert list(out.prompt_token_ids) == ours.input_ids


def test_rl_doctor_json_reports_agreement(tiny_ckpt):
    exe = Path(sys.executable).parent / "rl-doctor"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "model.doctor"]
    proc = subprocess.run(cmd + [str(tiny_ckpt), "--json", "--max-tokens", "32", "--n", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["prompt_ids_match"] is True
    assert report["n_tokens"] >= 256
    assert report["n_image_prompts"] >= 2
    assert report["modes"] == ["short", "long"]
    assert report["max_abs_logprob_diff"] <= 1e-4
    assert 0 <= report["mean_abs_logprob_diff"] <= report["max_abs_logprob_diff"]
