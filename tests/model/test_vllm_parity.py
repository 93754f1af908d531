"""vLLM and model/ build the same prompt token ids on the tiny checkpoint (the log-probabilities:
tests/rollouts/test_doctor.py)."""

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
