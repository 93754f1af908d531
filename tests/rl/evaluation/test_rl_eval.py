"""The real `rl-eval` CLI on tiny-model runs: the summary, records and plots, curves over a run's checkpoints, and
one engine serving adapters and full weights exactly as the merged export."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.rl.test_train_e2e import rl_train

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).parents[3]


def rl_eval(*args, check=True):
    exe = Path(sys.executable).parent / "rl-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rl.evaluation.cli"]
    proc = subprocess.run(cmd + ["--quiet", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    """A LoRA run of 2 steps and a full-weight run of 1 step, a checkpoint after every step, and an eval set."""
    root = tmp_path_factory.mktemp("evalruns")
    data = root / "data" / "count_shapes.jsonl"
    common = ["--config", "configs/tiny_cpu.yaml", f"model.path={tiny_ckpt}", f"data.path={data}",
              "data.demo_rows=32", "run.progress=false", "run.tensorboard=false", "run.save_every=1",
              "run.keep_checkpoints=5", "rollout.prompts_per_step=2", "rollout.n=4"]
    rl_train(*common, f"run.dir={root / 'lora'}", "run.steps=2", "learner.lr=3e-2")
    rl_train(*common, f"run.dir={root / 'full'}", "run.steps=1", "learner.lora=false", "learner.lr=3e-3")
    evalset = data.parent / "eval.jsonl"
    evalset.write_text("".join(data.read_text().splitlines(keepends=True)[-6:]))
    return root, evalset


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


MODES = {"lora": "short,long,auto", "full": "short,long"}


@pytest.fixture(scope="module")
def evaluated(runs):
    """Each run directory (base model + every checkpoint, one engine) and each run's export, same seeds."""
    root, evalset = runs
    outs, stdout = {}, {}
    for run, modes in MODES.items():
        for what, path in (("run", root / run), ("export", root / run / "export")):
            out = outs[run, what] = root / f"eval-{run}-{what}"
            stdout[run, what] = rl_eval("--checkpoint", str(path), "--data", str(evalset), "--out", str(out),
                                        "--modes", modes, "--n", "2").stdout
    return outs, stdout


def test_run_directory_gives_per_mode_summary_records_plots_and_curves(runs, evaluated):
    root, evalset = runs
    out, stdout = evaluated[0]["lora", "run"], evaluated[1]["lora", "run"]
    summary = json.loads((out / "summary.json").read_text())
    assert [(c["name"], c["step"]) for c in summary["checkpoints"]] == [
        ("base", 0), ("step-000001", 1), ("step-000002", 2)]
    assert summary["modes"] == summary["checkpoints"][-1]["modes"]
    assert list(summary["modes"]) == ["short", "long", "auto"]
    for mode, s in summary["modes"].items():
        assert s["samples"] == 6 * 2 and s["failed"] == 0
        for key in ("accuracy", "tokens_mean", "tokens_p50", "tokens_p90", "truncation_rate", "compliance_rate",
                    "think_rate"):
            assert s[key] is not None, (mode, key)
        assert s["tokens_p50"] <= s["tokens_p90"] <= summary["settings"]["sampling"][mode]["max_new_tokens"]
    assert summary["modes"]["short"]["think_rate"] == 0.0  # a short completion that thinks is also non-compliant
    assert summary["modes"]["long"]["think_rate"] > 0.0
    rows = records(out)
    assert len(rows) == 3 * 3 * 6 * 2  # checkpoints x modes x rows x n
    last = [r for r in rows if r["checkpoint"] == "step-000002" and r["mode"] == "short"]
    assert sum(r["correct"] for r in last) / len(last) == summary["modes"]["short"]["accuracy"]
    assert {r["row_id"] for r in last} == {json.loads(line)["id"] for line in evalset.read_text().splitlines()}
    for name in ("accuracy_vs_tokens", "length_hist", "curves"):
        assert summary["figures"][name] == f"{name}.png"
        with Image.open(out / f"{name}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 200
    assert "step-000002" in stdout and "compliance_rate" in stdout


@pytest.mark.parametrize("run, step", [("lora", "step-000002"), ("full", "step-000001")])
def test_a_checkpoint_samples_exactly_as_its_merged_export(evaluated, run, step):
    """The adapter over the base weights (LoRA run) or the reloaded full weights, served by the engine that
    evaluated the base model just before, give the same completions, seed for seed, as the exported merged
    checkpoint; and not the base model's (the update is visible)."""
    outs = evaluated[0]
    in_run = records(outs[run, "run"])
    texts = {name: [r["text"] for r in in_run if r["checkpoint"] == name] for name in ("base", step)}
    export = [r["text"] for r in records(outs[run, "export"])]
    assert texts[step] == export
    assert texts[step] != texts["base"]


def test_bad_arguments_are_named(runs, tmp_path):
    root, evalset = runs
    proc = rl_eval("--checkpoint", str(root / "lora"), "--data", str(evalset), "--out", str(tmp_path),
                   "--modes", "short,fast", check=False)
    assert proc.returncode == 2 and "modes=['short', 'fast']" in proc.stderr
    proc = rl_eval("--checkpoint", str(tmp_path / "nope"), "--data", str(evalset), "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "nope: not a checkpoint directory" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2+2?"}\n')
    proc = rl_eval("--checkpoint", str(root / "lora" / "export"), "--data", str(bad), "--out", str(tmp_path),
                   check=False)
    assert proc.returncode == 2 and "bad.jsonl: row 1: field 'answer'" in proc.stderr


def test_a_corrupt_checkpoint_in_a_run_is_named_and_fails(runs, tmp_path):
    root, evalset = runs
    run = tmp_path / "run"
    shutil.copytree(root / "lora", run)
    latest = sorted((run / "checkpoints").iterdir())[-1]
    adapter = latest / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(b"\x00" * 16)
    proc = rl_eval("--checkpoint", str(run), "--data", str(evalset), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{adapter}: not a readable safetensors file" in proc.stderr
