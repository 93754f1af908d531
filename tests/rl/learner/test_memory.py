"""The memory arithmetic of the full-weight multi-GPU configs, checked per learner rank.

The 8.7B MiniCPM-V 4.5 is built on the meta device (no memory) and sharded by `rl.learner.fsdp.shard_model` itself
over a fake process group of the config's `cluster.learner_ranks` (torch.distributed's "fake" backend: one process
plays rank 0, collectives do nothing). FSDP2 keeps meta parameters on the meta device (deferred init), so the local
shards have their real shapes. Rank 0 holds the most (ceil(dim0 / N) rows of every parameter); its bytes of fp32
master weights, fp32 gradients and AdamW states, and the bf16 size of the units FSDP2 all-gathers, must match both
the arithmetic from the parameter shapes and the line each config's header states:

    # memory per learner rank (GB): params 8.70, grads 8.19, adam 16.38, root_unit 2.26, largest_unit 1.24
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

from model import MiniCPMV, MiniCPMVConfig
from rl.config import TrainConfig, load
from rl.learner.fsdp import shard_model

ROOT = Path(__file__).parents[3]
RELEASED = ROOT / "configs" / "model" / "minicpm-v-4_5.json"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
GPUS_PER_NODE = 8
GB = 1e9
TOLERANCE_GB = 0.01
HEADER = re.compile(r"^# memory per learner rank \(GB\):(.*)$", re.M)
RAY_START = re.compile(r"ray start .*--resources='(\{.*?\})'.*--num-gpus=(\d+)")


def full_weight_multi_rank() -> list[Path]:
    return [p for p in CONFIGS if not (c := load(p)).learner.lora and c.cluster.learner_ranks > 1]


FULL = full_weight_multi_rank()


def stated(path: Path) -> dict[str, float]:
    """The header's machine-readable memory line: {"params": 8.70, "grads": 8.19, ...} in GB."""
    found = HEADER.findall(path.read_text())
    assert len(found) == 1, f"{path.name}: needs one '# memory per learner rank (GB): ...' line"
    return {key: float(value) for key, value in (item.split() for item in found[0].split(","))}


def meta_model(cfg: TrainConfig) -> MiniCPMV:
    """The released architecture on the meta device, trainable as the full-weight learner makes it
    (rl.learner.local.LocalLearner: everything but the vision tower and resampler unless they train)."""
    with torch.device("meta"):
        model = MiniCPMV(MiniCPMVConfig.from_json_file(str(RELEASED)))
    model.requires_grad_(True)
    model.vpm.requires_grad_(cfg.learner.train_vision)
    model.resampler.requires_grad_(cfg.learner.train_resampler)
    return model


def local_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()


