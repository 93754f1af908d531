"""`rl-train` stops on a bad config before anything expensive starts: no Ray, no vLLM, no model load."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TINY = str(ROOT / "configs" / "tiny_cpu.yaml")

# Runs rl-train's main in a fresh interpreter and reports its exit code and whether Ray or vLLM were imported.
PROBE = """
import json, sys
from rl.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "heavy": sorted(m for m in ("ray", "vllm") if m in sys.modules)}))
"""


def rl_train(*args, cwd=ROOT):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


BAD_CONFIGS = [
    ("algo.loss_agg=nonsense", "algo.loss_agg: 'nonsense' is not a registered loss aggregation; allowed: "),
    ("algo.advantage=nonsense", "algo.advantage: 'nonsense' is not a registered advantage estimator"),
    ("algo.policy_loss=nonsense", "algo.policy_loss: 'nonsense' is not a registered policy loss"),
    ("algo.loss_agg=seq-mean-token-sum-norm", "needs algo.norm_length"),
    ("learner.loss_agg=nonsense", "learner.loss_agg: unknown key; did you mean algo.loss_agg?"),
    ("learner.lr=-1", "learner.lr: Input should be greater than 0"),
    ("rollout.n=0", "rollout.n: Input should be greater than or equal to 2"),
    ("rollout.long.max_new_tokens=4096", "rollout.long.max_new_tokens=4096 leaves no room for the prompt"),
    ("data.path=no/such/file.parquet", "data.path: no/such/file.parquet: data file not found"),
    ("reward.combine.parts.acc=no_such_module:fn", "reward.combine.parts.acc='no_such_module:fn'"),
    ("rollout.backend=sglang", "rollout.backend='sglang': expected one of ['fake', 'vllm'] or a 'module:Class'"),
    ("sync.transport=ipc", "sync.transport: Input should be 'auto', 'nccl', 'gloo' or 'staging'"),
    ("rollout.n=[1", "override rollout.n=[1: the value is not valid YAML"),
    ("run.seed=99999999999999999999999", "run.seed: Input should be less than or equal to 4294967295"),
    ("data.allowed_rewards=null", "data.allowed_rewards: null would let each row name any module or file"),
] + [(f"run.{name}=true", f"run.{name}=true: the {name} package is not installed")
     for name in ("wandb", "mlflow") if importlib.util.find_spec(name) is None]

# rl-train's main once per bad config in one fresh interpreter: nothing heavy may be imported by any of them.
PROBE_MANY = """
import contextlib, io, json, sys
from rl.cli import main
cases = []
for override in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["--config", sys.argv[1], override])
    cases.append({"rc": rc, "err": err.getvalue()})
