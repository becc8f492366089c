"""The service watchdog: it finds a daemonised grandchild by parent pids, and stops the server's whole tree when the
server exits, when it is asked to stop, and when its runner is gone, exiting with the server's status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midtrain.experiment.service import WATCHDOG
from midtrain.experiment.watchdog import descendants

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the watchdog tracks process trees through /proc")

# A server that daemonises a grandchild (fork, setsid, fork; the middle process exits) and writes its pid, then
# either sleeps ("stay") or exits with status 3 at once ("exit3").
SERVER = r"""
import os, sys, time
state, mode = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(state + ".tmp", "w").write(str(os.getpid()))
        os.rename(state + ".tmp", state)
        time.sleep(600)
    os._exit(0)
while not os.path.exists(state):
    time.sleep(0.01)
if mode == "exit3":
    sys.exit(3)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def wait_for(cond, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    """The watchdog running SERVER in ``mode``, as this process's child (this process is its runner)."""
    (tmp_path / "srv.py").write_text(SERVER)
    state = tmp_path / "grandchild"
    argv = [
        sys.executable,
        "-I",
        str(WATCHDOG),
        str(os.getpid()),
        "1",
        sys.executable,
        str(tmp_path / "srv.py"),
        str(state),
        mode,
    ]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(state.exists), "the server never daemonised its grandchild"
    return proc, state


def test_descendants_follow_parent_pids_through_a_new_session(tmp_path):
    (tmp_path / "srv.py").write_text(SERVER)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "srv.py"), str(tmp_path / "g"), "stay"])
    try:
        assert wait_for((tmp_path / "g").exists)
        grandchild = int((tmp_path / "g").read_text())
        # without a subreaper the orphaned grandchild belongs to init: no longer a descendant of the server
        assert grandchild not in descendants(parent.pid)
        assert descendants(os.getpid()).count(parent.pid) == 1
    finally:
        parent.kill()
        parent.wait()
        if (tmp_path / "g").exists():
            os.kill(int((tmp_path / "g").read_text()), signal.SIGKILL)


def test_a_server_that_exits_takes_its_daemonised_grandchild_along(tmp_path):
    proc, state = start(tmp_path, "exit3")
    grandchild = int(state.read_text())
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, out  # the server's status
    assert "stopped with its whole process tree" in out
    assert not alive(grandchild)


def test_sigterm_stops_the_whole_tree(tmp_path):
    proc, state = start(tmp_path, "stay")
    grandchild = int(state.read_text())
    assert grandchild in descendants(proc.pid)  # the subreaper adopted it
    os.killpg(proc.pid, signal.SIGTERM)  # what Service.stop sends
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not alive(grandchild)


# A runner: starts the watchdog in a new session, as Service.start does, then waits to be killed.
RUNNER = r"""
import os, subprocess, sys, time
watchdog, log, *command = sys.argv[1:]
subprocess.Popen([sys.executable, "-I", watchdog, str(os.getpid()), "1", *command], start_new_session=True,
                 stdout=open(log, "w"), stderr=subprocess.STDOUT)
time.sleep(600)
"""


def test_kill_9_of_the_runner_stops_the_whole_tree(tmp_path):
    (tmp_path / "srv.py").write_text(SERVER)
    state, log = tmp_path / "grandchild", tmp_path / "watchdog.log"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(WATCHDOG), str(log), sys.executable, str(tmp_path / "srv.py"), str(state), "stay"]
    )
    try:
        assert wait_for(state.exists), "the server never daemonised its grandchild"
        grandchild = int(state.read_text())
        assert alive(grandchild)
    finally:
        runner.kill()
        runner.wait()
    assert wait_for(lambda: not alive(grandchild)), "the daemonised grandchild outlived the killed runner"
    assert "the experiment runner is gone" in log.read_text()