def unit_params(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters each FSDP unit manages: its own, less those of the units nested in it."""
    owned: dict[str, list] = {}
    taken: set[int] = set()
    for name, unit in reversed(list(model.named_modules())):  # inner units before the units around them
        if isinstance(unit, FSDPModule):
            owned[name or "<root>"] = [p for p in unit.parameters() if id(p) not in taken]
            taken.update(id(p) for p in owned[name or "<root>"])
    return owned


def test_the_multi_gpu_full_weight_configs_are_found():
    assert {p.name for p in FULL} >= {"minicpm-v-4_5_full_8gpu.yaml", "minicpm-v-4_5_full_2x8gpu.yaml"}


def measure(path: str | Path) -> dict[str, int]:
    """Rank 0's bytes (params, grads, adam, root_unit, largest_unit) of the config's sharded learner, checked against
    the arithmetic from the shapes. Makes this process rank 0 of a fake process group: run it in a fresh process
    (an in-process vLLM engine of the test session already holds the default group)."""
    path = Path(path)
    cfg = load(path)
    n = cfg.cluster.learner_ranks
    model = meta_model(cfg)
    shapes = {name: (tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()}
    dist.init_process_group("fake", rank=0, world_size=n, store=FakeStore())
    shard_model(model, model, bf16=cfg.learner.bf16)

    # the arithmetic from the shapes: rank 0 holds ceil(dim0 / N) rows of every parameter, 4 B per fp32 entry
    def rows(shape):
        return math.ceil(shape[0] / n) * math.prod(shape[1:]) * 4

    expected_params = sum(rows(s) for s, _ in shapes.values())
    expected_grads = sum(rows(s) for s, trainable in shapes.values() if trainable)

    # what FSDP2 made: every parameter a DTensor sharded on dim 0, fp32 master weights
    params = dict(model.named_parameters())
    assert set(params) == set(shapes)
    assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in params.values())
    param_bytes = sum(local_bytes(p) for p in params.values())
    assert param_bytes == expected_params

    # gradients as FSDP2 leaves them (shaped as the local shard) and AdamW's states after a step
    trainable = [p for p in params.values() if p.requires_grad]
    for p in trainable:
        p.grad = torch.zeros_like(p)
    grad_bytes = sum(local_bytes(p.grad) for p in trainable)
    assert grad_bytes == expected_grads
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learner.lr)
    optimizer.step()
    adam = sum(local_bytes(v) for state in optimizer.state.values() for k, v in state.items() if k != "step")
    assert adam == 2 * expected_grads

    # the all-gathered units, bf16 (the mixed-precision policy's param dtype) when the learner computes in bf16
    units = unit_params(model)
    gathered = {name: sum(p.numel() for p in ps) * (2 if cfg.learner.bf16 else 4) for name, ps in units.items()}
    assert sum(len(ps) for ps in units.values()) == len(params)
    root_unit = gathered.pop("<root>")
    largest_unit = max(gathered.values())

    dist.destroy_process_group()
    return {"params": param_bytes, "grads": grad_bytes, "adam": adam, "root_unit": root_unit,
            "largest_unit": largest_unit}


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.name)
def test_sharded_state_per_rank_matches_the_header(path):
    code = "import json, sys; from tests.rl.learner.test_memory import measure; print(json.dumps(measure(sys.argv[1])))"
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    header = stated(path)
    assert set(header) == set(measured), f"{path.name}: the memory line names {sorted(header)}"
    off = {k: (header[k], round(v / GB, 3)) for k, v in measured.items() if abs(header[k] - v / GB) > TOLERANCE_GB}
    assert off == {}, f"{path.name}: header (GB) vs sharded model: {off}"


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.name)
def test_learner_and_rollout_gpus_are_disjoint_and_fit_the_nodes(path):
    cfg = load(path)
    c, r = cfg.cluster, cfg.rollout
    assert c.sharded() and cfg.sync.kind in ("full", "auto")
    # whole GPUs: Ray then gives each to one actor, so the learner and the engines never share one
    assert c.learner_gpus_per_rank >= 1 and float(c.learner_gpus_per_rank).is_integer()
    assert r.gpus_per_worker >= 1 and float(r.gpus_per_worker).is_integer()
    assert r.gpus_per_worker == r.tensor_parallel_size
    learner_gpus = c.learner_ranks * c.learner_gpus_per_rank
    rollout_gpus = r.num_workers * r.gpus_per_worker
    if not c.learner_resources and not c.rollout_resources:  # one node holds both sides
        assert learner_gpus + rollout_gpus <= GPUS_PER_NODE
        return
    # placed by custom resources: each side's resource is offered by its own node's `ray start` in the header
    nodes = [(json.loads(res), int(gpus)) for res, gpus in RAY_START.findall(path.read_text())]
    assert nodes, f"{path.name}: the header gives no `ray start --resources=... --num-gpus=...` command"
    assert all(gpus <= GPUS_PER_NODE for _, gpus in nodes)
    homes = []
    for want, count, side_gpus in ((c.learner_resources, c.learner_ranks, learner_gpus),
                                   (c.rollout_resources, r.num_workers, rollout_gpus)):
        assert want, f"{path.name}: one side placed by custom resources and the other not"
        home = [i for i, (res, _) in enumerate(nodes) if set(want) <= set(res)]
        assert len(home) == 1, f"{path.name}: {want} must be offered by exactly one node"
        res, gpus = nodes[home[0]]
        assert all(res[k] >= v * count for k, v in want.items()) and side_gpus <= gpus, \
            f"{path.name}: {count} x {want} and {side_gpus} GPUs do not fit the node of {res}, {gpus} GPUs"
        homes.append(home[0])
    assert homes[0] != homes[1], f"{path.name}: learner and rollout workers on the same node"


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.name)
def test_the_attention_the_header_assumes_is_what_the_code_selects(path):
    """The activation estimates assume attention per sequence with no T x T matrix: on CUDA the config's
    `learner.attention` must select the varlen implementation (torch's varlen_attn), over packed rows."""
    from model.attention import VARLEN, llm_attention

    cfg = load(path)
    assert "varlen_attn" in path.read_text() and "no T x T matrix" in path.read_text()
    assert cfg.learner.packing and llm_attention(cfg.learner.attention, "cuda") == VARLEN
