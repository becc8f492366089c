"""Service stages of ``midtrain experiment run``: servers (``vllm serve``, ``transformers serve``, any command line)
that later stages talk to, started when first needed and never left behind.

A stage with a ``service:`` block instead of a ``verb``::

    stages:
      judge_server:
        per_seed: false
        service: {command: [vllm, serve, Qwen/Qwen3-8B, --port, "${port}"], health: /health, port: 0}
      judged: {verb: judge, args: {input: pairs.jsonl, backend: {backend: openai, base_url: "${judge_server.url}/v1"}}}

Algorithm (driven by :func:`midtrain.experiment.experiment.execute`, in the runner process, also with ``jobs > 1``):

1. **References.** ``${NAME.url}`` (``http://HOST:PORT``) and ``${NAME.port}`` name a service; the stages using
   them depend on it. At plan time they resolve to the *nominal* URL (port 0 when the port is picked at run time):
   the stage's cache key is computed from it and the service's spec, so a free port that changes between runs
   never re-runs a finished stage.
2. **Start** (:meth:`Services.ensure`), just before the first stage that uses the service actually runs (a rerun
   whose users are all finished starts nothing): ``port: 0`` picks a free port (the last run's when it is still
   free, so that a resumed stage sees the same URL); ``${port}`` is replaced in the
   command and ``env``; stdout and stderr go to ``OUT/<seed-S|shared>/NAME.log``. The runner then polls the health
   endpoint (a path on the URL, or a full URL) until it answers HTTP 200; a server that exits first, or is not
   healthy within ``startup_timeout_s``, fails the experiment with the tail of its log. The users then get the
   real URL (their configs are re-resolved).
3. **Stop** (:meth:`Services.finished`, :meth:`Services.stop_all`): when its last user finished, and in any case
   when the experiment ends or fails: SIGTERM to the server's process group, SIGKILL after ``stop_grace_s``.
   A service is never "complete" and never cached.

No orphans, even after ``kill -9`` of the runner: the command runs under a tiny **watchdog** (:data:`WATCHDOG`, a
``python -I -c`` script), started by the runner in a new session, that starts the server as its own child in that
session's process group and polls ``getppid()``; when the runner is gone it sends SIGTERM to the group and SIGKILL
after the grace period. Why not ``prctl(PR_SET_PDEATHSIG)`` in the server's ``preexec_fn``: the signal fires when
the *thread* that forked dies, not the process (a service started from a worker thread would die with it); it is
not inherited by the server's own children (``vllm serve`` runs its engine in child processes, which would
survive); and it leaves a window between fork and prctl. The watchdog exists before the server does (no window),
kills the whole process group (grandchildren included), and depends on no thread of the runner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.config import Config, check_http_url, param
from midtrain.console import log
from midtrain.errors import ConfigError, MidtrainError

SERVICE = "service"  # the verb recorded for service steps
PORT = "${port}"
TAIL_LINES = 20

# The watchdog: argv = [runner pid, grace seconds, command...]. It ignores the group's SIGTERM with a Python handler
# (not SIG_IGN, which the server would inherit through exec) and exits with the server's exit status.
WATCHDOG = r"""
import os, signal, subprocess, sys, time
runner, grace, argv = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
signal.signal(signal.SIGTERM, lambda *_: None)
signal.signal(signal.SIGINT, lambda *_: None)
try:
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
except OSError as e:
    print(f"midtrain service: cannot start {argv[0]!r}: {e}", flush=True)
    sys.exit(127)
print(f"midtrain service: pid {server.pid}, watchdog {os.getpid()}: {' '.join(argv)}", flush=True)
while server.poll() is None:
    if os.getppid() != runner:
        print("midtrain service: the experiment runner is gone; stopping the server", flush=True)
        os.killpg(0, signal.SIGTERM)
        end = time.monotonic() + grace
        while server.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        os.killpg(0, signal.SIGKILL)
    time.sleep(0.1)
code = server.returncode
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass
class ServiceSpec(Config):
    """A server started for later stages (a stage's ``service:`` block)."""

    command: list[str] = param(
        [], "The server's command line; `${port}` becomes the port, `${STAGE}`, `${vars.KEY}`, `${seed}` as in args."
    )
    health: str = param("/health", "Health check: a path under the service URL or a full URL; ready on HTTP 200.")
    port: int = param(0, "TCP port the server listens on; 0: pick a free one at start.", ge=0, le=65535)
    host: str = param("127.0.0.1", "Host of the service URL handed to later stages (`${NAME.url}` = http://HOST:PORT).")
    startup_timeout_s: float = param(600.0, "Fail if the health check has not answered 200 after this long.", gt=0)
    stop_grace_s: float = param(10.0, "Seconds between SIGTERM and SIGKILL when the service is stopped.", ge=0)
    env: dict[str, str] = param({}, "Extra environment variables of the server (`${port}` is substituted).")

    def check(self) -> None:
        if any(not a for a in self.command[:1]):
            raise ConfigError("key 'command': the first word (the program) is empty")
        if self.health.startswith(("http://", "https://")):
            check_http_url(self.health.replace(PORT, "1"), "health")
        elif not self.health.startswith("/"):
            raise ConfigError(f"key 'health': expected a path starting with '/' or an http(s):// URL, got {self.health!r}")

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def health_url(self, port: int) -> str:
        h = self.health.replace(PORT, str(port))
        return h if h.startswith(("http://", "https://")) else self.url(port) + h


