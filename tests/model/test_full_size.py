"""The full 8.7B MiniCPM-V 4.5, built on the meta device: every released parameter name and shape."""

from pathlib import Path

import pytest
import torch

from model import MiniCPMV, MiniCPMVConfig

RELEASED = Path(__file__).parents[2] / "configs" / "model" / "minicpm-v-4_5.json"
H, V, KV, FF, VOCAB, VIS, VIS_FF = 4096, 4096, 1024, 12288, 151748, 1152, 4304


def released_shapes() -> dict[str, tuple[int, ...]]:
    """The checkpoint's names and shapes, written out from the release's description (not from our code)."""
    s = {"llm.model.embed_tokens.weight": (VOCAB, H), "llm.model.norm.weight": (H,), "llm.lm_head.weight": (VOCAB, H)}
    for i in range(36):
        p = f"llm.model.layers.{i}."
        s.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                  p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                  p + "self_attn.q_norm.weight": (128,), p + "self_attn.k_norm.weight": (128,),
                  p + "mlp.gate_proj.weight": (FF, H), p + "mlp.up_proj.weight": (FF, H),
                  p + "mlp.down_proj.weight": (H, FF), p + "input_layernorm.weight": (H,),
                  p + "post_attention_layernorm.weight": (H,)})
    s.update({"vpm.embeddings.patch_embedding.weight": (VIS, 3, 14, 14), "vpm.embeddings.patch_embedding.bias": (VIS,),
              "vpm.embeddings.position_embedding.weight": (70 * 70, VIS),
              "vpm.post_layernorm.weight": (VIS,), "vpm.post_layernorm.bias": (VIS,)})
    for i in range(27):
        p = f"vpm.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"self_attn.{proj}.weight"], s[p + f"self_attn.{proj}.bias"] = (VIS, VIS), (VIS,)
        for ln in ("layer_norm1", "layer_norm2"):
            s[p + f"{ln}.weight"], s[p + f"{ln}.bias"] = (VIS,), (VIS,)
        s.update({p + "mlp.fc1.weight": (VIS_FF, VIS), p + "mlp.fc1.bias": (VIS_FF,),
                  p + "mlp.fc2.weight": (VIS, VIS_FF), p + "mlp.fc2.bias": (VIS,)})
    s.update({"resampler.query": (64, H), "resampler.kv_proj.weight": (H, VIS),
              "resampler.attn.in_proj_weight": (3 * H, H), "resampler.attn.in_proj_bias": (3 * H,),
              "resampler.attn.out_proj.weight": (H, H), "resampler.attn.out_proj.bias": (H,),
              "resampler.proj": (H, H)})
    for ln in ("ln_q", "ln_kv", "ln_post"):
        s[f"resampler.{ln}.weight"], s[f"resampler.{ln}.bias"] = (H,), (H,)
    return s


@pytest.fixture(scope="module")
def meta_model():
    config = MiniCPMVConfig.from_json_file(str(RELEASED))
    with torch.device("meta"):
        return MiniCPMV(config)


def test_every_name_and_shape(meta_model):
    ours = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    expected = released_shapes()
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}


def test_total_is_8_7b(meta_model):
    total = sum(v.numel() for v in meta_model.state_dict().values())
    assert total == sum(torch.Size(s).numel() for s in released_shapes().values())
    assert 8.6e9 < total < 8.8e9


def test_dropping_the_last_vision_layer_removes_its_parameters():
    config = MiniCPMVConfig.from_json_file(str(RELEASED))
    config.drop_vision_last_layer = True
    with torch.device("meta"):
        model = MiniCPMV(config)
    names = model.state_dict().keys()
    assert not any(n.startswith("vpm.encoder.layers.26.") for n in names)
    assert any(n.startswith("vpm.encoder.layers.25.") for n in names)
