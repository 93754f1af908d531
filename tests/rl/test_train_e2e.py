"""The real `rl-train` CLI on the tiny model: metrics, updates, checkpoints, export, resume, and learning."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import MiniCPMV

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).parents[2]
CONTRACT = ["step", "reward/mean", "reward/short/mean", "reward/long/mean", "tokens/short/mean", "tokens/long/mean",
            "mode/long_fraction", "loss", "entropy", "clip_fraction", "time/generate", "time/score", "time/update",
            "time/sync", "time/step"]


def rl_train(*args, cwd=ROOT, check=True):
    exe = Path(sys.executable).parent / "rl-train"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rl.cli"]
    proc = subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def common(tiny_ckpt, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "count_shapes.jsonl"
    return [f"model.path={tiny_ckpt}", f"data.path={data}", "data.demo_rows=32", "run.progress=false",
            "run.tensorboard=true", "rollout.prompts_per_step=2", "rollout.n=4"]


@pytest.mark.parametrize("lora", [True, False])
def test_three_steps_update_every_trainable_parameter_and_export(tiny_ckpt, common, tmp_path, lora):
    run = tmp_path / "run"
    lr = "1e-2" if lora else "1e-3"
    rl_train("--config", "configs/tiny_cpu.yaml", *common, f"run.dir={run}", "run.steps=3", "run.save_every=1",
             f"learner.lora={str(lora).lower()}", f"learner.lr={lr}", "run.eval_every=3", "run.eval_rows=2")
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "eval/reward/short/mean" in rows[2] and "eval/reward/long/mean" in rows[2]  # per mode, every 3 steps
    assert not any(k.startswith("eval/") for k in rows[0])
    assert {"eval/compliance/short", "eval/think_rate/long", "eval/tokens/long/p90"} <= set(rows[2])
    evaluated = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert len(evaluated) == 2 * 2 and {r["mode"] for r in evaluated} == {"short", "long"}  # rows x modes
    for key in CONTRACT:
        assert all(key in r for r in rows), key
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())
    assert len(list((run / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints
    exported = MiniCPMV.from_pretrained(run / "export")
    base = MiniCPMV.from_pretrained(tiny_ckpt)
    changed = {n for n, p in exported.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
    llm_linears = {n for n in base.state_dict() if n.startswith("llm.model.layers.") and n.endswith("proj.weight")}
    if lora:  # every LoRA-targeted weight moved (A and B both trained after step 2); nothing else did
        assert changed == llm_linears
    else:  # every LLM weight moved; the frozen vision tower and resampler did not
        assert changed == {n for n in base.state_dict() if n.startswith("llm.")}
        # the CPU default sends full weights in memory (gloo), verified by every engine's checksums at each step,
        # and the engine then samples from the learner's weights
        assert all(r["sync/verified"] == 1 and r["sync/gb"] > 0 for r in rows)
        assert all(r["learner/rollout_learner_logp_abs_diff_max"] <= 1e-4 for r in rows[1:])
        assert not (run / ".sync").exists()
    # the export is a standard checkpoint directory: vLLM serves it
    from rollouts.vllm.engine import make_llm
    from vllm import SamplingParams

    served = make_llm(run / "export", dtype="float32", max_model_len=1024)
    out = served.generate(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], SamplingParams(max_tokens=4))
    assert len(out[0].outputs[0].token_ids) == 4


def test_resume_is_exact(common, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    base = ["--config", "configs/tiny_cpu.yaml", *common, "run.save_every=2", "learner.lr=1e-2"]
    rl_train(*base, f"run.dir={straight}", "run.steps=4")
    rl_train(*base, f"run.dir={resumed}", "run.steps=2")
    rl_train(*base, f"run.dir={resumed}", "run.steps=4", "--resume")
    a, b = metrics(straight), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if not (key.startswith(("time/", "memory/")) or key.endswith(("seconds", "per_s"))):
                assert rb[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (ra["step"], key)
    wa = MiniCPMV.from_pretrained(straight / "export").state_dict()
    wb = MiniCPMV.from_pretrained(resumed / "export").state_dict()
    assert all(torch.allclose(wa[n], wb[n], atol=1e-6) for n in wa)


# A run killed with SIGKILL (no cleanup, as kill -9 from outside) at the end of step KILL_AT, before that step's
# checkpoint: the latest checkpoint is then the one before, taken with a batch in flight (one_step_off).
KILLED_RUN = """
import os, signal, sys
from rl.config import load
from rl.trainer import Trainer

