"""Processes that clean up after themselves: who is alive, a temp folder per process, and dying with an owner.

- `alive(pid, start)`: the process runs and is the one that started at `start` (not a reuse of its pid).
- `private_tempdir(tag)`: this process's temp files (tempfile, `TMPDIR` for its children, multiprocessing's
  `pymp-*` folders, vLLM's `vllm_dist_*` files) go into a folder of its own (`TMP_PREFIX`) in the system temp
  folder; `new_tempdir()` makes one such folder without switching the process to it (a vLLM engine's). Ray actors end with `os._exit` and a killed trainer runs no exit handler, so their temp files
  would stay; a folder whose process is gone is removed by the next `private_tempdir` call on the machine.
- `exit_with(owner)`: a thread that ends this process (and the processes below it) as soon as `owner` (the trainer)
  is gone, even by SIGKILL. Ray notices a dead driver only after its own timeouts (~15 s measured), while a vLLM
  engine holds a GPU's memory.
- `start_reaper()`: a detached process that ends whatever was started below this one once it is gone (Ray's head
  and node agents, when the trainer started Ray itself).
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TMP_PREFIX = "minicpmv-tmp-"
"""Temp folders of one process: `minicpmv-tmp-<pid>-<start time>-<random>` (short: a Unix socket's path inside,
such as multiprocessing's `pymp-*/listener-*` or vLLM's ZMQ sockets, must stay under 108 bytes)."""


def proc_state(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/PID/stat; None where unreadable (gone, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), fields[19].decode()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    state = proc_state(pid)
    return state[1] if state else None


def alive(pid: int, start: str | None = None) -> bool:
    """The process runs (not a zombie) and is the one that started at `start` (not a reuse of its pid)."""
    state = proc_state(pid)
    if state is not None:
        return state[0] not in "ZXx" and (start is None or state[1] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), from /proc/PID/task/TID/children; [] without those lists."""
    out, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in out:
                    out.append(child)
                    stack.append(child)
    return out


# ---- temp folders ----
def sweep_tempdirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the private temp folders (in `root`, default the system temp folder) whose process is gone."""
    removed = []
    for old in Path(root or _system_tmp()).glob(TMP_PREFIX + "*"):
        pid, _, rest = old.name.removeprefix(TMP_PREFIX).partition("-")
        start = rest.split("-")[0]
        if pid.isdigit() and not alive(int(pid), start if start.isdigit() else None):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def new_tempdir() -> Path:
    """A new temp folder owned by this process (removed by a later sweep once the process is gone); the folders of
    processes that are gone are removed first."""
    root = _system_tmp()
    sweep_tempdirs(root)
    me = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{me}-{start_time(me) or 'x'}-", dir=root))


def private_tempdir() -> Path:
    """Point this process's temp files at a new folder of its own (see the module's doc) and return it. Call it
    first thing in a process the project owns (a Ray actor, the rl-train command), never in a library caller's
    process: it changes `tempfile.tempdir` and `TMPDIR` for the rest of the process. Removed at a normal exit."""
    folder = new_tempdir()
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    # At exit, after multiprocessing removes its own pymp-* folder in there (its finalizer has priority -100; an
    # atexit handler would run first, and multiprocessing's removal would then fail on the missing folder).
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-200)
    return folder


def _system_tmp() -> str:
    """The system temp folder, not a private one this process may already use."""
    current = Path(tempfile.gettempdir())
    return str(current.parent) if current.name.startswith(TMP_PREFIX) else str(current)


# ---- dying with an owner ----
@dataclass(frozen=True)
class Owner:
    """A process to die with: its pid, start time and machine (a pid means nothing on another machine)."""
    pid: int
    start: str | None
    host: str

    @classmethod
    def this_process(cls) -> "Owner":
        return cls(os.getpid(), start_time(os.getpid()), _machine())

    def here(self) -> bool:
        return self.host == _machine()


def exit_with(owner: Owner | None, poll_s: float = 0.5) -> bool:
    """Start a daemon thread that SIGKILLs the processes below this one and then ends this process as soon as
    `owner` is gone. Does nothing (False) for no owner or an owner on another machine (Ray's own owner-death
    detection applies there)."""
    if owner is None or not owner.here():
        return False

    def watch() -> None:
        while alive(owner.pid, owner.start):
            time.sleep(poll_s)
        for pid in reversed(descendants(os.getpid())):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()
    return True


def reap_with(owner: Owner, poll_s: float = 0.5, note_s: float = 30.0) -> None:
    """The reaper's loop (`start_reaper`): for its first `note_s` seconds, note every process below `owner` (pid
    and start time: what starting Ray there started, its agents included); once `owner` is gone, SIGKILL each
    noted process that is still the one noted. Processes the owner starts later are not its business."""
    noted: dict[int, str | None] = {}
    until = time.monotonic() + note_s
    while alive(owner.pid, owner.start):
        if time.monotonic() < until:
            for pid in descendants(owner.pid):
                if pid != os.getpid() and pid not in noted:
                    noted[pid] = start_time(pid)
        time.sleep(poll_s)
    for pid, start in noted.items():
        if start is not None and alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_reaper(poll_s: float = 0.5) -> None:
    """A detached process that ends the processes started below this one in the next 30 s (`reap_with`) as soon as
    this one is gone, even by SIGKILL: for processes that outlive it on their own timers. (Ray's node agents,
    started by a raylet that died with its driver, first try to report the death to a GCS that is gone too, and
    give up after 60 s.)"""
    import json
    import subprocess
    import sys

    owner = Owner.this_process()
    code = ("import json, sys; from core.process import Owner, reap_with; "
            "o = json.loads(sys.argv[1]); reap_with(Owner(**o), float(sys.argv[2]))")
    subprocess.Popen([sys.executable, "-c", code, json.dumps(owner.__dict__), str(poll_s)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))


def _machine() -> str:
    """The host name and the kernel's boot id: two containers of one host have different names, and two boots of
    one host different ids (both matter for a pid)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"
