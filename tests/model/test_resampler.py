import math

import numpy as np
import pytest
import torch

from model.resampler import Resampler3D, sincos_1d, sincos_2d


@pytest.fixture
def resampler():
    torch.manual_seed(0)
    r = Resampler3D(num_queries=8, embed_dim=128, num_heads=1, kv_dim=64).eval()
    r.init_weights(std=0.2)
    return r


def test_sincos_tables_by_hand():
    # dim 4: omega = [1, 1/100]; position 2 -> [sin 2, sin .02, cos 2, cos .02]
    np.testing.assert_allclose(sincos_1d(4, np.array([2.0], dtype=np.float32))[0],
                               [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)], rtol=1e-6)
    t = sincos_2d(8, 3, 5)
    assert t.shape == (3, 5, 8)
    # first half encodes the column, second half the row
    np.testing.assert_allclose(t[2, 4, :4], sincos_1d(4, np.array([4.0], dtype=np.float32))[0], rtol=1e-6)
    np.testing.assert_allclose(t[2, 4, 4:], sincos_1d(4, np.array([2.0], dtype=np.float32))[0], rtol=1e-6)


def reference(r: Resampler3D, x, sizes, tids=None):
    """The release's computation written out per group with plain tensor ops (one head)."""
    outs, start = [], 0
    groups = tids if tids is not None else [[-1]] * len(sizes)
    for group in groups:
        keys, vals = [], []
        for j, tid in enumerate(group):
            h, w = sizes[start + j]
            kv = r.ln_kv(r.kv_proj(x[start + j, : h * w]))
            pos = torch.from_numpy(sincos_2d(128, h, w)).reshape(h * w, -1)
            tpos = torch.zeros(128) if tid == -1 else torch.from_numpy(sincos_1d(128, np.array([tid], np.float32)))[0]
            keys.append(kv + pos + tpos)
            vals.append(kv)
        start += len(group)
        k, v = torch.cat(keys), torch.cat(vals)
        wq, wk, wv = r.attn.in_proj_weight.chunk(3)
        bq, bk, bv = r.attn.in_proj_bias.chunk(3)
        q = r.ln_q(r.query) @ wq.T + bq
        att = torch.softmax((q @ (k @ wk.T + bk).T) / math.sqrt(128), dim=-1) @ (v @ wv.T + bv)
        out = r.attn.out_proj(att)
        outs.append(r.ln_post(out) @ r.proj)
    return torch.stack(outs)


@torch.no_grad()
def test_images_match_the_written_out_computation(resampler):
    x = torch.randn(3, 30, 64)
    sizes = [(5, 6), (3, 4), (2, 5)]
    out = resampler(x, torch.tensor(sizes))
    assert out.shape == (3, 8, 128)
    torch.testing.assert_close(out, reference(resampler, x, sizes), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_video_packages_concatenate_frames_and_add_time(resampler):
    x = torch.randn(5, 30, 64)
    sizes = [(5, 6), (3, 4), (2, 5), (5, 6), (4, 4)]
    tids = [[-1], [-1], [3, 7, 9]]
    out = resampler(x, torch.tensor(sizes), tids)
    assert out.shape == (3, 8, 128)  # 3 groups: two images and one 3-frame package
    torch.testing.assert_close(out, reference(resampler, x, sizes, tids), rtol=1e-4, atol=1e-5)
    # the timestamps matter, and only through the keys of the package
    shifted = resampler(x, torch.tensor(sizes), [[-1], [-1], [30, 70, 90]])
    torch.testing.assert_close(shifted[:2], out[:2])
    assert (shifted[2] - out[2]).abs().max() > 1e-3


@torch.no_grad()
def test_padding_does_not_leak(resampler):
    x = torch.randn(2, 30, 64)
    sizes = torch.tensor([[5, 6], [2, 3]])
    a = resampler(x, sizes)
    x2 = x.clone()
    x2[1, 6:] = 1e3  # change only the padding of the second slice
    torch.testing.assert_close(resampler(x2, sizes), a)


def test_position_is_on_keys_not_values(resampler):
    """If the 2D term were added to the values (a bug seen in some vLLM versions), a constant input would give
    outputs that depend on the grid size; with keys only, constant values make the output grid-independent."""
    with torch.no_grad():
        x = torch.ones(2, 30, 64)
        out = resampler(x, torch.tensor([[5, 6], [3, 4]]))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)


def test_mismatched_inputs_are_errors(resampler):
    with pytest.raises(ValueError, match="tgt_sizes"):
        resampler(torch.randn(2, 4, 64), torch.tensor([[2, 2]]))
    with pytest.raises(ValueError, match="temporal_ids"):
        resampler(torch.randn(2, 4, 64), torch.tensor([[2, 2], [2, 2]]), [[1, 2, 3]])


@pytest.mark.vllm
def test_matches_vllm_resampler(llm, tiny_model):
    torch.manual_seed(1)
    x = torch.randn(5, 40, 64)
    sizes = torch.tensor([[5, 6], [3, 4], [2, 5], [5, 8], [4, 4]])
    cases = (None, [[-1], [-1], [3, 7, 9]])

    def run(model):
        with torch.no_grad():
            return [model.resampler(x, sizes, t).clone() for t in cases]

    theirs = llm.apply_model(run)[0]
    with torch.no_grad():
        for t, ref in zip(cases, theirs):
            torch.testing.assert_close(tiny_model.resampler(x, sizes, t), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.vllm
def test_vision_tower_matches_vllm(llm, tiny_model, processor):
    from model.synthetic import shapes_image

    inputs = processor.hf("(<image>./</image>)" * 2, [[shapes_image(4, (700, 400)), shapes_image(2, (300, 200))]])
    strips = list(inputs["pixel_values"][0])
    sizes = torch.as_tensor(inputs["tgt_sizes"][0])
    width = max(s.shape[-1] for s in strips)
    padded = torch.stack([torch.nn.functional.pad(s, (0, width - s.shape[-1])) for s in strips])
    mask = torch.zeros(len(strips), 1, int(sizes.prod(-1).max()), dtype=torch.bool)
    for i, n in enumerate(sizes.prod(-1).tolist()):
        mask[i, 0, :n] = True

    def run(model):
        with torch.no_grad():
            return model.vpm(padded, patch_attention_mask=mask, tgt_sizes=sizes).clone()

    theirs = llm.apply_model(run)[0]
    with torch.no_grad():
        ours = tiny_model.vpm(padded, sizes)
    valid = mask[:, 0]
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=1e-4, atol=1e-4)