kill_at = int(sys.argv[1])
cfg = load("configs/tiny_cpu.yaml", sys.argv[2:])
Trainer(cfg, own_tempdir=True,
        callbacks=[lambda step, metrics: step == kill_at and os.kill(os.getpid(), signal.SIGKILL)]).fit()
"""


def test_one_step_off_resume_after_kill_9_is_exact(common, tmp_path):
    """The checkpoint at step 2 holds step 3's batch, drawn by the step-2 policy while the learner updated: killed
    after step 3, the resumed run trains on that batch again (not one regenerated by the newer weights), so every
    metric and the export equal the uninterrupted run's."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    base = [*common, "run.save_every=2", "learner.lr=1e-2", "run.async_mode=one_step_off", "run.steps=4"]
    rl_train("--config", "configs/tiny_cpu.yaml", *base, f"run.dir={straight}")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, "3", *base, f"run.dir={resumed}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert len(metrics(resumed)) == 3
    assert [p.name for p in (resumed / "checkpoints").glob("step-*")] == ["step-000002"]
    rl_train("--config", "configs/tiny_cpu.yaml", *base, f"run.dir={resumed}", "--resume")
    a, b = metrics(straight), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4] and [r["staleness/max"] for r in b] == [0, 1, 1, 1]
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if not (key.startswith(("time/", "memory/")) or key.endswith(("seconds", "per_s"))):
                assert rb[key] == value, (ra["step"], key, value, rb[key])
    wa = MiniCPMV.from_pretrained(straight / "export").state_dict()
    wb = MiniCPMV.from_pretrained(resumed / "export").state_dict()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_fully_async_resume_after_kill_9_trains_every_row_once(common, tmp_path):
    """The checkpoint at step 2 holds the groups the producer had finished ahead; killed after step 3, the resumed
    run trains on those, then draws on: the rows trained over the run (the completions table logs the groups each
    step trained on, in fully_async mode) are the uninterrupted run's, none lost and none repeated. Which step a
    group goes into depends on when it finished, so the rows are compared over the run, not per step."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    base = [*common, "run.save_every=2", "run.async_mode=fully_async", "run.steps=5", "run.log_completions_every=1",
            "run.log_completions=8", "run.export=false", "run.tensorboard=false"]
    rl_train("--config", "configs/tiny_cpu.yaml", *base, f"run.dir={straight}")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, "3", *base, f"run.dir={resumed}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]
    rl_train("--config", "configs/tiny_cpu.yaml", *base, f"run.dir={resumed}", "--resume")

    def rows_per_step(run: Path) -> dict[int, list]:
        out: dict[int, list] = {}
        for line in (run / "completions.jsonl").read_text().splitlines():
            entry = json.loads(line)
            out.setdefault(entry["step"], []).append(entry["row"])
        return out

    a, b = rows_per_step(straight), rows_per_step(resumed)
    assert sorted(a) == [1, 2, 3, 4, 5] and all(len(rows) == 8 for rows in a.values())
    assert b.keys() == a.keys() and all(len(rows) == 8 for rows in b.values())  # (the killed run's step 3: dropped)
    trained = sorted(row for rows in a.values() for row in set(rows))  # 2 groups a step, 4 samples each
    assert len(trained) == 10 and len(set(trained)) == 10  # no row twice within the run (32 rows, 10 drawn)
    assert sorted(row for rows in b.values() for row in set(rows)) == trained
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("mode", ["off", "one_step_off", "fully_async"])
def test_learning_run_reward_rises(tiny_ckpt, tmp_path, mode):
    run = tmp_path / "learn"
    rl_train("--config", "configs/learn_cpu.yaml", f"model.path={tiny_ckpt}", f"data.path={tmp_path / 'arith.jsonl'}",
             f"run.dir={run}", "run.progress=false", "run.tensorboard=false", "run.export=false",
             f"run.async_mode={mode}")
    rows = metrics(run)
    if mode == "fully_async":  # full weights load into the engine while it generates: samples span versions
        assert max(r["staleness/max"] for r in rows) == 1 and max(r["staleness/versions_per_sample_max"]
                                                                    for r in rows) >= 2
    else:
        assert [r["staleness/max"] for r in rows][:2] == ([0, 1] if mode == "one_step_off" else [0, 0])
    rewards = [r["reward/mean"] for r in rows]
    first, last = statistics.fmean(rewards[:5]), statistics.fmean(rewards[-5:])
    assert last - first >= 0.2, rewards


def test_fully_async_runs_on_the_tiny_config_with_its_defaults(common, tmp_path):
    """LoRA (the tiny config's): an adapter loads once the engine is between batches, not in flight."""
    run = tmp_path / "async"
    rl_train("--config", "configs/tiny_cpu.yaml", *common, f"run.dir={run}", "run.async_mode=fully_async")
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["staleness/max"] <= 1 for r in rows)
    assert all(r["staleness/dropped"] == 0 and r["groups"] == 2 for r in rows) and (run / "export").is_dir()
    assert all(0 <= r["time/idle_share"] == r["time/idle_share_max"] <= 1 for r in rows)  # one worker


