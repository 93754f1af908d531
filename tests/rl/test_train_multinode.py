"""A multi-node run on one machine: Ray's test cluster of two nodes, each with its own CPUs and a custom resource;
the config puts the learner ranks on one node and the rollout worker on the other, and Ray's records show it. Full
weights reach the other node in memory (the gloo group of the learner's rank 0 and the engine: the CPU default), or
with sync.transport=staging through run.dir/.sync (the staged shards, which the learner streams there rather than
into its node's /dev/shm); an adapter through a folder there."""

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from rl.config import load
from rl.trainer import Trainer

pytestmark = pytest.mark.vllm
CONFIG = Path(__file__).parents[2] / "configs" / "tiny_cpu.yaml"


@pytest.fixture
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"learner_node": 2}})
    cluster.add_node(num_cpus=2, resources={"rollout_node": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def nodes_with(resource: str) -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]}


@pytest.mark.parametrize("lora,transport", [(True, "auto"), (False, "auto"), (False, "staging")],
                         ids=["adapter", "full-in-memory", "full-staging"])
def test_learner_and_rollouts_run_on_the_nodes_the_config_names(two_nodes, tiny_ckpt, tmp_path, lora, transport):
    cfg = load(CONFIG, [
        f"model.path={tiny_ckpt}", f"data.path={tmp_path / 'data.jsonl'}", "data.demo_rows=16",
        f"run.dir={tmp_path / 'run'}", "run.steps=2", "run.progress=false", "run.tensorboard=false",
        "run.export=false", "rollout.prompts_per_step=2", "rollout.cpus_per_worker=1",
        f"cluster.address={two_nodes.address}", "cluster.learner_ranks=2",
        "cluster.learner_resources={learner_node: 1}", "cluster.rollout_resources={rollout_node: 1}",
        f"learner.lora={str(lora).lower()}", f"sync.transport={transport}"])
    trainer = Trainer(cfg)
    try:
        learner_node, rollout_node = nodes_with("learner_node"), nodes_with("rollout_node")
        assert len(learner_node) == len(rollout_node) == 1 and learner_node != rollout_node
        assert set(trainer.learner.nodes) == learner_node  # both ranks, where Ray placed them
        # each rollout worker says where it runs (asked directly: Ray's state API needs the dashboard, which a
        # loaded machine may not have up in time)
        placed = set(ray.get([s.actor.__ray_call__.remote(lambda w: ray.get_runtime_context().get_node_id())
                              for s in trainer.pool.slots]))
        assert placed == rollout_node and not placed & learner_node
        staged, sync_weights = [], trainer.pool.sync_weights

        def watched(version, **kwargs):  # where each full-weight sync was staged
            staged.append(Path(kwargs["path"]))
            return sync_weights(version, **kwargs)

        trainer.pool.sync_weights = watched
        history = trainer.fit()
    finally:
        trainer.close()
    assert len(history) == 2 and all("reward/mean" in h and h["policy_version"] >= 1 for h in history)
    if transport == "staging":  # the staged shards went to the shared run.dir (every node sees it), not /dev/shm
        assert len(staged) == 2 and all(p.parent == (tmp_path / "run" / ".sync").resolve() for p in staged)
    elif not lora:  # in memory, from the learner node's rank 0 to the engine on the other node, verified
        assert staged == [] and all(h["sync/verified"] == 1 and h["sync/gb"] > 0 for h in history)
    # step 2 sampled with the weights synced after step 1, on the other node: the learner computes its log-probs
    assert history[1]["learner/rollout_learner_logp_abs_diff_max"] <= 1e-4
    assert not (tmp_path / "run" / ".sync").exists()
