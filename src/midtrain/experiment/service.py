"""Service stages of ``midtrain experiment run``: servers (``vllm serve``, ``transformers serve``, any command line)
that later stages talk to, started when first needed and never left behind.

A stage with a ``service:`` block instead of a ``verb``::

    stages:
      judge_server:
        per_seed: false
        service: {command: [vllm, serve, Qwen/Qwen3-8B, --port, "${port}"], health: /health, port: 0}
      judged: {verb: judge, args: {input: pairs.jsonl, backend: {backend: openai, base_url: "${judge_server.url}/v1"}}}

Algorithm (driven by :func:`midtrain.experiment.executor.execute`, in the runner process, also with ``jobs > 1``):

1. **References.** ``${NAME.url}`` (``http://HOST:PORT``) and ``${NAME.port}`` name a service; the stages using
   them depend on it. At plan time they resolve to the *nominal* URL (port 0 when the port is picked at run time):
   the stage's cache key is computed from it and the service's spec, so a free port that changes between runs
   never re-runs a finished stage.
2. **Start** (:meth:`Services.ensure`), just before the first stage that uses the service actually runs (a rerun
   whose users are all finished starts nothing): ``port: 0`` picks a free port (the last run's when it is free or
   frees within the stop grace period, as after a killed run whose server is still stopping, so that a resumed
   stage sees the same URL); ``${port}`` is replaced in the command and ``env``; stdout and stderr go to
   ``OUT/<seed-S|shared>/NAME.log``. The runner then polls the health endpoint (a path on the URL, or a full URL)
   until it answers HTTP 200; a server that exits first, or is not healthy within ``startup_timeout_s``, fails the
   experiment with the tail of its log. The users then get the real URL (their configs are re-resolved).
3. **Stop** (:meth:`Services.finished`, :meth:`Services.stop_all`): when its last user finished, and in any case
   when the experiment ends or fails: SIGTERM to the server's process group, SIGKILL after ``stop_grace_s``, then
   a wait until the group has no process left (the watchdog stops and reaps the server's whole tree before it exits;
   where it cannot, orphaned children are reaped by init, which may take a second): when ``run`` returns, nothing
   of the service runs. A service is never "complete" and never cached.

A service is its own: a fixed ``port`` that something already listens on before the start is an error naming the
port (a foreign server answering ``/health`` there would otherwise pass for the service), and the service is ready
only while its own process runs: health answers count only while the server has not exited, and a service that
exits while stages still use it fails the next of them.

No orphans, even after ``kill -9`` of the runner: the command runs under a small **watchdog**
(:mod:`midtrain.experiment.watchdog`, run with ``python -I``), started by the runner in a new session, which
starts the server as its own child, becomes a child subreaper so that every descendant stays in its tree (one that
calls ``setsid`` included), and polls ``getppid()``; when the server exits, the runner stops the service or the
runner is gone, it sends SIGTERM to the group and to every descendant and SIGKILL after the grace period. Why not
``prctl(PR_SET_PDEATHSIG)`` in the server's ``preexec_fn``: the signal fires when the *thread* that forked dies, not
the process (a service started from a worker thread would die with it); it is not inherited by the server's own
children (``vllm serve`` runs its engine in child processes, which would survive); and it leaves a window between
fork and prctl. The watchdog exists before the server does (no window), stops the whole tree, and depends on no
thread of the runner. Its limit: a process the server has another daemon start (``docker run -d``) is not its
descendant.
"""

from __future__ import annotations

import errno
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
from midtrain.experiment.watchdog import KILL_WAIT_S, descendants

SERVICE = "service"  # the verb recorded for service steps
PORT = "${port}"
TAIL_LINES = 20
# How long :meth:`Service.stop` waits, after SIGKILL, for the last member of the service's process group to be
# gone. Nothing can delay a SIGKILLed process but the kernel tearing it down and its parent reaping it; the server's
# orphaned children are reaped by init, on init's own schedule (about 1.5 s inside some VMs). Past this bound init
# is not reaping at all, and waiting longer would not help.
REAP_TIMEOUT_S = 10.0

WATCHDOG = Path(__file__).with_name("watchdog.py")  # run as `python -I WATCHDOG RUNNER_PID GRACE_S COMMAND...`
# How much longer than the grace period :meth:`Service.stop` waits for the watchdog, which spends up to the grace
# period on SIGTERM and a few seconds on SIGKILL and reaping before it exits.
WATCHDOG_MARGIN_S = KILL_WAIT_S + 2.0


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


