"""`rl-doctor`: vLLM and model/ compute the same log-probabilities on the tiny checkpoint."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm


def rl_doctor(*args, timeout=600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "rl-doctor"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rollouts.vllm.doctor"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def report_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_rl_doctor_json_reports_agreement(tiny_ckpt):
    report = report_of(rl_doctor(tiny_ckpt, "--json", "--max-tokens", "32", "--n", "2"))
    assert report["prompt_ids_match"] is True
    assert report["n_tokens"] >= 256
    assert report["n_image_prompts"] >= 2
    assert report["n_video_prompts"] == 4 * 2  # 1 frame, 7 in packages of 3, 6 unpacked, an image + 7; both modes
    assert report["max_abs_logprob_diff_video"] <= 1e-4
    assert report["modes"] == ["short", "long"]
    assert report["max_abs_logprob_diff"] <= 1e-4
    assert 0 <= report["mean_abs_logprob_diff"] <= report["max_abs_logprob_diff"]


def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tiny_ckpt, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ckpt, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    proc = rl_doctor(broken, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"rl-doctor: error: {weights}: not a readable safetensors file")


def test_rl_doctor_agrees_at_temperature_and_top_k(tiny_ckpt):
    report = report_of(rl_doctor(tiny_ckpt, "--json", "--temperature", "0.5", "--top-k", "5"))
    assert report["temperature"] == 0.5 and report["top_k"] == 5
    assert report["n_tokens"] >= 256 and report["max_abs_logprob_diff"] <= 1e-4
