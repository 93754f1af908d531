"""Failures that used to vanish, through the real `rl-train`: each is counted, logged and, when it leaves nothing to
learn from, ends the run with one line and a non-zero exit."""

import json

import pytest

from tests.rl.test_train_e2e import metrics, rl_train

pytestmark = pytest.mark.vllm
PLUGINS = "tests/rewards/plugins_for_tests.py"


@pytest.fixture(scope="module")
def base(tiny_ckpt, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "count_shapes.jsonl"
    return ["--config", "configs/tiny_cpu.yaml", f"model.path={tiny_ckpt}", f"data.path={data}",
            "data.demo_rows=16", "run.progress=false", "run.tensorboard=false", "run.export=false",
            "rollout.prompts_per_step=2", "rollout.n=2", "reward.timeout_s=2"]


def test_a_reward_part_that_always_fails_is_counted_then_stops_the_run(base, tmp_path):
    run = tmp_path / "run"
    proc = rl_train(*base, f"run.dir={run}", "run.steps=4", "reward.max_failed_steps=2",
                    "reward.combine.parts={acc: acc, broken: " + PLUGINS + ":raises}",
                    "reward.combine.weights={acc: 1.0, broken: 1.0}", "reward.combine.group_normalize=[]",
                    "reward.combine.none_policy=zero", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rl-train: error: reward part 'broken'") and "every row of 2 steps in a row" in last
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("reward part 'broken': first error") == 1  # the first message, once
    [row] = metrics(run)  # step 1 logged; step 2 stopped the run
    assert row["reward/errors/broken"] == 2 * 2 and row["reward/errors/acc"] == 0  # every row of the step


def test_a_prompt_over_the_context_is_a_bad_row(base, tmp_path):
    """A prompt the engine's context cannot hold (with its mode's budget) is a bad row at load, before anything
    starts: named under data.on_bad_row=fail, and with every row such a row, one line that no row is valid."""
    tight = ["rollout.max_model_len=60", "rollout.short.max_new_tokens=8", "rollout.long.max_new_tokens=8",
             "rollout.auto.max_new_tokens=8"]  # every image prompt is longer than 60 - 8 tokens
    failing = rl_train(*base, *tight, f"run.dir={tmp_path / 'fail'}", "run.steps=1", "data.on_bad_row=fail",
                       check=False)
    assert failing.returncode == 1 and "Traceback" not in failing.stderr
    last = failing.stderr.strip().splitlines()[-1]
    assert last.startswith("rl-train: error: ") and "count_shapes.jsonl: row " in last
    assert "> data.max_prompt_tokens=52" in last
    skipping = rl_train(*base, *tight, f"run.dir={tmp_path / 'skip'}", "run.steps=1", check=False)
    last = skipping.stderr.strip().splitlines()[-1]
    assert skipping.returncode == 1 and last.startswith("rl-train: error: ") and "0 valid rows" in last
    assert not (tmp_path / "skip" / "metrics.jsonl").exists()  # no step ran


def test_resume_logs_each_step_once(base, tmp_path):
    run = tmp_path / "run"
    rl_train(*base, f"run.dir={run}", "run.steps=2", "run.save_every=1")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines + [json.dumps({"step": 3, "stale": True})]) + "\n")
    rl_train(*base, f"run.dir={run}", "run.steps=3", "run.save_every=1", "--resume")
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and "stale" not in rows[-1]
