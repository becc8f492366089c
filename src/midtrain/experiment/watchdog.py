"""The watchdog of a service stage (:mod:`midtrain.experiment.service`): it runs the server and, whatever ends the
service, stops the server's whole process tree.

Launch (by the experiment runner, in a new session; ``-I`` keeps the user's environment out, so this module
imports only the standard library)::

    python -I .../midtrain/experiment/watchdog.py RUNNER_PID GRACE_S COMMAND...

Algorithm:

1. Become a **child subreaper** (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): a process the server starts stays a
   descendant of the watchdog even when it calls ``setsid`` and its parent exits (a daemonised grandchild is
   re-parented to the watchdog, not to init), so :func:`descendants` finds the whole tree by parent pids in
   ``/proc`` — a process group would not: ``setsid`` leaves it.
2. Start the server as a child, in the watchdog's process group, and reap every child that exits (orphans are
   the watchdog's to reap now).
3. **Stop** when the server exits, when SIGTERM arrives (the runner stopping the service signals the whole group,
   the server included), or when the runner is gone (``getppid()`` changed: ``kill -9``): SIGTERM to the group
   and to every descendant, SIGKILL after ``GRACE_S`` to whatever is left (found again on every look: a dying
   process may fork), reap them all, and exit with the server's status (``128 + N`` for a signal ``N``).

SIGTERM and SIGINT reach the watchdog through Python handlers, not ``SIG_IGN``, which the server would inherit
through ``exec``. The limit: a process the server has *another* daemon start (``docker run -d``, ``systemd-run``)
is that daemon's child, not the server's, and is not stopped. Without ``/proc`` and the subreaper (not Linux), the
stop falls back to the process group, which a process that called ``setsid`` has left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
POLL_S = 0.1  # how often the watchdog looks at the server and the runner
KILL_WAIT_S = 5.0  # after SIGKILL: the kernel tears the processes down; no process can delay it


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux 3.4+); whether that worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(root: int) -> list[int]:
    """Pids of the live descendants of ``root``, found by parent pid in ``/proc`` (zombies, which no signal reaches,
    left out); ``[]`` without ``/proc``."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state, ppid, …
        except (OSError, IndexError):
            continue  # exited meanwhile
        if fields[0] not in (b"Z", b"X"):
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(server: int, status: int | None) -> int | None:
    """Reap every exited child; the server's exit status (``-N`` for signal ``N``) once it is among them."""
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == server:
            status = os.waitstatus_to_exitcode(raw)


def stop_tree(server: int, status: int | None, grace: float) -> int | None:
    """SIGTERM to the group and every descendant, SIGKILL after ``grace`` seconds to what is left, all reaped; the
    server's exit status."""
    me = os.getpid()
    os.killpg(0, signal.SIGTERM)  # (the watchdog's own handler ignores it)
    signal_all(descendants(me), signal.SIGTERM)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        if sig == signal.SIGKILL:
            signal_all(descendants(me), signal.SIGKILL)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            status = reap(server, status)
            if status is not None and not descendants(me):
                return status
            time.sleep(0.02)
    return reap(server, status)


def main(argv: list[str]) -> int:
    runner, grace, command = int(argv[1]), float(argv[2]), argv[3:]
    stop_asked: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop_asked.append(1))
    signal.signal(signal.SIGINT, lambda *_: None)  # the runner's Ctrl-C is the runner's to handle
    tree = become_subreaper() and os.path.isdir("/proc")
    try:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as e:
        print(f"midtrain service: cannot start {command[0]!r}: {e}", flush=True)
        return 127
    scope = "its whole process tree" if tree else "its process group (no subreaper here: a process that calls setsid escapes)"
    print(f"midtrain service: pid {server.pid}, watchdog {os.getpid()}, stopped with {scope}: {' '.join(command)}", flush=True)
    status = None
    while status is None and not stop_asked and os.getppid() == runner:
        time.sleep(POLL_S)
        status = reap(server.pid, status)
    if os.getppid() != runner:
        print("midtrain service: the experiment runner is gone; stopping the server", flush=True)
    status = stop_tree(server.pid, status, grace)
    server.returncode = status  # reaped here, not by Popen
    if status is None:  # not reaped within KILL_WAIT_S of SIGKILL (a process stuck in the kernel)
        return 137
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
