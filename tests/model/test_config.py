import json
from pathlib import Path

import pytest

from model import CheckpointError, MiniCPMVConfig
from model.checkpoint import load_config

RELEASED = Path(__file__).parents[2] / "configs" / "model" / "minicpm-v-4_5.json"


def test_released_config_loads_with_its_values():
    c = MiniCPMVConfig.from_json_file(str(RELEASED))
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (4096, 36, 32, 8)
    assert (c.head_dim, c.intermediate_size, c.vocab_size) == (128, 12288, 151748)
    assert c.rope_parameters["rope_theta"] == 1000000
    assert c.version == 4.5 and c.query_num == 64 and c.image_size == 448 and c.patch_size == 14
    assert c.drop_vision_last_layer is False  # the file overrides the class default
    assert c.use_image_id is True and c.vision_batch_size == 16  # class defaults
    assert c.slice_config["max_slice_nums"] == 9
    v = c.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (1152, 27, 16, 4304)
    assert (v.image_size, v.patch_size) == (980, 14)


def test_wrong_field_type_is_named(tmp_path):
    data = json.loads(RELEASED.read_text())
    data["query_num"] = "sixty-four"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config.json.*query_num"):
        load_config(tmp_path)


def test_malformed_and_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_config(tmp_path)


def test_resampler_head_constraint():
    with pytest.raises(Exception, match="multiple of 128"):
        MiniCPMVConfig(hidden_size=200, num_attention_heads=4, head_dim=50)