print(json.dumps({"cases": cases, "heavy": sorted(m for m in ("ray", "vllm") if m in sys.modules)}))
"""


def test_a_bad_config_fails_fast_and_starts_nothing():
    proc = subprocess.run([sys.executable, "-c", PROBE_MANY, TINY, json.dumps([o for o, _ in BAD_CONFIGS])],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for (override, key), case in zip(BAD_CONFIGS, out["cases"], strict=True):
        assert case["rc"] == 2 and key in case["err"], (override, case["err"])
        assert "config error" in case["err"] and "Traceback" not in case["err"], override
    assert out["heavy"] == [], f"imported {out['heavy']} before failing"


def test_preflight_paths(tmp_path):
    out, err = rl_train("--config", TINY, f"model.path={tmp_path / 'none'}", "model.build_tiny_if_missing=false")
    assert out["rc"] == 2 and f"model.path={tmp_path / 'none'}: no checkpoint there" in err
    out, err = rl_train("--config", TINY, f"run.dir={tmp_path / 'run'}", "--resume")
    assert out["rc"] == 2 and f"--resume: no checkpoint under {tmp_path / 'run' / 'checkpoints'}" in err
    assert out["heavy"] == []


def test_check_validates_and_starts_nothing(tmp_path):
    out, err = rl_train("--config", TINY, f"run.dir={tmp_path / 'run'}", "--check")
    assert out["rc"] == 0 and out["heavy"] == []
    assert not (tmp_path / "run").exists()


def test_lora_targets_that_match_nothing_are_named_before_the_model_loads(tiny_ckpt):
    out, err = rl_train("--config", TINY, f"model.path={tiny_ckpt}", "learner.lora_targets=.*attn.qproj", "--check")
    assert out["rc"] == 2 and "learner.lora_targets='.*attn.qproj': matches no module of" in err
    assert "llm.model.layers.0.self_attn.q_proj" in err


def test_the_model_context_is_checked(tiny_ckpt):
    out, err = rl_train("--config", TINY, f"model.path={tiny_ckpt}", "rollout.max_model_len=9000", "--check")
    assert out["rc"] == 2 and "rollout.max_model_len=9000 exceeds the model's context" in err


def test_a_run_directory_belongs_to_one_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    out, err = rl_train("--config", TINY, f"run.dir={run}", "--check")
    assert out["rc"] == 2 and f"run.dir={run} is not empty (checkpoints, metrics.jsonl)" in err
    assert "--resume" in err and "--overwrite" in err
    out, err = rl_train("--config", TINY, f"run.dir={run}", "--check", "--overwrite")
    assert out["rc"] == 0 and (run / "metrics.jsonl").exists()  # --check deletes nothing
    out, err = rl_train("--config", TINY, f"run.dir={run}", "--check", "--resume")
    assert out["rc"] == 0
    (run / "notes.txt").write_text("mine")
    out, err = rl_train("--config", TINY, f"run.dir={run}", "--overwrite", "--check")
    assert out["rc"] == 2 and "also holds notes.txt: choose another run.dir" in err


def test_overwrite_deletes_only_the_runs_files(tmp_path):
    from rl.config import load
    from rl.preflight import clear_run_dir, preflight

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "tensorboard").mkdir()
    (run / "config.yaml").write_text("x: 1\n")
    cfg = load(TINY, [f"run.dir={run}"])
    assert preflight(cfg, overwrite=True) == []
    clear_run_dir(cfg)
    assert run.is_dir() and list(run.iterdir()) == []
    assert preflight(cfg) == []


# rl-train's main once per cause in one fresh interpreter: (rc, stderr, whether Ray was started) for each.
PROBE_RUN = """
import contextlib, io, json, sys
import ray
from rl.cli import main
cases = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    cases.append({"rc": rc, "err": err.getvalue(), "ray": ray.is_initialized()})
print(json.dumps(cases))
"""


def test_every_data_cause_ends_in_one_line_naming_it_before_anything_starts(tiny_ckpt, tmp_path):
    """A user's data, wrong in each known way: the run stops with exit 1 and one line naming the file, row and
    field (or the key), before Ray or an engine starts; no traceback."""
    import PIL.Image

    good = {"question": "How many circles?", "answer": "2", "reward": "number"}
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    files = {
        "malformed": ['{"question": "a", "answer": "1"}', '{"question": "b", "answer": '],
        "missing_field": [json.dumps(good), json.dumps({"answer": "1"})],
        "bad_image": [json.dumps(good), json.dumps(dict(good, images=["broken.png"]))],
        "too_long": [json.dumps(good), json.dumps(dict(good, question="word " * 3000))],
        "no_valid_row": [json.dumps({"answer": "1"})] * 3,
        "mapped_column": [json.dumps({"prompt": "a", "solution": "1"})] * 3,
    }
    for name, lines in files.items():
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    base = ["--config", TINY, f"model.path={tiny_ckpt}", "run.progress=false", "run.tensorboard=false"]
    # rc 2: found by preflight's preview of the first rows (a config error); rc 1: found when all rows load (the
    # prompt-token count needs the model's processor)
    cases = {
        "malformed": (["data.on_bad_row=fail"], "malformed.jsonl: row 2", 2),
        "missing_field": (["data.on_bad_row=fail"], "missing_field.jsonl: row 2: field 'question'", 2),
        "bad_image": (["data.on_bad_row=fail"], "bad_image.jsonl: row 2: field 'images[0]'", 2),
        "too_long": (["data.on_bad_row=fail"], "too_long.jsonl: row 2: prompt of", 1),
        "no_valid_row": ([], "the first 3 rows of", 2),
        "mapped_column": (["data.columns={question: prompt, answer: answer}"], "'answer'", 2),
    }
    runs = [base + [f"data.path={tmp_path / (name + '.jsonl')}", f"run.dir={tmp_path / 'runs' / name}", *extra]
            for name, (extra, _, _) in cases.items()]
    proc = subprocess.run([sys.executable, "-c", PROBE_RUN, json.dumps(runs)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    for (name, (_, named, rc)), case in zip(cases.items(), json.loads(proc.stdout.strip().splitlines()[-1]),
                                            strict=True):
        lines = [line for line in case["err"].splitlines() if line.startswith("rl-train:")]
        assert case["rc"] == rc and len(lines) == 1 and "Traceback" not in case["err"], (name, case["err"][-2000:])
        prefix = "rl-train: error: " if rc == 1 else "rl-train: config error: data: "
        assert lines[0].startswith(prefix) and named in lines[0], (name, lines[0])
        assert not case["ray"], name  # failed at load: nothing was started


def test_python_m_rl_is_rl_train_and_its_help_is_whole():
    import os

    proc = subprocess.run([sys.executable, "-m", "rl", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0 and proc.stdout.startswith("usage: rl-train")
    assert "[dotted.key=value ...]`: the hybrid-mode GRPO run." in proc.stdout  # not cut mid-sentence
    assert "`--debug` shows the traceback." in proc.stdout
