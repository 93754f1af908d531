"""`rl-train` with the sharded learner (2 gloo ranks as Ray actors, FSDP2) on the tiny model: the synced workers
sample what the learner computes, nothing is left behind, and a sharded checkpoint resumes exactly on 2 ranks and
on 1."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.rl.test_train_e2e import metrics, rl_train

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def sharded(tiny_ckpt, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "count_shapes.jsonl"
    # adam_eps: Adam moves an entry by ~lr x sign(g) even where g is rounding noise; 1e-3 damps that, so that runs
    # whose sums are ordered differently (2 ranks against 1) stay comparable (tests/rl/learner/test_sharded.py)
    return [f"model.path={tiny_ckpt}", f"data.path={data}", "data.demo_rows=32", "run.progress=false",
            "run.tensorboard=false", "rollout.prompts_per_step=2", "rollout.n=4", "rollout.dtype=float32",
            "learner.adam_eps=1e-3", "cluster.learner=sharded", "run.save_every=2", "run.keep_checkpoints=4"]


def exported(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run / "export").glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def straight(sharded, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    rl_train("--config", "configs/tiny_cpu.yaml", *sharded, "cluster.learner_ranks=2", f"run.dir={run}",
             "run.steps=4")
    return run


def test_two_ranks_train_and_the_workers_sample_what_the_learner_computes(straight):
    rows = metrics(straight)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("reward/short/mean" in r and "reward/long/mean" in r and r["policy_version"] == r["step"]
               for r in rows)
    # from step 2 on the rollouts come from weights synced after an update: the engine's log-probs of its own
    # samples equal the learner's (rl-doctor's bound) before this step's update
    for r in rows[1:]:
        assert r["learner/rollout_learner_logp_abs_diff_max"] <= 1e-4, r
    assert not (straight / ".sync").exists()  # adapter folders removed
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (straight / "checkpoints" / "step-000002" / "sharded").is_dir()


def test_resume_on_two_ranks_is_exact_and_on_one_is_close(straight, sharded, tmp_path):
    half = tmp_path / "half"
    rl_train("--config", "configs/tiny_cpu.yaml", *sharded, "cluster.learner_ranks=2", f"run.dir={half}",
             "run.steps=2")
    one = tmp_path / "one"
    one.mkdir()
    (one / "checkpoints").mkdir()
    import shutil

    shutil.copytree(half / "checkpoints" / "step-000002", one / "checkpoints" / "step-000002")
    rl_train("--config", "configs/tiny_cpu.yaml", *sharded, "cluster.learner_ranks=2", f"run.dir={half}",
             "run.steps=4", "--resume")
    rl_train("--config", "configs/tiny_cpu.yaml", *sharded, "cluster.learner_ranks=1", f"run.dir={one}",
             "run.steps=4", "--resume")
    reference, again, on_one = exported(straight), exported(half), exported(one)
    assert reference.keys() == again.keys() == on_one.keys()
    for name, tensor in reference.items():
        assert torch.equal(again[name], tensor), name
        torch.testing.assert_close(on_one[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert [r["step"] for r in metrics(half)][-2:] == [3, 4]
