"""Processes: what a plugin starts dies with its sandbox worker (timeout, close, too many processes, a killed
trainer), and a plugin that forks without bound fails its own row only."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rewards.runner import RewardRunner, RunnerConfig
from rewards.sandbox import SandboxConfig

TIMEOUT_S = 4.0  # the session sandbox's per-call limit (tests/rewards/conftest.py)
MARGIN_S = 10.0  # bounded, not exact: a loaded machine (another suite beside this one) is slow to schedule
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")

PLUGIN = '''
import os, subprocess, time

PIDS = {pids!r}


def note(*pids):
    with open(PIDS + ".tmp", "w") as f:
        f.write(" ".join(map(str, pids)))
    os.replace(PIDS + ".tmp", PIDS)


def sleeper():
    """A forked child that just waits (a plugin's multiprocessing-like helper)."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(300)
        finally:
            os._exit(0)
    return pid


def spawn_and_hang(sample):
    child = subprocess.Popen(["sleep", "300"])
    note(os.getpid(), child.pid)
    while True:
        time.sleep(0.05)


def spawn_and_return(sample):
    children = [subprocess.Popen(["sleep", "300"]).pid for _ in range(2)] + [sleeper()]
    note(os.getpid(), *children)
    return 1.0


def fork_many(sample):
    if sample.answer_text.strip() != "fork":
        return 1.0
    note(os.getpid())
    for _ in range(1000):
        sleeper()
        time.sleep(0.002)
    return 1.0
'''


@pytest.fixture
def plugin(tmp_path):
    """(path of the plugin file, path where it writes pids)."""
    path, pids = tmp_path / "spawning_plugin.py", tmp_path / "pids"
    path.write_text(PLUGIN.format(pids=str(pids)))
    return path, pids


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[2])


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays a zombie where the container's pid 1 does not reap)."""
    try:
        import psutil
    except ImportError:
        stat = proc_stat(pid)
        return stat is not None and stat[0] not in "ZXx"
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def in_group(pgid: int) -> list[int]:
    """Running processes of a process group."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat[1] == pgid and stat[0] not in "ZXx":
                found.append(int(name))
    return found


def gone_soon(pids: list[int], within_s: float = 10.0) -> list[int]:
    """The pids still running after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [pid for pid in pids if running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def read_pids(path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


@pytest.fixture
def warm(runner, mk):
    """The session runner with its workers started (a first start, with its preloads, is not part of a limit)."""
    assert [o.score for o in runner.score("exact", [mk("x", "x")] * 2)] == [1.0, 1.0]
    return runner


def test_a_timeout_kills_the_workers_children(warm, mk, plugin):
    path, pids, runner = *plugin, warm
    start = time.monotonic()
    (outcome,) = runner.score(f"{path}:spawn_and_hang", [mk("x")])
    assert outcome.score is None and outcome.error.startswith("timeout")
    assert time.monotonic() - start <= TIMEOUT_S + MARGIN_S
    worker, child = read_pids(pids)
    assert gone_soon([worker, child]) == []
    assert in_group(worker) == []


def test_close_kills_what_a_plugin_left_running(mk, plugin):
    path, pids = plugin
    config = RunnerConfig(sandbox=SandboxConfig(workers=1, timeout_s=TIMEOUT_S, memory_mb=2048, preload=()))
    runner = RewardRunner(config)  # its own sandbox: the test closes it
    try:
        (outcome,) = runner.score(f"{path}:spawn_and_return", [mk("x")])
        assert outcome.score == 1.0, outcome
        worker, *children = read_pids(pids)
        assert len(children) == 3 and all(running(pid) for pid in [worker, *children])
    finally:
        runner.close()
    assert gone_soon([worker, *children]) == []
    assert in_group(worker) == []


def test_a_plugin_that_forks_without_bound_fails_its_row_only(warm, mk, plugin):
    path, pids, runner = *plugin, warm
    bound = runner.sandbox.config.max_processes
    assert bound is not None
    answers = ["ok", "fork", "ok", "ok"]
    start = time.monotonic()
    outcomes = runner.score(f"{path}:fork_many", [mk(a) for a in answers])
    assert time.monotonic() - start <= TIMEOUT_S + MARGIN_S
    assert [o.score for o in outcomes] == [1.0, None, 1.0, 1.0], outcomes
    assert outcomes[1].error.startswith("too many processes") and f"max_processes={bound}" in outcomes[1].error
    (worker,) = read_pids(pids)
    assert gone_soon([worker]) == []
    deadline = time.monotonic() + 2.0
    while in_group(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_group(worker) == []
    # the sandbox goes on
    assert [o.score for o in runner.score(f"{path}:fork_many", [mk("ok")] * 2)] == [1.0, 1.0]


TRAINER = '''
import sys, time
from rewards import RewardInput, RewardRunner, RunnerConfig, SandboxConfig
runner = RewardRunner(RunnerConfig(sandbox=SandboxConfig(workers=1, timeout_s=30, preload=())))
(outcome,) = runner.score(sys.argv[1], [RewardInput.make("x")])
print(outcome.score, flush=True)
time.sleep(300)
'''


def test_workers_and_their_children_die_with_a_killed_trainer(plugin):
    path, pids = plugin
    trainer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRAINER), f"{path}:spawn_and_return"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "1.0"
        worker, *children = read_pids(pids)
        assert all(running(pid) for pid in [worker, *children])
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    assert gone_soon([worker, *children]) == []
    assert in_group(worker) == []


def test_a_verifier_out_of_memory_names_the_limit_and_the_config_refuses_it():
    """Under a 64 MB address space math-verify's parser fails and reports it as an unparseable reference: the error
    says the worker's memory limit may be why, and a run cannot set one that low."""
    from rewards import RewardInput
    from rl.config import ConfigError, load

    with RewardRunner(RunnerConfig(sandbox=SandboxConfig(workers=1, memory_mb=64))) as runner:
        [out] = runner.score("math", [RewardInput.make("\\boxed{\\frac{1}{2}}", "0.5", "short", {})])
    assert out.score is None and "address space is limited to 64 MB, reward.memory_mb" in out.error
    with pytest.raises(ConfigError, match=r"reward\.memory_mb: Input should be greater than or equal to 256"):
        load("configs/tiny_cpu.yaml", ["reward.memory_mb=64"])
