"""Mode compliance, per-mode summaries and what rl-eval evaluates: pure functions, no engine."""

import json

import pytest

from rl.evaluation import EvalSettings, complies, find_targets, flat_metrics, summarize, thinks
from rl.evaluation.targets import run_config


@pytest.mark.parametrize("text, mode, ok, reasons", [
    ("42", "short", True, False),
    ("<think>hmm</think>42", "short", False, True),
    ("first 2+2, then</think>\n\n4", "long", True, True),
    ("reasoning that never ends", "long", False, True),
    ("</think>4", "long", True, False),             # closed at once: complies, but did not reason
    ("a</think>b</think>c", "long", False, True),   # a second think block
    ("4", "auto", True, False),
    ("<think>\n\n</think>\n\n4", "auto", True, False),  # an empty think block: chose not to think
    ("<think>so 2+2=4</think>4", "auto", True, True),
    ("<think>so 2+2", "auto", False, True),          # cut off while thinking
    ("</think><think>", "auto", False, False),
])
def test_mode_rules(text, mode, ok, reasons):
    assert complies(text, mode) is ok
    assert thinks(text, mode) is reasons


def record(mode, tokens, correct, reward=1.0, error=None, row="r0", truncated=False, text="x"):
    return {"mode": mode, "tokens": tokens, "correct": correct, "reward": reward, "error": error, "row_id": row,
            "truncated": truncated, "compliant": complies(text, mode), "thinks": thinks(text, mode)}


def test_summary_per_mode():
    records = [record("short", t, c, row=f"r{i}") for i, (t, c) in enumerate([(10, 1.0), (20, 0.0), (30, 1.0),
                                                                               (40, 1.0)])]
    records += [record("long", 100, 1.0, text="a</think>b"), record("long", 300, 0.0, truncated=True, text="a"),
                record("long", 0, None, reward=None, error="RuntimeError: boom")]
    s = summarize(records, ["short", "long"])
    assert list(s) == ["short", "long"]
    assert s["short"]["accuracy"] == 0.75 and s["short"]["tokens_mean"] == 25 and s["short"]["rows"] == 4
    assert s["short"]["tokens_p50"] == 25 and s["short"]["tokens_p90"] == pytest.approx(37)
    assert s["short"]["compliance_rate"] == 1.0 and s["short"]["think_rate"] == 0.0
    # the failed request is counted, not averaged in
    assert s["long"]["failed"] == 1 and s["long"]["samples"] == 3 and s["long"]["tokens_mean"] == 200
    assert s["long"]["accuracy"] == 0.5 and s["long"]["truncation_rate"] == 0.5 and s["long"]["compliance_rate"] == 0.5
    flat = flat_metrics(s)
    assert flat["eval/accuracy/short"] == 0.75 and flat["eval/reward/long/mean"] == 1.0
    assert flat["eval/tokens/long/p90"] == s["long"]["tokens_p90"] and "eval/compliance/short" in flat


def test_summary_without_an_accuracy_part():
    s = summarize([record("short", 5, None)], ["short"])["short"]
    assert s["accuracy"] is None and s["reward_mean"] == 1.0
    assert "eval/accuracy/short" not in flat_metrics({"short": s})


def test_settings_are_checked():
    with pytest.raises(ValueError, match="modes"):
        EvalSettings(modes=["short", "fast"])
    with pytest.raises(ValueError, match="n=0"):
        EvalSettings(n=0)
    assert EvalSettings(modes=["long", "short", "long"]).modes == ["long", "short"]


def write_run(tmp_path, tiny_ckpt, lora=True, extra=False):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model: {{path: {tiny_ckpt}}}\ndata: {{path: x.jsonl}}\n")
    for step in (10, 2):
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        inner = ckpt / ("adapter" if lora else "policy")
        inner.mkdir(parents=True)
        (inner / "adapter_config.json").write_text(json.dumps({"r": 8}))
        if extra:
            (ckpt / "extra").mkdir()
    return run


def test_targets_of_a_run_directory_in_step_order(tmp_path, tiny_ckpt):
    run = write_run(tmp_path, tiny_ckpt)
    targets, cfg = find_targets(run)
    assert [(t.name, t.step) for t in targets] == [("base", 0), ("step-000002", 2), ("step-000010", 10)]
    assert all(t.base == tiny_ckpt for t in targets) and targets[1].adapter.name == "adapter"
    assert targets[1].lora_rank == 8 and cfg.model.path == str(tiny_ckpt)
    assert [t.step for t in find_targets(run, include_base=False)[0]] == [2, 10]
    [one], _ = find_targets(run / "checkpoints" / "step-000002")
    assert one.step == 2 and one.adapter is not None
    [model], cfg = find_targets(tiny_ckpt)
    assert model.base == tiny_ckpt and model.adapter is None and model.weights is None


def test_full_weight_checkpoints_replace_the_weights(tmp_path, tiny_ckpt):
    run = write_run(tmp_path, tiny_ckpt, lora=False)
    targets, _ = find_targets(run, include_base=False)
    assert all(t.weights is not None and t.adapter is None for t in targets)


@pytest.mark.parametrize("case, message", [
    ("nothing", "not a checkpoint directory"),
    ("extra", "evaluate the run's export/"),
    ("no-config", "config.yaml: not found"),
    ("missing-base", "model.path=/nowhere: no checkpoint there"),
])
def test_target_errors_name_the_path(tmp_path, tiny_ckpt, case, message):
    if case == "nothing":
        path = tmp_path
    elif case == "extra":
        path = write_run(tmp_path, tiny_ckpt, extra=True)
    else:
        path = write_run(tmp_path, tiny_ckpt)
        if case == "no-config":
            (path / "config.yaml").unlink()
        else:
            (path / "config.yaml").write_text("model: {path: /nowhere}\ndata: {path: x.jsonl}\n")
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        find_targets(path)
    assert run_config(tmp_path / "absent") is None
