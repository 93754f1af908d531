"""The trainer on the fake rollout backend (no Ray, no vLLM): a full step with the real learner in seconds, and
dynamic sampling that over-provisions: the first groups with reward variance fill the batch, the rest are aborted."""

import random
import statistics

import pytest

import rl.trainer as trainer_module
from rl.config import ConfigError, load
from rl.trainer import Trainer
from rollouts.fake import FakeBackend
from rollouts.local import LocalPool


def config(tmp_path, ckpt, *extra):
    return load("configs/tiny_cpu.yaml", [
        f"run.dir={tmp_path / 'run'}", "run.steps=1", "run.export=false", "run.progress=false",
        "run.tensorboard=false", "run.save_every=0", f"data.path={tmp_path / 'd.jsonl'}", "data.demo_rows=40",
        "rollout.prompts_per_step=4", "rollout.n=4", "reward.workers=1", f"model.path={ckpt}", *extra])


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(trainer_module, "start_ray", lambda cfg: pytest.fail("the trainer started Ray"))
    monkeypatch.setattr(trainer_module, "RolloutPool", lambda *a, **k: pytest.fail("the trainer built a Ray pool"))


def test_a_full_step_with_the_real_learner_on_the_fake_backend(tiny_ckpt, tmp_path, no_ray):
    import ray

    backend = FakeBackend(str(tiny_ckpt))
    history = Trainer(config(tmp_path, tiny_ckpt), pool=LocalPool(backend)).fit()
    [step] = history
    assert step["loss"] is not None and step["groups"] == 4 and step["failed_requests"] == 0
    assert [(kind, version) for kind, version, _ in backend.loads] == [("lora", 1)]  # the new adapter was synced
    assert {"reward/short/mean", "reward/long/mean"} <= set(step)
    # what TRL and verl users read, each under one name
    assert {"advantage/mean", "advantage/std", "tokens/generated", "tokens/total", "tokens/per_s", "reward/std",
            "reward/min", "reward/max", "frac_reward_zero_std", "tokens/prompt/mean", "learner/approx_kl_k3",
            "memory/trainer_peak_mb", "memory/learner_peak_mb", "entropy", "clip_fraction"} <= set(step)
    assert step["memory/learner_peak_mb"] > 100  # the learner's process holds the model: not a zero or a count
    assert not {"learner/loss", "learner/entropy", "learner/clip_frac"} & set(step)
    assert step["tokens/total"] == step["tokens/generated"] > 0 and step["frac_reward_zero_std"] == 0.0
    assert not ray.is_initialized()


def collect_once(tmp_path, ckpt, respond, oversample: float):
    """Step 0's batch with dynamic sampling over-provisioned, on the fake backend at 5 ms per token."""
    backend = FakeBackend(str(ckpt), respond=respond, seconds_per_token=0.005)
    trainer = Trainer(config(tmp_path, ckpt, "algo.dynamic_sampling=true", f"algo.oversample={oversample}"),
                      pool=LocalPool(backend))
    try:
        return trainer.collector.collect(0), backend
    finally:
        trainer.close()


def slow_signal_fast_no_signal(request, index, rng: random.Random) -> str:
    """Long mode: quickly, always right (no reward variance). Short mode: slowly, right every other sample."""
    if request.mode == "long":
        return f"</think>\n\n\\boxed{{{request.meta['answer']}}}"
    answer = request.meta["answer"] if index % 2 == 0 else "no idea"
    return "Counting the shapes one by one, carefully, " * 3 + f"\\boxed{{{answer}}}"


def test_over_provisioned_dynamic_sampling_keeps_groups_with_signal_in_submission_order_and_aborts_the_rest(
        tiny_ckpt, tmp_path, no_ray):
    batch, backend = collect_once(tmp_path, tiny_ckpt, slow_signal_fast_no_signal, oversample=3)
    submitted = [r.request for r, _, _ in batch.seen]
    assert len(batch.kept) == 4 and batch.refills == 0  # 12 submitted; the batch filled in the first round
    shorts = sorted((r for r in submitted if r.mode == "short"), key=lambda r: int(r.request_id.split("-")[-1]))
    assert [r.request.request_id for r, _, _ in batch.kept] == [r.request_id for r in shorts[:4]]
    assert batch.dropped == sum(r.mode == "long" for r in submitted) > 0  # no variance: dropped
    assert batch.aborted == 12 - len(batch.seen) > 0  # still running once the batch was full: never scored
    assert backend.in_flight() == 0