def test_dynamic_sampling_drops_zero_variance_groups_and_refills(common, tmp_path):
    """A reward that is 0 for every sample (its one part has weight 0): every group has zero variance, all are
    dropped, the batch is refilled up to the bound, and the step goes on without an update rather than failing; a run
    in which no step updated the policy then ends with an error, not exit 0."""
    run = tmp_path / "dyn"
    proc = rl_train("--config", "configs/tiny_cpu.yaml", *common, f"run.dir={run}", "run.steps=1",
                    "run.export=false", "algo.dynamic_sampling=true", "algo.max_refill_rounds=2",
                    "reward.combine.parts={acc: acc}", "reward.combine.weights={acc: 0.0}",
                    "reward.combine.group_normalize=[]", check=False)
    assert proc.returncode == 1 and "rl-train: error: no step of this run updated the policy" in proc.stderr
    assert "Traceback" not in proc.stderr
    [row] = metrics(run)
    assert row["dynamic/refill_rounds"] == 2
    # each round over-provisions (algo.oversample, 1.5 by default): ceil(2 prompts x 1.5) x (1 + refill rounds)
    assert row["dynamic/groups_dropped"] == row["dynamic/groups_generated"] == 3 * 3
    assert row["dynamic/groups_aborted"] == 0  # the batch never filled: nothing to abort
    assert row["groups"] == 0 and row["reward/mean"] == 0.0
    assert row["policy_version"] == 0  # no samples with signal: no update


def test_three_steps_on_the_video_demo_set_and_rl_eval_per_mode(tiny_ckpt, tmp_path):
    """Video rows end to end: the moving_shape demo set (built on first use) trains with this project's vLLM class
    (rollout.video: on by itself for video data), and rl-eval evaluates the run on it in both modes."""
    data, run = tmp_path / "moving_shape.jsonl", tmp_path / "video"
    rl_train("--config", "configs/tiny_cpu.yaml", f"model.path={tiny_ckpt}", f"data.path={data}",
             "data.demo=moving_shape", "data.demo_rows=12", f"run.dir={run}", "run.steps=3", "run.progress=false",
             "run.tensorboard=false", "run.export=false", "rollout.prompts_per_step=2", "rollout.n=2")
    rows = metrics(run)
    assert len(rows) == 3 and all(r["failed_requests"] == 0 for r in rows)
    assert any(r.get("loss") is not None for r in rows)
    exe = Path(sys.executable).parent / "rl-eval"
    last = sorted((run / "checkpoints").glob("step-*"))[-1]
    proc = subprocess.run([str(exe), "--checkpoint", str(last), "--data", str(data), "--out", str(tmp_path / "eval"),
                           "--max-rows", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert set(summary["modes"]) == {"short", "long"} and summary["data"]["rows"] == 2
    records = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert records and all(r["error"] is None for r in records)
