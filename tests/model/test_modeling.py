import json
import shutil

import pytest
import torch

from model import CheckpointError, MiniCPMV
from model.processor import Video, collate
from model.synthetic import shapes_image


def prompts(processor):
    image_q = [{"role": "user", "content": [{"type": "image", "image": shapes_image(3, (700, 400))},
                                            {"type": "text", "text": "How many circles?"}]}]
    video = Video([shapes_image(k + 1, seed=k) for k in range(3)], [0.0, 0.5, 1.0])
    video_q = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "Count."}]}]
    text_q = [{"role": "user", "content": "What is 2+3?"}]
    return [processor(image_q, "long"), processor(text_q, "short"), processor(video_q, "long"),
            processor(text_q, "long")]


COMPLETIONS = [[40, 41, 42, 7, 8], [50, 51, 2], [60, 61, 62, 63], [70, 2]]


@torch.no_grad()
def test_logprobs_are_log_softmax_of_logits(processor, tiny_model):
    batch = collate(prompts(processor)[:2], COMPLETIONS[:2], pad_id=processor.tokenizer.pad_token_id)
    out = tiny_model(**batch, return_logits=True)
    expected = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["target_mask"][:, 1:]
    torch.testing.assert_close(out.logprobs[:, 1:][mask], expected[mask])
    assert (out.logprobs[~batch["target_mask"]] == 0).all()


@torch.no_grad()
def test_padded_packed_and_single_agree(processor, tiny_model):
    ps = prompts(processor)
    pad = processor.tokenizer.pad_token_id
    singles = [tiny_model(**collate([p], [c], pad)).logprobs for p, c in zip(ps, COMPLETIONS)]
    singles = torch.cat([lp[0][lp[0] != 0] for lp in singles])
    for packed in (False, True):
        b = collate(ps, COMPLETIONS, pad, packed=packed)
        lp = tiny_model(**b).logprobs[b["target_mask"]]
        assert lp.numel() == sum(map(len, COMPLETIONS))
        torch.testing.assert_close(lp, singles, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_the_image_matters(processor, tiny_model):
    def lp(image):
        p = processor([{"role": "user", "content": [{"type": "image", "image": image},
                                                    {"type": "text", "text": "Count."}]}], "short")
        return tiny_model(**collate([p], [COMPLETIONS[0]], 0)).logprobs
    a, b = lp(shapes_image(2, seed=0)), lp(shapes_image(5, seed=3))
    assert (a - b).abs().max() > 1e-3


def test_bf16_and_gradients(processor, tiny_ckpt):
    model = MiniCPMV.from_pretrained(tiny_ckpt, dtype=torch.bfloat16)
    b = collate(prompts(processor)[:3], COMPLETIONS[:3], 0)
    out = model(**b)
    assert out.logprobs.dtype == torch.float32
    out.logprobs[b["target_mask"]].sum().backward()
    for prefix in ("llm.", "vpm.", "resampler."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_more_slices_than_placeholders_is_an_error(processor, tiny_model):
    b = collate(prompts(processor)[:1], COMPLETIONS[:1], 0)
    b["image_bound"] = [b["image_bound"][0][:1]]
    with pytest.raises(ValueError, match="do not fit 64 image-token positions"):
        tiny_model(**b)


def test_sharded_round_trip(tiny_ckpt, tiny_model, processor, tmp_path):
    out = tmp_path / "sharded"
    tiny_model.save_pretrained(out, max_shard_size="1MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = MiniCPMV.from_pretrained(out)
    for (n, a), (m, b) in zip(tiny_model.state_dict().items(), again.state_dict().items()):
        assert n == m and torch.equal(a, b)
    b = collate(prompts(processor)[:2], COMPLETIONS[:2], 0)
    with torch.no_grad():
        torch.testing.assert_close(again(**b).logprobs, tiny_model(**b).logprobs, rtol=0, atol=0)


def test_broken_checkpoints_name_the_file(tiny_model, tmp_path):
    out = tmp_path / "ckpt"
    tiny_model.save_pretrained(out, max_shard_size="1MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[0]

    broken = tmp_path / "missing"
    shutil.copytree(out, broken)
    (broken / victim).unlink()
    with pytest.raises(CheckpointError, match=f"{victim}: missing"):
        MiniCPMV.from_pretrained(broken)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(out, corrupt)
    (corrupt / victim).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"{victim}: not a readable safetensors file"):
        MiniCPMV.from_pretrained(corrupt)

    renamed = tmp_path / "renamed"
    shutil.copytree(out, renamed)
    idx = json.loads((renamed / "model.safetensors.index.json").read_text())
    idx["weight_map"]["llm.extra.weight"] = victim
    (renamed / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match=r"unexpected \['llm.extra.weight'\]"):
        MiniCPMV.from_pretrained(renamed)

    shape = tmp_path / "shape"
    shutil.copytree(out, shape)
    cfg = json.loads((shape / "config.json").read_text())
    cfg["intermediate_size"] = 384
    (shape / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight' has shape"):
        MiniCPMV.from_pretrained(shape)