def all_signal_long_is_slow(request, index, rng: random.Random) -> str:
    answer = request.meta["answer"] if index % 2 == 0 else "no idea"
    words = 60 if request.mode == "long" else 1
    return "</think>\n\n" * (request.mode == "long") + "word " * words + f"\\boxed{{{answer}}}"


def test_over_provisioning_does_not_favour_groups_that_finish_first(tiny_ckpt, tmp_path, no_ray):
    """Every group has signal, long ones take longer: the kept groups are the first submitted, long ones
    included, not the fastest (which would bias the update toward short completions and short mode)."""
    batch, _ = collect_once(tmp_path, tiny_ckpt, all_signal_long_is_slow, oversample=2)
    kept = [r.request for r, _, _ in batch.kept]
    assert [r.request_id for r in kept] == [f"s0-0-{i}" for i in range(4)]
    assert batch.dropped == 0 and batch.aborted + batch.surplus + 4 == 8 and batch.aborted > 0
    assert "long" in {r.mode for r in kept}  # although every short group finished before any long one


def test_without_over_provisioning_refill_rounds_fill_the_batch(tiny_ckpt, tmp_path, no_ray):
    cfg = config(tmp_path, tiny_ckpt, "algo.dynamic_sampling=true", "algo.oversample=1", "algo.max_refill_rounds=5")
    trainer = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=slow_signal_fast_no_signal)))
    batch = trainer.collector.collect(0)
    trainer.close()
    assert batch.aborted == 0 and batch.refills >= 1 and len(batch.kept) >= 4
    assert all(result.request.mode == "short" for result, _, _ in batch.kept)


def test_oversample_without_dynamic_sampling_is_a_config_error(tiny_ckpt, tmp_path):
    with pytest.raises(ConfigError, match=r"algo.oversample=1.5 acts only with algo.dynamic_sampling=true"):
        config(tmp_path, tiny_ckpt, "algo.oversample=1.5")


def test_rl_eval_samples_with_any_backend(tiny_ckpt, tmp_path):
    """rl-eval takes the backend class; the fake one answers right half the time, so accuracy is in (0, 1)."""
    from rl.data.demo import write_demo
    from rl.evaluation.run import EvalSettings, run_eval

    data = write_demo("count_shapes", tmp_path / "d.jsonl", rows=6)
    summary = run_eval(tiny_ckpt, data, tmp_path / "eval", EvalSettings(n=4, progress=False), backend=FakeBackend)
    assert set(summary["modes"]) == {"short", "long"}
    for mode in ("short", "long"):
        assert 0 < summary["modes"][mode]["accuracy"] < 1
    assert (tmp_path / "eval" / "results.jsonl").is_file()


def test_rl_eval_without_data_evaluates_the_runs_held_out_rows_and_says_so(tiny_ckpt, tmp_path, no_ray):
    import json

    from rl.evaluation.run import EvalSettings, run_eval

    cfg = config(tmp_path, tiny_ckpt, "run.eval_every=1", "run.eval_rows=4", "run.save_every=1")
    Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    run = tmp_path / "run"
    trained_on = {json.loads(line)["row_id"] for line in (run / "eval.jsonl").read_text().splitlines()}
    summary = run_eval(run, None, tmp_path / "eval", EvalSettings(progress=False), backend=FakeBackend)
    assert summary["data"]["rows"] == 4 and "the run's 4 held-out rows" in summary["data"]["used"]
    evaluated = {json.loads(line)["row_id"] for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()}
    assert evaluated == trained_on and len(evaluated) == 4  # the rows the trainer held out and evaluated

    cfg = config(tmp_path, tiny_ckpt, f"run.dir={tmp_path / 'plain'}")  # no held-out rows: its data, --max-rows
    Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    summary = run_eval(tmp_path / "plain", None, tmp_path / "eval2", EvalSettings(max_rows=3, progress=False),
                       backend=FakeBackend)
    assert summary["data"]["rows"] == 3 and "the first 3 rows of the run's data" in summary["data"]["used"]
    with pytest.raises(ValueError, match="not part of a run .* so --data is needed"):
        run_eval(tiny_ckpt, None, tmp_path / "eval3", EvalSettings(progress=False), backend=FakeBackend)



