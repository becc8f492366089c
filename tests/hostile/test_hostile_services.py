"""Hostile services (issue 32, items 1 and 6): a service owns its port and its whole process tree.

- A fixed ``port:`` on which a foreign server already answers ``/health`` is an error naming the port, even when the
  service's own command would exit at once (exit 3): the experiment never talks to the foreign server.
- A service is ready only while its own process runs: one that exits while stages still use it fails the next one.
- A grandchild the server daemonises (double fork + ``setsid``: it leaves the server's process group and its parent
  exits) is gone when the experiment ends, and after ``kill -9`` of the runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from hostile_support import Env, check_message, leftovers, run_cli, sub_env

from midtrain.errors import MidtrainError
from midtrain.experiment.experiment import run
from midtrain.experiment.graph import ExperimentConfig
from midtrain.experiment.service import Services, ServiceSpec, exited, healthy

pytestmark = pytest.mark.timeout(120)

# A service (stdlib): argv = port, state dir, mode. "daemon" first daemonises a grandchild (double fork, setsid) that
# sleeps and writes its pid to state/grandchild; every mode answers /health and chat completions with a YES verdict.
SERVICE = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, state, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(os.path.join(state, "pid"), "w").write(str(os.getpid()))
if mode == "exit3":
    sys.exit(3)
if mode == "daemon" and os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(os.path.join(state, "grandchild.tmp"), "w").write(str(os.getpid()))
        os.rename(os.path.join(state, "grandchild.tmp"), os.path.join(state, "grandchild"))
        time.sleep(600)
    os._exit(0)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": "VERDICT: YES"}}]})

ThreadingHTTPServer.request_queue_size = 128  # many judge requests at once
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


class Foreign(BaseHTTPRequestHandler):
    """A server that is not the service: answers /health with 200 and records every request."""

    seen: list[str] = []

    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        Foreign.seen.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        Foreign.seen.append(f"POST {self.path}")
        self.send_response(500)
        self.end_headers()


@pytest.fixture
def foreign() -> Iterator[int]:
    """A foreign HTTP server on a loopback port; its port."""
    Foreign.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def experiment(env: Env, mode: str, port: int = 0) -> dict:
    """An experiment: the service, and a judge stage that talks to it."""
    script, state = env.tmp / "srv.py", env.tmp / "state"
    script.write_text(SERVICE)
    state.mkdir(exist_ok=True)
    judge = {
        "verb": "judge",
        "per_seed": False,
        "args": {
            "input": str(env.a.pairs),
            "thoughts": False,
            "backend": {"backend": "openai", "model": "m", "base_url": "${svc.url}/v1", "max_retries": 0, "timeout_s": 30},
        },
    }
    svc = {"command": [sys.executable, str(script), "${port}", str(state), mode], "port": port, "startup_timeout_s": 10, "stop_grace_s": 2}
    return {
        "name": "svc",
        "out": str(env.tmp / "out"),
        "report": False,
        "stages": {"svc": {"per_seed": False, "service": svc}, "judged": judge},
    }


def test_a_fixed_port_a_foreign_server_answers_on_is_refused(env: Env, foreign: int, capsys) -> None:
    conf = env.write("exp.yaml", yaml.safe_dump(experiment(env, "exit3", port=foreign)))
    outcome = run_cli(["experiment", "run", conf], capsys)
    check_message(outcome, 2, ["stages.svc.service.port", f"port {foreign}", "already in use"])
    assert not any(s.startswith("POST") for s in Foreign.seen), f"the experiment talked to the foreign server: {Foreign.seen}"
    assert not (env.tmp / "state" / "pid").exists(), "the service was started although its port was taken"
    assert not (env.tmp / "out" / "shared" / "judged" / "verdicts.jsonl").exists()
    assert not leftovers(env.tmp)


def test_a_service_that_exits_at_once_is_never_ready(env: Env, capsys) -> None:
    conf = env.write("exp.yaml", yaml.safe_dump(experiment(env, "exit3")))
    outcome = run_cli(["experiment", "run", conf], capsys)
    assert outcome.code == 2 and "Traceback" not in outcome.err
    assert "exited with code 3" in outcome.err
    assert not (env.tmp / "out" / "shared" / "judged" / "verdicts.jsonl").exists()


def test_a_service_that_exits_while_in_use_is_not_ready_any_more(env: Env) -> None:
    data = experiment(env, "ok")
    spec = ServiceSpec.from_dict(data["stages"]["svc"]["service"])
    with Services({"svc@shared": (spec, env.tmp / "svc.log")}, {"svc@shared": {"a", "b"}}) as services:
        port = services.ensure(["svc@shared"])["svc@shared"]
        assert healthy(f"http://127.0.0.1:{port}/health")
        os.kill(int((env.tmp / "state" / "pid").read_text()), signal.SIGKILL)  # the server dies under its users
        watchdog = services.running["svc@shared"].proc.pid
        assert wait_for(lambda: exited(watchdog), 10), "the watchdog outlived its server"
        with pytest.raises(MidtrainError, match=r"service svc@shared exited with code -?\d+ while stages still use it"):
            services.ensure(["svc@shared"])
        assert not services.running


def test_a_daemonised_grandchild_is_gone_when_the_experiment_ends(env: Env) -> None:
    res = run(ExperimentConfig.from_dict(experiment(env, "daemon")))
    assert res.data["stages"]["0"]["judged"]["metrics"]  # the judge talked to the service
    grandchild = int((env.tmp / "state" / "grandchild").read_text())
    if alive(grandchild):  # the failure: leave nothing behind
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail(f"the service's daemonised grandchild {grandchild} outlived the experiment")
    assert "stopped with its whole process tree" in (env.tmp / "out" / "shared" / "svc.log").read_text()


def test_a_daemonised_grandchild_is_gone_after_kill_9_of_the_runner(env: Env) -> None:
    data = experiment(env, "daemon")
    data["stages"]["judged"]["args"]["input"] = env.jsonl("many.jsonl", [{"completion": "x", "reference": "y"}] * 5000)
    conf = env.write("exp.yaml", yaml.safe_dump(data))
    runner = subprocess.Popen(
        [sys.executable, "-m", "midtrain", "experiment", "run", conf],
        env=sub_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    state, grandchild = env.tmp / "state", 0
    try:
        assert wait_for(lambda: (state / "grandchild").exists(), 60), "the service never daemonised its grandchild"
        grandchild = int((state / "grandchild").read_text())
        server = int((state / "pid").read_text())
        assert alive(grandchild) and alive(server)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        assert wait_for(lambda: not alive(server) and not alive(grandchild), 15), "the service's tree outlived its runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if grandchild and alive(grandchild):  # the test failed: leave nothing behind
            os.kill(grandchild, signal.SIGKILL)
    info = json.loads((env.tmp / "out" / "shared" / "svc.json").read_text())
    assert wait_for(lambda: not alive(info["pgid"]), 15)
