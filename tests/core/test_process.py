"""core.process: a private temp folder per process (removed at exit, swept after a kill) and dying with an owner."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core.process import TMP_PREFIX, Owner, alive, descendants, exit_with, start_time, sweep_tempdirs

CHILD_TEMP = """
import multiprocessing, multiprocessing.util, os, signal, sys, tempfile  # util first, as in rl-train (torch)
from core.process import private_tempdir
folder = private_tempdir()
ctx = multiprocessing.get_context("forkserver")
ctx.set_forkserver_preload([])
p = ctx.Process(target=print, args=("hi",)); p.start(); p.join()  # the fork server's socket: a pymp-* folder
print(folder, tempfile.gettempdir(), os.environ["TMPDIR"], flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def short_tmp():
    """A temp folder with a short path (pytest's tmp_path is too long for the Unix sockets made inside)."""
    folder = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_child(code: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_private_tempdir_holds_the_process_temp_files_and_is_removed_at_exit(short_tmp):
    done = run_child(CHILD_TEMP, "exit", env={"TMPDIR": str(short_tmp)})
    assert done.returncode == 0 and done.stderr == "", done.stderr  # multiprocessing's own clean-up finds its folder
    folder, gettempdir, env = done.stdout.split()[-3:]
    assert folder == gettempdir == env and Path(folder).parent == short_tmp
    assert Path(folder).name.startswith(TMP_PREFIX)
    assert list(short_tmp.iterdir()) == []  # removed at exit; no pymp-* beside it


def test_a_killed_process_folder_is_swept_by_the_next(short_tmp):
    done = run_child(CHILD_TEMP, "kill", env={"TMPDIR": str(short_tmp)})
    assert done.returncode == -signal.SIGKILL
    folder = Path(done.stdout.split()[-3])
    assert folder.is_dir() and list(folder.glob("pymp-*"))  # the fork server's folder, inside the private one
    assert [p.name for p in short_tmp.iterdir()] == [folder.name]  # nothing else left in the temp folder
    mine = short_tmp / f"{TMP_PREFIX}{os.getpid()}-{start_time(os.getpid())}-live-x"  # a live process's folder
    mine.mkdir()
    assert sweep_tempdirs(short_tmp) == [folder]
    assert [p.name for p in short_tmp.iterdir()] == [mine.name]


CHILD_OWNED = """
import subprocess, sys, time
from core.process import Owner, exit_with
owner = Owner(int(sys.argv[1]), sys.argv[2], Owner.this_process().host)
assert exit_with(owner, poll_s=0.1)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(grandchild.pid, flush=True)
time.sleep(300)
"""


def test_exit_with_ends_the_process_and_its_children_when_the_owner_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    child = subprocess.Popen([sys.executable, "-c", CHILD_OWNED, str(owner.pid), start_time(owner.pid)],
                             stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        assert alive(child.pid) and alive(grandchild) and descendants(child.pid) == [grandchild]
        time.sleep(0.5)
        assert child.poll() is None  # the owner lives: so does the child
        owner.kill()
        owner.wait()
        child.wait(timeout=5)
        deadline = time.time() + 5
        while alive(grandchild) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(grandchild)
    finally:
        for p in (owner, child):
            p.kill()


def test_an_owner_elsewhere_or_none_is_not_watched():
    assert not exit_with(None)
    assert not exit_with(Owner(os.getpid(), start_time(os.getpid()), "another-host/boot"))
    assert Owner.this_process().here()


def test_alive_tells_a_reused_pid_by_its_start_time():
    me = os.getpid()
    assert alive(me) and alive(me, start_time(me)) and not alive(me, "1")
