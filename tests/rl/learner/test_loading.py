"""Sharded loading (rl/learner/loading.py): each rank builds the model on the meta device, shards it and reads only
its slices of the checkpoint, so its start-up memory is its shard's, not the whole model's; the weights are the
checkpoint's exactly, and the LoRA adapters start as the local learner's."""

import subprocess
import sys

import pytest
import ray
import torch
from safetensors.torch import load_file

from model import MiniCPMV
from model.checkpoint import iter_safetensors
from model.tiny import build_tiny_checkpoint, tiny_config
from rl.config import LearnerConfig
from rl.learner import LocalLearner
from rl.learner.sharded import MB, ShardedLearner


@pytest.fixture(scope="module")
def bf16_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bf16") / "ckpt", seed=0, dtype=torch.bfloat16)


def test_full_weights_loaded_sharded_are_the_checkpoints(bf16_ckpt, local_ray):
    """3 ranks: most dims do not split evenly (FSDP2 pads the last shards)."""
    sharded = ShardedLearner(bf16_ckpt, LearnerConfig(lora=False), ranks=3, seed=0)
    try:
        gathered = dict(sharded.sync_payload("full")[1])
    finally:
        sharded.close()
    stored = dict(iter_safetensors(bf16_ckpt))
    assert gathered.keys() == stored.keys()
    for name, tensor in stored.items():
        assert gathered[name].dtype == torch.float32, name  # the fp32 masters, made from the bf16 slices
        assert torch.equal(gathered[name], tensor.float()), name


def test_lora_loaded_sharded_is_the_checkpoint_and_the_local_learners_adapter(tiny_ckpt, local_ray, tmp_path):
    cfg = LearnerConfig(lora=True)
    torch.manual_seed(0)
    local = LocalLearner(tiny_ckpt, cfg, device="cpu")
    sharded = ShardedLearner(tiny_ckpt, cfg, ranks=2, seed=0)
    try:
        merged = dict(sharded.sync_payload("merged")[1])  # B = 0: the merged weights are the base's
        sharded.sync_payload("adapter", str(tmp_path / "sharded"))
    finally:
        sharded.close()
    stored = dict(iter_safetensors(tiny_ckpt))
    assert merged.keys() == stored.keys()
    for name, tensor in stored.items():
        assert torch.equal(merged[name], tensor), name
    local.sync_payload("adapter", str(tmp_path / "local"))
    theirs, mine = (load_file(str(tmp_path / who / "adapter_model.safetensors")) for who in ("sharded", "local"))
    assert mine.keys() == theirs.keys() and mine
    for name, tensor in mine.items():
        assert torch.equal(theirs[name], tensor), name
        assert (tensor.abs().sum() > 0) == ("lora_A" in name), name  # A drawn, B zero


@pytest.fixture(scope="module")
def big_ckpt(tmp_path_factory):
    """~400 MB of fp32 weights (a 6-layer LLM of hidden size 1024: far above a process's memory noise), stored in
    bf16 as the release is (an fp32 file would be memory-mapped and left on disk by a CPU learner's build)."""
    config = tiny_config(1000, 1, 2, 0, preset="small", hidden_size=1024, intermediate_size=4096,
                         num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, head_dim=128)
    with torch.device("meta"):
        model = MiniCPMV(config)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=generator)
    full_mb = sum(p.numel() for p in model.parameters()) * 4 / MB
    model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    out = tmp_path_factory.mktemp("big") / "ckpt"
    model.save_pretrained(out)
    return out, full_mb


def test_a_rank_holds_its_shards_at_start_up_not_the_model(big_ckpt, local_ray):
    ckpt, full_mb = big_ckpt
    assert full_mb > 350
    cfg = LearnerConfig(lora=False)
    sharded = ShardedLearner(ckpt, cfg, ranks=2, seed=0)
    try:
        ranks = ray.get([r.startup_memory.remote() for r in sharded.ranks])
    finally:
        sharded.close()
    # the same measure around a local learner's build, which holds the whole model (in a fresh process: this one's
    # allocator kept the pages of the model the fixture built)
    code = ("import sys; from rl.config import LearnerConfig; from rl.learner import LocalLearner; "
            "from rl.learner.memory import resident_mb; before = resident_mb(reset_peak=True)[0]; "
            "LocalLearner(sys.argv[1], LearnerConfig(lora=False), device='cpu'); print(resident_mb()[1] - before)")
    proc = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    local_growth = float(proc.stdout.split()[-1])
    growth = [m["peak_rss_mb"] - m["rss_before_mb"] for m in ranks]
    print(f"\nfull fp32 model {full_mb:.0f} MB; start-up peak growth: ranks {[round(g) for g in growth]} MB, "
          f"local learner {local_growth:.0f} MB")
    assert local_growth > 0.9 * full_mb  # the measure sees a whole model
    assert all(g < 0.65 * full_mb for g in growth), growth  # half of it, and a little