def ref_value(spec: ServiceSpec, attr: str, port: int | None) -> str | int:
    """``${NAME.url}`` or ``${NAME.port}``: the live value, or the nominal one (``port`` None: not started)."""
    p = port if port is not None else spec.port
    return p if attr == "port" else spec.url(p)


def program_path(argv: list[str]) -> list[str]:
    """``argv`` with a bare program name that is not on ``PATH`` resolved next to this Python (``transformers``,
    ``vllm`` installed in the same virtualenv as midtrain work without activating it)."""
    prog = argv[0] if argv else ""
    if prog and os.sep not in prog and shutil.which(prog) is None:
        local = Path(sys.executable).parent / prog
        if local.is_file() and os.access(local, os.X_OK):
            return [str(local), *argv[1:]]
    return argv


def free_port(host: str, prefer: int = 0) -> int:
    """A TCP port free on ``host`` now, ``prefer`` if it is (the server binds it a moment later: a race we accept)."""
    for port in ([prefer] if prefer else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host if host not in ("", "localhost") else "127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise MidtrainError(f"no free TCP port on {host}")


def last_port(state: Path) -> int:
    """The port a service used last time (its state file), 0 if none."""
    try:
        return int(json.loads(state.read_text()).get("port") or 0)
    except (OSError, ValueError, AttributeError):
        return 0


def exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it (its pid stays reserved, see :meth:`Service.stop`)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def healthy(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 now (no proxy: the service is local or named by the user)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Service:
    """One running server: its watchdog process (the group leader), port, URL and log."""

    key: str
    spec: ServiceSpec
    log_path: Path
    proc: subprocess.Popen | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return self.spec.url(self.port)

    def start(self) -> None:
        # port 0: the port of the last run if it is free, so that a resumed stage sees the same URL (its own run
        # directory may key on it); any free port otherwise
        self.port = self.spec.port or free_port(self.spec.host, prefer=last_port(self.log_path.with_suffix(".json")))
        argv = program_path([a.replace(PORT, str(self.port)) for a in self.spec.command])
        env = {**os.environ, **{k: v.replace(PORT, str(self.port)) for k, v in self.spec.env.items()}}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log(f"experiment: service {self.key}: starting {' '.join(argv)} (log {self.log_path})")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", WATCHDOG, str(os.getpid()), str(self.spec.stop_grace_s), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole, untouched by the runner's Ctrl-C
            )
        state = {"key": self.key, "url": self.url, "port": self.port, "pgid": self.proc.pid, "command": argv, "log": str(self.log_path)}
        self.log_path.with_suffix(".json").write_text(json.dumps(state, indent=1) + "\n")
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        url, deadline = self.spec.health_url(self.port), time.monotonic() + self.spec.startup_timeout_s
        while True:
            if exited(self.proc.pid):
                code = self.stop()
                raise MidtrainError(
                    f"service {self.key} exited with code {code} before {url} answered 200; {self.log_path} ends:\n{log_tail(self.log_path)}"
                )
            if healthy(url):
                log(f"experiment: service {self.key}: ready at {self.url}")
                return
            if time.monotonic() > deadline:
                self.stop()
                raise MidtrainError(
                    f"service {self.key}: {url} did not answer 200 within {self.spec.startup_timeout_s:g}s; "
                    f"{self.log_path} ends:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after the grace period (grandchildren included); the watchdog's
        exit status (the server's); idempotent."""
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)
        end = time.monotonic() + self.spec.stop_grace_s
        while not exited(self.proc.pid) and time.monotonic() < end:
            time.sleep(0.05)
        if not exited(self.proc.pid):
            log(f"experiment: service {self.key}: still running {self.spec.stop_grace_s:g}s after SIGTERM; SIGKILL")
        # The watchdog is not reaped yet, so its pid still names the group: SIGKILL reaches any process the server
        # left behind, and never an unrelated process that reused the pid.
        self._signal(signal.SIGKILL)
        code = self.proc.wait()
        self.proc = None
        log(f"experiment: service {self.key}: stopped")
        return code


@dataclass
class Services:
    """The services of one experiment run: started on demand, each stopped once its last user finished, all at exit.

    ``specs``: service step key → (spec, log path); ``users``: service step key → keys of the steps that use it.
    """

    specs: dict[str, tuple[ServiceSpec, Path]]
    users: dict[str, set[str]]
    running: dict[str, Service] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.specs

    def ensure(self, keys: list[str]) -> dict[str, int]:
        """Start the services ``keys`` that are not running; their ports."""
        for key in keys:
            if key not in self.running:
                spec, path = self.specs[key]
                svc = Service(key, spec, path)
                svc.start()
                self.running[key] = svc
        return {k: self.running[k].port for k in keys}

    def finished(self, step_key: str) -> None:
        """``step_key`` is done: stop the services that no remaining step uses."""
        for key, users in self.users.items():
            users.discard(step_key)
            if not users and key in self.running:
                self.running.pop(key).stop()

    def stop_all(self) -> None:
        while self.running:
            self.running.popitem()[1].stop()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()


def service_record(step: Any) -> dict[str, Any]:
    """The journal-less record of a service step in ``experiment.json`` (services have no outputs or metrics)."""
    return {"stage": step.name, "seed": step.seed, "verb": SERVICE, "out": str(step.out), "metrics": {}}


__all__ = [
    "SERVICE",
    "ServiceSpec",
    "Service",
    "Services",
    "WATCHDOG",
    "exited",
    "free_port",
    "healthy",
    "log_tail",
    "ref_value",
    "service_record",
]