def bind_test(host: str, port: int) -> int | None:
    """Bind ``port`` on ``host`` (0: any free port) as a server binds it and release it at once; the port, or None
    when it is in use. SO_REUSEADDR, as servers set it (uvicorn, ``http.server``): a port whose last server's
    connections linger in TIME_WAIT, as after a killed run, counts as free. Other errors (a host that is not an
    address of this machine) propagate."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "localhost") else "127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return None
            raise
        return int(s.getsockname()[1])


def check_port_free(key: str, host: str, port: int) -> None:
    """ConfigError naming the service's ``port`` key when ``port`` on ``host`` is taken before the service starts. A
    host that is not an address of this machine cannot be tested and is left to the server."""
    try:
        taken = bind_test(host, port) is None
    except OSError:
        return
    if taken:
        raise ConfigError(
            f"key 'stages.{key.split('@')[0]}.service.port': port {port} on {host} is already in use before the service "
            "started (another server is listening there); stop it, or use port: 0 for a free port"
        )


def free_port(host: str, prefer: int = 0, wait_s: float = 0.0) -> int:
    """A TCP port free on ``host`` now: ``prefer`` if it is free or becomes free within ``wait_s`` seconds (the last
    run's server may still be stopping), else any (the server binds it a moment later: a race we accept)."""
    end = time.monotonic() + wait_s
    while prefer:
        try:
            if bind_test(host, prefer) is not None:
                return prefer
        except OSError:
            break
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    try:
        return int(bind_test(host, 0) or 0)
    except OSError as e:
        raise MidtrainError(f"no free TCP port on {host}: {e}") from None


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


def group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until process group ``pgid`` has no member left, zombies included; whether it
    is gone. Only probes (signal 0): it never signals anything."""
    end = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a member we may not signal: the group still exists
            pass
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


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
        # directory keys on it: another port would make a started stage "another run"), waiting for it while the
        # last run's server may still be stopping; any free port otherwise
        if self.spec.port:
            check_port_free(self.key, self.spec.host, self.spec.port)
        last = last_port(self.log_path.with_suffix(".json"))
        self.port = self.spec.port or free_port(self.spec.host, prefer=last, wait_s=self.spec.stop_grace_s + WATCHDOG_MARGIN_S)
        argv = program_path([a.replace(PORT, str(self.port)) for a in self.spec.command])
        env = {**os.environ, **{k: v.replace(PORT, str(self.port)) for k, v in self.spec.env.items()}}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log(f"experiment: service {self.key}: starting {' '.join(argv)} (log {self.log_path})")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(WATCHDOG), str(os.getpid()), str(self.spec.stop_grace_s), *argv],
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
            if healthy(url) and not exited(self.proc.pid):  # an answer counts only while our server runs
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
        """SIGTERM to the process group, SIGKILL after the grace period (grandchildren included), then wait until no
        process of the group is left; the watchdog's exit status (the server's); idempotent."""
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)  # the watchdog then stops the server's whole tree itself, SIGKILL included
        end = time.monotonic() + self.spec.stop_grace_s + WATCHDOG_MARGIN_S
        while not exited(self.proc.pid) and time.monotonic() < end:
            time.sleep(0.05)
        if not exited(self.proc.pid):  # a stuck watchdog: its tree, setsid'd descendants included, goes with it
            log(f"experiment: service {self.key}: still running {self.spec.stop_grace_s:g}s after SIGTERM; SIGKILL")
            for pid in descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        # The watchdog is not reaped yet, so its pid still names the group: SIGKILL reaches any process the server
        # left behind, and never an unrelated process that reused the pid.
        self._signal(signal.SIGKILL)
        pgid = self.proc.pid
        code = self.proc.wait()
        self.proc = None
        # The server's children (`transformers serve`'s workers, vLLM's engine) were orphaned when the server exited,
        # so init reaps them, not us, and until it does they hold the group. Stopping means they are gone: a caller
        # that sees the experiment return must find no process of the service (issue 27: a test checking at once
        # failed while they lived ~1 s longer). From here on only signal 0: the watchdog is reaped, and once the
        # group is empty its number may be reused.
        if not group_gone(pgid, REAP_TIMEOUT_S):
            log(f"experiment: service {self.key}: process group {pgid} still has members {REAP_TIMEOUT_S:g}s after SIGKILL")
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
        """Start the services ``keys`` that are not running; their ports. A service whose server has exited since
        it started is an error: a stage must never talk to whatever answers on its port now."""
        for key in keys:
            svc = self.running.get(key)
            if svc is not None and svc.proc is not None and exited(svc.proc.pid):
                code = self.running.pop(key).stop()
                raise MidtrainError(
                    f"service {key} exited with code {code} while stages still use it; {svc.log_path} ends:\n{log_tail(svc.log_path)}"
                )
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
    "bind_test",
    "check_port_free",
    "exited",
    "free_port",
    "group_gone",
    "healthy",
    "log_tail",
    "ref_value",
    "service_record",
]