def test_a_plugin_listed_once_is_a_row_verifier_by_path_and_by_its_registered_name(tiny_ckpt, tmp_path, no_ray):
    """REWARDS.md section 3: the plugin is listed in data.allowed_rewards alone; rows name it by its path or by the
    name it registers, the data check and the acc part agree, and every row is scored (no reward error)."""
    import json

    plugin = tmp_path / "myrewards" / "year.py"
    plugin.parent.mkdir()
    plugin.write_text('from rewards.api import register_reward\n\n\n'
                      '@register_reward("release_year")\n'
                      'def year(sample):\n'
                      '    return 1.0 if sample.reference in sample.answer_text else 0.0\n')
    rows = [{"question": f"Which year? {i}", "answer": "1969", "reward": "release_year" if i % 2 else f"{plugin}:year"}
            for i in range(8)]
    (tmp_path / "years.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = FakeBackend(str(tiny_ckpt))  # every other sample answers the reference
    cfg = config(tmp_path, tiny_ckpt, f"data.path={tmp_path / 'years.jsonl'}",
                 f"data.allowed_rewards=[math, {plugin}:year]", "data.on_bad_row=fail",
                 "reward.combine.parts={acc: acc}", "reward.combine.weights={acc: 1.0}", "reward.combine.group_normalize=[]")
    from rl.preflight import preflight

    assert preflight(cfg) == []
    [step] = Trainer(cfg, pool=LocalPool(backend)).fit()
    assert step["reward/errors/acc"] == 0 and step["data/bad_rows"] == 0
    assert step["reward/mean"] == pytest.approx(0.5) and step["loss"] is not None  # half right, every row scored
    bad = config(tmp_path, tiny_ckpt, f"data.path={tmp_path / 'years.jsonl'}", "data.on_bad_row=fail")
    with pytest.raises(Exception, match="row 1: field 'reward': .*year.py:year' is not a reward rows may name"):
        Trainer(bad, pool=LocalPool(backend))


def test_callbacks_see_every_step_and_the_end_and_data_seed_is_honoured(tiny_ckpt, tmp_path, no_ray):
    class Recorder:
        def __init__(self):
            self.steps, self.ended = [], None

        def on_step_end(self, step, metrics):
            self.steps.append((step, metrics["reward/mean"]))

        def on_train_end(self, history):
            self.ended = len(history)

    plain = []
    recorder = Recorder()
    trainer = Trainer(config(tmp_path, tiny_ckpt, "run.steps=2", "run.seed=3"), pool=LocalPool(FakeBackend(str(tiny_ckpt))),
                      callbacks=[recorder, lambda step, metrics: plain.append(step)])
    assert trainer.dataset.seed == 3  # data.seed unset: run.seed
    history = trainer.fit()
    assert [s for s, _ in recorder.steps] == [1, 2] == plain and recorder.ended == 2
    assert [r for _, r in recorder.steps] == [h["reward/mean"] for h in history]
    seeded = Trainer(config(tmp_path / "b", tiny_ckpt, "run.seed=3", "data.seed=11"),
                     pool=LocalPool(FakeBackend(str(tiny_ckpt))))
    try:
        assert seeded.dataset.seed == 11
    finally:
        seeded.close()


def test_an_advantage_estimator_of_ones_own_named_by_path(tiny_ckpt, tmp_path, no_ray):
    """algo.advantage names a function in a file, with the built-ins' signature: rl-train's config loads it (and
    refuses a path that does not), and the trainer uses it."""
    from rl.config import ConfigError

    algos = tmp_path / "my_algos.py"
    algos.write_text("import torch\n\nCALLS = []\n\n\n"
                     "def centered(rewards, group_index, *, eps=1e-6):\n"
                     "    CALLS.append(len(rewards))\n"
                     "    means = torch.zeros_like(rewards).index_reduce_(0, group_index, rewards, 'mean',"
                     " include_self=False)\n"
                     "    return rewards - means[group_index]\n")
    cfg = config(tmp_path, tiny_ckpt, f"algo.advantage={algos}:centered")
    assert cfg.algo.advantage == f"{algos}:centered"
    [step] = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    from core.plugins import load_callable

    assert load_callable(f"{algos}:CALLS") == [16]  # 4 prompts x 4 samples, one call
    assert step["advantage/mean"] == pytest.approx(0.0, abs=1e-6) and step["loss"] is not None
    with pytest.raises(ConfigError, match=r"algo\.advantage: .*nope\.py:centered.*does not load"):
        config(tmp_path, tiny_ckpt, "algo.advantage=nope.py:centered")


def test_sampled_completions_are_logged_every_n_steps_and_wandb_gets_project_name_and_tags(tiny_ckpt, tmp_path,
                                                                                          no_ray, monkeypatch):
    import json
    import sys
    import types

    inits, logged = [], []
    fake_wandb = types.SimpleNamespace(
        init=lambda **kw: inits.append(kw) or types.SimpleNamespace(log=lambda d, step: logged.append((step, d)),
                                                                    finish=lambda: None),
        Table=lambda columns, data: ("table", columns, data))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    cfg = config(tmp_path, tiny_ckpt, "run.steps=2", "run.log_completions_every=2", "run.log_completions=3",
                 "run.tensorboard=true", "run.wandb=true", "run.project=hybrid", "run.tags=[tiny, ci]")
    Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert inits[0]["project"] == "hybrid" and inits[0]["name"] == "run" and inits[0]["tags"] == ["tiny", "ci"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2]  # step 2 only, 3 samples
    assert all(r["completion"] and "<|im_start|>" in r["prompt"] and r["mode"] in ("short", "long") for r in rows)
    tables = [d["completions"] for _, d in logged if "completions" in d]
    assert len(tables) == 1 and tables[0][1] == ["mode", "reward", "prompt", "completion"] and len(tables[0][2]) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert any("completions" in tag for tag in events.Tags()["tensors"])


def test_a_trl_style_reward_function_scores_rows_in_rl_train_and_rl_reward(tiny_ckpt, tmp_path, no_ray):
    """TRL's signature, `f(prompts, completions, completion_ids, **kwargs) -> list[float]`, found by its names: the
    rows' reference comes as `answer`, their meta keys as columns; it is a reward part of a run and rl-reward's NAME."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    plugin = tmp_path / "trl_rewards.py"
    plugin.write_text("def boxed_answer(prompts, completions, completion_ids, answer, **kwargs):\n"
                      "    assert len(prompts) == len(completions) == len(completion_ids) == len(answer)\n"
                      "    assert all(p and '<|im_start|>' in p for p in prompts) and all(completion_ids)\n"
                      "    return [1.0 if f'{{{a}}}' in c else 0.0 for c, a in zip(completions, answer)]\n")
    cfg = config(tmp_path, tiny_ckpt, f"reward.combine.parts={{acc: '{plugin}:boxed_answer'}}",
                 "reward.combine.weights={acc: 1.0}", "reward.combine.group_normalize=[]")
    [step] = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert step["reward/errors/acc"] == 0 and step["reward/mean"] == pytest.approx(0.5)  # every other sample right
    # the same function as the rows' verifier, listed once, behind the acc part
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": f"{i} + 3?", "answer": str(i + 3)}) + "\n"
                                              for i in range(8)))
    verifier = config(tmp_path / "v", tiny_ckpt, f"data.path={tmp_path / 'q.jsonl'}",
                      f"data.allowed_rewards=[math, '{plugin}:boxed_answer']",
                      f"data.default_reward='{plugin}:boxed_answer'", "reward.combine.parts={acc: acc}",
                      "reward.combine.weights={acc: 1.0}", "reward.combine.group_normalize=[]")
    [step] = Trainer(verifier, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert step["reward/errors/acc"] == 0 and step["reward/mean"] == pytest.approx(0.5)

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"completion": "so \\boxed{7}", "answer": "7", "meta": {"prompt": "<|im_start|>x",
                                                                                       "completion_ids": [1]}}) + "\n")
    out = subprocess.run([sys.executable, "-m", "rewards.cli", f"{plugin}:boxed_answer", "--input", str(rows)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["score"] == 1.0


def parts_config(tmp_path, ckpt, plugin_body: str, *extra):
    plugin = tmp_path / "constant.py"
    plugin.write_text(plugin_body)
    return config(tmp_path, ckpt, f"reward.combine.parts={{acc: acc, mine: {plugin}:score}}",
                  "reward.combine.weights={acc: 1.0, mine: 1.0}", "reward.combine.group_normalize=[]", *extra)


def test_a_reward_part_that_never_scores_stops_the_run_as_one_that_raises(tiny_ckpt, tmp_path, no_ray):
    from rl.errors import RewardFailure

    cfg = parts_config(tmp_path, tiny_ckpt, "def score(sample):\n    return None\n", "run.steps=4",
                       "reward.max_failed_steps=2")
    with pytest.raises(RewardFailure, match=r"reward part 'mine' .* failed on every row of 2 steps in a row "
                                            r"\(reward.max_failed_steps\): it returned None \(no score\) for all 16 "
                                            r"rows"):
        Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt)))).fit()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1  # stopped in step 2


def test_a_run_whose_every_gradient_is_zero_says_it_moved_nothing(tiny_ckpt, tmp_path, no_ray, caplog):
    """Every sample of every group gets the same reward: every advantage is 0, the loss is 0.0 and nothing moves.
    The run ends (a short run on a model that gets nothing right is a legitimate run) and says so at the end."""
    import logging

    cfg = config(tmp_path, tiny_ckpt, "run.steps=2", "reward.combine.parts={format: format}",
                 "reward.combine.weights={format: 1.0}", "reward.combine.group_normalize=[]")
    backend = FakeBackend(str(tiny_ckpt), respond=lambda request, k, rng: "42")  # the same text for every sample
    with caplog.at_level(logging.WARNING, logger="rl.trainer"):
        history = Trainer(cfg, pool=LocalPool(backend)).fit()
    assert all(h["learner/grad_norm"] == 0 and h["frac_reward_zero_std"] == 1.0 for h in history)
    assert "no step of this run moved the policy: every gradient was 0" in caplog.text


def thinking_helps_on_hard_rows(request, index, rng):
    """Long mode is right on every row and spends ~60 more tokens; short mode is right on easy rows only."""
    answer = str(request.meta["answer"])
    if request.mode == "long":
        return "Let me add them up one by one. " * 10 + f"</think>\n\nThe answer is \\boxed{{{answer}}}."
    right = "hard" not in str(request.meta["source"]) or index % 4 == 0
    return f"The answer is \\boxed{{{answer if right else 'no idea'}}}."


def test_paired_groups_measure_the_benefit_and_the_benefit_schedule_follows_it(tiny_ckpt, tmp_path, no_ray):
    """Paired prompts give each row's benefit of thinking (reward gained minus the price of the extra tokens); under
    `modes.schedule=benefit` the hard rows, where thinking pays, go long far more often than the easy ones, where it
    only costs tokens; the estimates are in the checkpoint, so a resumed run continues exactly."""
    import json

    for name in ("hard", "easy"):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": f"{name}-{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
            for i in range(8)))
    settings = [f"data.path=[{tmp_path / 'hard.jsonl'}, {tmp_path / 'easy.jsonl'}]", "data.demo=null",
                "reward.combine.parts={acc: acc}", "reward.combine.weights={acc: 1.0}",
                "reward.combine.group_normalize=[]", "data.default_reward=number", "modes.schedule=benefit",
                "modes.paired_fraction=0.5", "modes.token_cost=0.5", "rollout.prompts_per_step=8", "run.steps=4",
                "run.save_every=2", "run.keep_checkpoints=5"]
    backend = FakeBackend(str(tiny_ckpt), respond=thinking_helps_on_hard_rows)
    trainer = Trainer(config(tmp_path, tiny_ckpt, *settings), pool=LocalPool(backend))
    history = trainer.fit()
    hard = [v for k, v in trainer.benefit.prompts.items() if k.startswith("hard")]
    easy = [v for k, v in trainer.benefit.prompts.items() if k.startswith("easy")]
    assert hard and easy and min(hard) > 0.3 and max(easy) < 0  # +0.75 reward - 0.03 tokens; -0.03
    assert all(h["mode/paired"] >= 3 and h["groups"] > 8 for h in history)  # a pair is two groups of n/2
    late = history[-2:]
    share = {s: statistics.fmean(h[f"mode/long_share/source/{s}.jsonl"] for h in late) for s in ("hard", "easy")}
    assert share["hard"] > share["easy"] + 0.2, share  # paired halves count half each way
    assert all(h["mode/benefit/max"] > 0.3 and h["mode/benefit/min"] < 0.3 for h in history[1:])
    # resume from step 2: the tracker comes back with the data position, and the run continues as it went
    cut = config(tmp_path, tiny_ckpt, *settings)
    cut.run.dir = str(tmp_path / "cut")
    cut.run.steps = 2
    Trainer(cut, pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=thinking_helps_on_hard_rows))).fit()
    cut.run.steps = 4
    resumed = Trainer(cut, resume=True, pool=LocalPool(FakeBackend(str(tiny_ckpt),
                                                                   respond=thinking_helps_on_hard_rows)))
    rest = resumed.fit()
    assert resumed.benefit == trainer.benefit
    assert [h["mode/long_share"] for h in rest] == [h["mode/long_share"] for h in history[2:]]


def test_auto_mode_prompts_log_how_often_the_model_thinks_and_train_the_choice_apart(tiny_ckpt, tmp_path, no_ray):
    def half_think(request, index, rng):
        answer = str(request.meta["answer"]) if index % 4 < 3 else "no idea"
        text = f"The answer is \\boxed{{{answer}}}."
        return f"<think>\nAdding up.\n</think>\n\n{text}" if index % 2 == 0 else text

    cfg = config(tmp_path, tiny_ckpt, "modes.auto_fraction=1.0", "algo.choice_weight=1.0", "run.steps=2")
    history = Trainer(cfg, pool=LocalPool(FakeBackend(str(tiny_ckpt), respond=half_think))).fit()
    for h in history:
        assert h["think_rate/auto"] == 0.5 and h["mode/long_share"] == 0.0
        assert h["think_rate/auto/source/d.jsonl"] == 0.5
        assert h["learner/choice_loss"] != 0.0 and h["learner/grad_norm"] > 0
    with pytest.raises(ConfigError, match=r"algo\.choice_weight weighs the auto-mode choice token, and no prompt can "
                                          r"be in auto mode"):
        config(tmp_path, tiny_ckpt, "algo.choice_weight=1.0", "modes.respect_data_mode=false")


def first_four_quick(request, index, rng: random.Random) -> str:
    """Every group has signal; a round's first four groups (and resumed ones) are quick, the others use their whole
    budget."""
    answer = request.meta["answer"] if index % 2 == 0 else "no idea"
    position = request.request_id.split("-")[-1]
    slow = position.isdigit() and int(position) >= 4
    return "</think>\n\n" * (request.mode == "long") + "word " * (100 if slow else 1) + f"\\boxed{{{answer}}}"


def rows_of(results) -> list:
    return [(r.request.meta["source"], r.request.meta["row"]) for r in results]


def test_partial_rollouts_carry_the_interrupted_groups_and_resume_them_first(tiny_ckpt, tmp_path, no_ray):
    """Over-provisioned by 2, long groups slow: once the first 4 groups fill the batch, the groups still running are
    interrupted and carried with their tokens; the next step resumes them before drawing new rows (its first
    groups), and their samples go on from those tokens. Carried groups too old by the next turn are dropped."""
    backend = FakeBackend(str(tiny_ckpt), respond=first_four_quick, seconds_per_token=0.04)
    cfg = config(tmp_path, tiny_ckpt, "algo.dynamic_sampling=true", "algo.oversample=2", "rollout.partial_rollouts=true")
    trainer = Trainer(cfg, pool=LocalPool(backend))
    try:
        first = trainer.collector.collect(0, trained_at=0)
        carried = list(trainer.collector.carried)
        assert len(first.kept) == 4 and first.aborted == len(carried) > 0 and backend.in_flight() == 0
        assert all(r.partial and r.prompt is None for r in carried)
        assert any(s.cut_off and s.completion_token_ids for r in carried for s in r.samples)
        drawn = first.tokens_carried
        assert drawn == sum(len(s.completion_token_ids) for r in carried for s in r.samples) > 0

        second = trainer.collector.collect(1, trained_at=1)
        assert second.resumed == len(carried) and second.too_old == 0
        resumed = [r for r, _, _ in second.seen if r.request.resume is not None]
        assert sorted(rows_of(resumed)) == sorted(rows_of(carried))
        assert rows_of([r for r, _, _ in second.kept][:len(carried)]) == rows_of(carried)  # submitted first
        assert second.tokens_saved == drawn
        before = {(r.request.meta["row"], s.index): s for r in carried for s in r.samples}
        for result in resumed:
            for s in result.samples:
                prefix = before[(result.request.meta["row"], s.index)]
                assert s.completion_token_ids[:len(prefix.completion_token_ids)] == prefix.completion_token_ids
                assert not s.cut_off
        late = list(trainer.collector.carried)
        assert late, "the second step over-provisions too"
        third = trainer.collector.collect(5, trained_at=5)  # its carried groups are 4 versions old by now
        assert third.too_old == len(late) and third.resumed == 0
    finally:
        trainer.close()


def test_a_run_with_partial_rollouts_logs_them_and_checkpoints_the_carried_groups(tiny_ckpt, tmp_path, no_ray):
    import torch

    backend = FakeBackend(str(tiny_ckpt), respond=first_four_quick, seconds_per_token=0.04)
    cfg = config(tmp_path, tiny_ckpt, "algo.dynamic_sampling=true", "algo.oversample=2", "run.steps=2",
                 "run.save_every=1", "rollout.partial_rollouts=true")
    trainer = Trainer(cfg, pool=LocalPool(backend))
    history = trainer.fit()
    assert history[0]["rollout/partial_resumed"] == 0 < history[1]["rollout/partial_resumed"]
    assert history[1]["rollout/partial_tokens_saved"] > 0 and all(r["rollout/partial_too_old"] == 0 for r in history)
    assert all(r["loss"] is not None for r in history)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-000002" / "state.pt", weights_only=False)
    assert [r.request.request_id for r in saved["carried"]] == [r.request.request_id for r in trainer.collector.carried]
    resumed = Trainer(config(tmp_path, tiny_ckpt, "algo.dynamic_sampling=true", "algo.oversample=2", "run.steps=3",
                             "run.save_every=1", "rollout.partial_rollouts=true"), resume=True,
                      pool=LocalPool(FakeBackend(str(tiny_ckpt))))
    try:
        assert rows_of(resumed.collector.carried) == rows_of(saved["carried"]) != []
    finally:
        resumed.close()


@pytest.mark.parametrize("extra,match", [
    ([], r"rollout.partial_rollouts resumes the groups that over-provisioned dynamic sampling stops"),
    (["algo.dynamic_sampling=true", "algo.oversample=1"], r"set algo.dynamic_sampling=true \(algo.oversample > 1"),
    (["algo.dynamic_sampling=true", "algo.tis_cap=null"], r"it needs algo.tis_cap"),
])
def test_partial_rollouts_that_cannot_act_are_config_errors(tiny_ckpt, tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        config(tmp_path, tiny_ckpt, "rollout.partial_rollouts=true", *extra)
