"""A minimal OpenAI-compatible HTTP server (standard library) for tests, demos and benchmarks on 127.0.0.1.

Not a production server (use ``vllm serve``, SGLang or TGI): one thread per connection, no batching across
requests. It answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``n`` choices) and
``GET /v1/models`` from a ``respond(prompt, body) -> str`` function, which may sleep (slow answers, timeouts) or
raise :class:`HTTPFault` (429, 500, 401, a 302 with its ``Location``, … with an optional ``Retry-After`` and any
other headers). Stop the server and its URL refuses connections (a dead server). :func:`model_responder` serves a local
model through any :class:`~midtrain.llm.backends.TextBackend`. Launch::

    python -m midtrain.llm.serve --model runs/nano --port 8000     # then --annotator.base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

Responder = Callable[[str, dict[str, Any]], str]


class HTTPFault(Exception):
    """Raised by a responder to answer with an HTTP error status."""

    def __init__(
        self, status: int, message: str = "scripted fault", retry_after: float | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after, self.headers = status, message, retry_after, dict(headers or {})


def prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body["messages"])
    p = body.get("prompt", "")
    return p[0] if isinstance(p, list) else str(p)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "malformed JSON"}})
            return
        chat = self.path.rstrip("/").endswith("/chat/completions")
        if not chat and not self.path.rstrip("/").endswith("/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        srv = self.server
        with srv.lock:
            srv.stats["requests"] += 1
            srv.last_headers = dict(self.headers)
            srv.in_flight += 1
            srv.stats["max_in_flight"] = max(srv.stats["max_in_flight"], srv.in_flight)
        prompt = prompt_of(body)
        n = int(body.get("n") or 1) if srv.max_n is None else min(int(body.get("n") or 1), srv.max_n)
        try:
            texts = [srv.respond(prompt, body) for _ in range(n)]
        except HTTPFault as f:
            self.server.stats[f"http_{f.status}"] += 1
            headers = {"Retry-After": f"{f.retry_after:g}"} if f.retry_after is not None else {}
            headers.update(f.headers)
            self._send(f.status, {"error": {"message": f.message}}, headers)
            return
        except Exception as e:  # noqa: BLE001 - a responder bug is a 500, never a dead server
            self.server.stats["http_500"] += 1
            self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            return
        finally:
            with srv.lock:
                srv.in_flight -= 1
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"} for i, t in enumerate(texts)]
        else:
            choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
        self.server.stats["ok"] += 1
        self._send(
            200,
            {
                "id": f"cmpl-{self.server.stats['requests']}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": body.get("model") or self.server.model,
                "choices": choices,
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    respond: Responder
    model: str
    stats: Counter
    max_n: int | None = None
    in_flight: int = 0
    last_headers: dict[str, str] = {}
    lock = threading.Lock()


class OpenAIServer:
    """``with OpenAIServer(respond) as srv: ... srv.url`` — a server on 127.0.0.1 in a background thread."""

    def __init__(
        self, respond: Responder, *, host: str = "127.0.0.1", port: int = 0, model: str = "scripted", max_n: int | None = None
    ) -> None:
        """``max_n`` caps the choices per response (to mimic servers that ignore ``n``)."""
        self._srv = _Server((host, port), _Handler)
        self._srv.respond, self._srv.model, self._srv.stats = respond, model, Counter()
        self._srv.max_n, self._srv.lock, self._srv.last_headers = max_n, threading.Lock(), {}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{cast(str, host)}:{port}/v1"  # an AF_INET socket's address: typeshed allows bytes too

    @property
    def stats(self) -> Counter:
        """requests, ok, http_<status>, max_in_flight."""
        return self._srv.stats

    @property
    def last_headers(self) -> dict[str, str]:
        return self._srv.last_headers

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def model_responder(backend: Any) -> Responder:
    """Serve a text backend: one generation per request, with the request's max_tokens and temperature."""
    lock = threading.Lock()

    def respond(prompt: str, body: dict[str, Any]) -> str:
        with lock:
            return backend.generate(
                [prompt], max_new_tokens=int(body.get("max_tokens") or 64), temperature=float(body.get("temperature") or 0.0)
            )[0][0]

    return respond


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m midtrain.llm.serve", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--model", required=True, help="Local checkpoint directory.")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    from midtrain.llm.backends import TransformersBackend
    from midtrain.llm.config import BackendConfig

    srv = OpenAIServer(
        model_responder(TransformersBackend(BackendConfig(backend="transformers", model=args.model))),
        host=args.host,
        port=args.port,
        model=args.model,
    )
    print(f"serving {args.model} at {srv.url} (Ctrl-C to stop)", flush=True)
    try:
        srv._srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
