"""kill -9 of `rl-train` mid-run: its workers die with it at once, Ray's processes within seconds, and the resumed run
leaves nothing behind (no temp folders, engine files, fork-server sockets, adapter folders or shared-memory copies)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core.process import alive, descendants
from tests.rl.test_train_e2e import ROOT, metrics

pytestmark = pytest.mark.vllm


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def shm_names() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").is_dir() else set()


def test_kill_9_mid_run_then_resume_leaves_nothing(tiny_ckpt, tmp_path):
    tmp = Path(tempfile.mkdtemp(prefix="k-", dir="/tmp"))  # the run's TMPDIR (short: sockets are made inside)
    run = tmp_path / "run"
    data = tmp_path / "count_shapes.jsonl"
    exe = Path(sys.executable).parent / "rl-train"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rl.cli"]
    args = ["--config", "configs/tiny_cpu.yaml", f"model.path={tiny_ckpt}", f"data.path={data}", "data.demo_rows=16",
            "run.progress=false", "run.tensorboard=false", "run.export=false", "rollout.prompts_per_step=2",
            "rollout.n=2", "run.save_every=1", f"run.dir={run}"]  # LoRA: an adapter folder per sync
    env = {**os.environ, "TMPDIR": str(tmp)}
    shm_before = shm_names()
    try:
        proc = subprocess.Popen(cmd + args + ["run.steps=50"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not list((run / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert list((run / "checkpoints").glob("step-*")), "no checkpoint within 600 s"
        below = descendants(proc.pid)
        names = {p: cmdline(p) for p in below}  # read now: after the kill the reaper may end them before we look
        workers = [p for p in below if "RolloutWorker" in names[p]]
        assert workers, list(names.values())
        assert list((run / ".sync").glob("adapter-*"))  # the current adapter folder, left by the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.time()
        while any(alive(p) for p in workers) and time.time() - killed < 10:
            time.sleep(0.1)
        assert not any(alive(p) for p in workers), "a rollout worker outlived the killed trainer by 10 s"
        # then the rest of the tree: the reward sandbox's workers, Ray's head and its node agents (which on their own
        # wait 60 s for a GCS that died too: the run's reaper, core.process.start_reaper, ends them)
        agents = [p for p in below if "DashboardAgent" in names[p] or "RuntimeEnvAgent" in names[p]]
        assert agents, [n[:80] for n in names.values()]
        while any(alive(p) for p in below) and time.time() - killed < 15:
            time.sleep(0.5)
        assert not [names[p][:100] for p in below if alive(p)], [n[:100] for n in names.values()]
        done_steps = len(metrics(run))
        resumed = subprocess.run(cmd + args + [f"run.steps={done_steps + 1}", "--resume"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
        assert [r["step"] for r in metrics(run)][-1] == done_steps + 1
        assert not (run / ".sync").exists()
        left = sorted(p.name for p in tmp.iterdir() if p.name != "ray")  # Ray keeps its session logs by design
        assert left == [], left
        assert not {n for n in shm_names() - shm_before if n.startswith("minicpmv")}
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
