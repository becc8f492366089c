"""Service stages of experiments: a server started for later stages, its URL handed on, stopped at the end,
startup failures with the log's tail, no orphan after ``kill -9`` of the runner, ``jobs > 1``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from midtrain.errors import ConfigError, MidtrainError
from midtrain.experiment.experiment import run
from midtrain.experiment.graph import ExperimentConfig, plan
from midtrain.experiment.service import Services, ServiceSpec, free_port, healthy

# A tiny OpenAI-compatible server (stdlib): argv = port, state dir, mode. It writes its pid, logs each request with
# the Host header it was sent to, and answers every chat completion with a YES verdict.
SERVER = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, state, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(os.path.join(state, "pid"), "w").write(str(os.getpid()))
print("test server starting on", port, flush=True)
if mode == "crash":
    print("boom: cannot load the model", flush=True)
    sys.exit(3)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200 if self.path == "/health" and mode != "never" else 503, {})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(os.path.join(state, "requests"), "a") as f:
            f.write(f"{self.path} {self.headers.get('Host')}\n")
        if mode == "hang":
            time.sleep(600)
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "VERDICT: YES"}}], "usage": {"completion_tokens": 2}})

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def wait_for(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def server(tmp_path) -> tuple[Path, Path]:
    """(server script, state dir)."""
    (tmp_path / "srv.py").write_text(SERVER)
    (tmp_path / "state").mkdir()
    return tmp_path / "srv.py", tmp_path / "state"


def experiment(tmp_path: Path, server: tuple[Path, Path], mode: str = "ok", judges: int = 1, **kw) -> dict:
    script, state = server
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"completion": f"the answer is {i}", "reference": f"{i}"}) + "\n" for i in range(3)))
    judge = {
        "verb": "judge",
        "per_seed": False,
        "args": {
            "input": str(pairs),
            "thoughts": False,
            "backend": {"backend": "openai", "model": "m", "base_url": "${svc.url}/v1", "max_retries": 0, "timeout_s": 30},
        },
    }
    svc = {"command": [sys.executable, str(script), "${port}", str(state), mode], "port": 0, "startup_timeout_s": 3, "stop_grace_s": 2}
    stages = {"svc": {"per_seed": False, "service": svc}, **{f"judge{i}": judge for i in range(judges)}}
    return {"name": "svc", "out": str(tmp_path / "out"), "seeds": [0], "stages": stages, "report": False, **kw}


def test_service_url_reaches_a_judge_stage_and_the_server_is_stopped(tmp_path, server):
    _, state = server
    cfg = ExperimentConfig.from_dict(experiment(tmp_path, server))
    res = run(cfg)
    pid = int((state / "pid").read_text())
    info = json.loads((tmp_path / "out" / "shared" / "svc.json").read_text())
    assert info["port"] > 0 and info["url"] == f"http://127.0.0.1:{info['port']}"
    requests = (state / "requests").read_text().splitlines()
    assert requests == [f"/v1/chat/completions 127.0.0.1:{info['port']}"] * 3  # the judge talked to the service
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "shared" / "judge0" / "verdicts.jsonl").read_text().splitlines()]
    assert [v["score"] for v in verdicts] == [1.0, 1.0, 1.0]  # the server's YES, not a rule
    assert res.data["stages"]["0"]["svc"]["verb"] == "service"
    assert not alive(pid) and not alive(info["pgid"])  # stopped at the end
    assert "test server starting" in (tmp_path / "out" / "shared" / "svc.log").read_text()
    (state / "pid").unlink()
    run(cfg)  # every user is done: the service is not started again (and the free port did not change the key)
    assert not (state / "pid").exists()


def test_a_service_that_never_becomes_healthy_fails_with_its_log(tmp_path, server):
    _, state = server
    cfg = ExperimentConfig.from_dict(experiment(tmp_path, server, mode="never"))
    with pytest.raises(MidtrainError, match=r"(?s)did not answer 200 within 3s.*test server starting on"):
        run(cfg)
    assert not alive(int((state / "pid").read_text()))
    assert not (tmp_path / "out" / "shared" / "judge0" / "verdicts.jsonl").exists()


def test_a_service_that_exits_fails_with_its_code_and_log(tmp_path, server):
    cfg = ExperimentConfig.from_dict(experiment(tmp_path, server, mode="crash"))
    with pytest.raises(MidtrainError, match=r"(?s)exited with code 3 .*boom: cannot load the model"):
        run(cfg)


def test_a_missing_program_fails_with_its_log(tmp_path, server):
    data = experiment(tmp_path, server)
    data["stages"]["svc"]["service"]["command"] = [str(tmp_path / "no-such-server"), "${port}"]
    with pytest.raises(MidtrainError, match=r"(?s)exited with code 127.*cannot start"):
        run(ExperimentConfig.from_dict(data))


def test_kill_9_of_the_runner_leaves_no_server(tmp_path, server):
    _, state = server
    conf = tmp_path / "exp.yaml"
    conf.write_text(yaml.safe_dump(experiment(tmp_path, server, mode="hang")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MIDTRAIN_QUIET": "1"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "midtrain", "experiment", "run", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pgid = 0
    try:
        assert wait_for(lambda: (state / "requests").exists(), 60), "the judge never reached the service"
        pid = int((state / "pid").read_text())
        pgid = json.loads((tmp_path / "out" / "shared" / "svc.json").read_text())["pgid"]
        assert alive(pid) and alive(pgid)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        assert wait_for(lambda: not alive(pid) and not alive(pgid), 10), "the server outlived its runner"
        assert "the experiment runner is gone" in (tmp_path / "out" / "shared" / "svc.log").read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if pgid and alive(pgid):  # the test failed: leave no server behind
            os.killpg(pgid, signal.SIGKILL)


def test_jobs_2_share_one_service(tmp_path, server):
    _, state = server
    cfg = ExperimentConfig.from_dict(experiment(tmp_path, server, judges=2, jobs=2, threads_per_job=1))
    run(cfg)
    assert len((state / "requests").read_text().splitlines()) == 6
    for i in range(2):
        verdicts = (tmp_path / "out" / "shared" / f"judge{i}" / "verdicts.jsonl").read_text().splitlines()
        assert [json.loads(v)["score"] for v in verdicts] == [1.0, 1.0, 1.0]
    assert not alive(int((state / "pid").read_text()))


def test_a_service_stops_when_its_last_user_is_done(tmp_path, server):
    script, state = server
    spec = ServiceSpec(command=[sys.executable, str(script), "${port}", str(state), "ok"], startup_timeout_s=5)
    services = Services({"s@shared": (spec, tmp_path / "s.log")}, {"s@shared": {"a", "b"}})
    with services:
        port = services.ensure(["s@shared"])["s@shared"]
        assert healthy(f"http://127.0.0.1:{port}/health")
        services.finished("a")
        assert healthy(f"http://127.0.0.1:{port}/health")  # b still needs it
        services.finished("b")
        assert not services.running and not alive(int((state / "pid").read_text()))


def test_plan_keys_and_references(tmp_path, server):
    data = experiment(tmp_path, server)
    steps = {s.key: s for s in plan(ExperimentConfig.from_dict(data))}
    judge = steps["judge0@shared"]
    assert judge.deps == ["svc"] and judge.config.backend.base_url == "http://127.0.0.1:0/v1"  # nominal until started
    assert judge.fingerprint and steps["svc@shared"].config.command[2] == "${port}"
    data["stages"]["svc"]["service"]["command"].append("--changed")
    changed = {s.key: s for s in plan(ExperimentConfig.from_dict(data))}["judge0@shared"]
    assert changed.fingerprint != judge.fingerprint  # another server → the users run again
    bad = experiment(tmp_path, server)
    bad["stages"]["judge0"]["args"]["backend"]["base_url"] = "${svc}"
    with pytest.raises(ConfigError, match=r"is a service: use '\$\{svc.url\}'"):
        ExperimentConfig.from_dict(bad)
    bad = experiment(tmp_path, server)
    bad["stages"]["svc"]["service"]["health"] = "health"
    with pytest.raises(ConfigError, match="stages.svc.service.health"):
        ExperimentConfig.from_dict(bad)


def test_free_port_prefers_the_last_one():
    port = free_port("127.0.0.1")
    assert free_port("127.0.0.1", prefer=port) == port


def test_a_program_of_this_virtualenv_is_found_without_activating_it(monkeypatch):
    from midtrain.experiment.service import program_path

    monkeypatch.setenv("PATH", "/nonexistent")  # as when `.venv/bin/midtrain` runs without `source .venv/bin/activate`
    name = Path(sys.executable).name
    assert program_path([name, "-V"]) == [str(Path(sys.executable).parent / name), "-V"]
    assert program_path(["no-such-program-xyz", "a"]) == ["no-such-program-xyz", "a"]  # left to fail with its name
    assert program_path(["/bin/sh", "-c", "true"]) == ["/bin/sh", "-c", "true"]


# A server that leaves a child behind: the child ignores SIGTERM, so it outlives the server and dies only by the
# group's SIGKILL, orphaned by then (its reaper is init, not the runner). argv = port, file for the child's pid.
ORPHANING_SERVER = r"""
import subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[2], "w").write(str(child.pid))

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200)
        self.end_headers()

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_stopped_service_leaves_no_process_in_its_group(tmp_path):
    (tmp_path / "srv.py").write_text(ORPHANING_SERVER)
    command = [sys.executable, str(tmp_path / "srv.py"), "${port}", str(tmp_path / "child")]
    spec = ServiceSpec(command=command, startup_timeout_s=30, stop_grace_s=5)
    services = Services({"s@shared": (spec, tmp_path / "s.log")}, {"s@shared": {"a"}})
    pgid = 0
    try:
        with services:
            services.ensure(["s@shared"])
            pgid = os.getpgid(int((tmp_path / "child").read_text()))
            assert pgid == json.loads((tmp_path / "s.json").read_text())["pgid"]  # the child is in the service's group
            services.finished("a")
        with pytest.raises(ProcessLookupError):  # at once: not even a zombie waiting for init to reap it
            os.killpg(pgid, 0)
    finally:
        if pgid:  # the test failed: leave nothing behind
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_taken_fixed_port_is_refused_and_time_wait_is_not_taken():
    import socket

    from midtrain.experiment.service import bind_test, check_port_free

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"key 'stages.svc.service.port': port {port} on 127.0.0.1 is already in use"):
        check_port_free("svc@shared", "127.0.0.1", port)
    assert bind_test("127.0.0.1", port) is None
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end of the connection lingers in TIME_WAIT on `port`
    client.close()
    listener.close()
    assert bind_test("127.0.0.1", port) == port  # as a server with SO_REUSEADDR binds it after a killed run
    check_port_free("svc@shared", "127.0.0.1", port)
    assert free_port("127.0.0.1", prefer=port) == port
