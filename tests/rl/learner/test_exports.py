"""What a run leaves for other tools: the export loads with `transformers.AutoModel` (trust_remote_code) and gives
the toolkit's logits; the LoRA adapter is a PEFT folder that names its base checkpoint."""

import json

import torch
from peft import PeftModel
from transformers import AutoModel

from model import MiniCPMV
from rl.config import LearnerConfig
from rl.learner import LocalLearner


def test_the_export_loads_with_automodel_and_gives_the_same_logits(tiny_ckpt, samples, tmp_path):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=False, lr=1e-2, entropy_metric=False), device="cpu")
    learner.step(samples[:2])
    learner.export(tmp_path / "export")
    auto = AutoModel.from_pretrained(str(tmp_path / "export"), trust_remote_code=True)
    ours = MiniCPMV.from_pretrained(tmp_path / "export")
    ids = torch.tensor([[1, 5, 9, 30, 7, 11]])
    with torch.no_grad():
        assert torch.equal(auto(input_ids=ids, return_logits=True).logits, ours(input_ids=ids, return_logits=True).logits)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_minicpmv.MiniCPMV"


def test_the_adapter_is_a_peft_folder_naming_its_base(tiny_ckpt, tmp_path):
    learner = LocalLearner(tiny_ckpt, LearnerConfig(lora=True, entropy_metric=False), device="cpu")
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    kind, folder = learner.sync_payload("adapter", str(tmp_path / "adapter"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_ckpt.resolve())
    loaded = PeftModel.from_pretrained(MiniCPMV.from_pretrained(config["base_model_name_or_path"]), folder)
    ids = torch.tensor([[1, 5, 9, 30, 7, 11]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids, return_logits=True).logits,
                              learner.model(input_ids=ids, return_logits=True).logits, atol=1e-5)
