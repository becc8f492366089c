"""Backends: the OpenAI-compatible client over real HTTP on 127.0.0.1 (scripted server), the in-process
transformers backend (also served over HTTP, and its raw completions for evaluation), the programmatic backend,
templates and errors. Every backend is built from its config section."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from midtrain.errors import ConfigError, MidtrainError
from midtrain.llm.backends import (
    CompletionBackend,
    OpenAIBackend,
    ProgrammaticBackend,
    TextBackend,
    TransformersBackend,
    VLLMBackend,
    make_backend,
)
from midtrain.llm.base import BackendError
from midtrain.llm.config import BackendConfig
from midtrain.llm.prompts import fill_template, load_prompt
from midtrain.llm.serve import HTTPFault, OpenAIServer, model_responder
from midtrain.models.generation import generate
from midtrain.models.init import load_model
from midtrain.models.tokenizer import load_tokenizer


def openai(model: str = "m", **kw) -> OpenAIBackend:
    """An OpenAI-compatible client built, as every backend is, from its config section."""
    return OpenAIBackend(BackendConfig(backend="openai", model=model, **kw))


class Script:
    """A responder that fails the first ``k`` attempts of a prompt according to its prefix."""

    def __init__(self) -> None:
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, prompt: str, body: dict) -> str:
        with self.lock:
            self.attempts[prompt] += 1
            k = self.attempts[prompt]
        if prompt.startswith("e500") and k <= 2:
            raise HTTPFault(500)
        if prompt.startswith("e429") and k <= 1:
            raise HTTPFault(429, retry_after=0.3)
        if prompt.startswith("slow") and k <= 1:
            time.sleep(1.0)
        if prompt.startswith("dead"):
            raise HTTPFault(503)
        if prompt.startswith("e400"):
            raise HTTPFault(400, "bad request")
        if prompt.startswith("crash"):
            raise RuntimeError("responder bug")
        return f"ok:{prompt}:{body.get('max_tokens')}"


def client(srv: OpenAIServer, **kw) -> OpenAIBackend:
    opts = dict(api="chat", base_url=srv.url, timeout_s=0.4, max_retries=3, backoff_s=0.01, max_backoff_s=0.05, max_concurrency=4)
    opts.update(kw)
    return openai("scripted", **opts)


def test_retries_5xx_429_and_timeouts_then_succeeds():
    script = Script()
    with OpenAIServer(script) as srv:
        b = client(srv, max_backoff_s=1.0)
        t0 = time.time()
        out = b.generate(["e500 a", "e429 b", "slow c", "plain"], max_new_tokens=7)
        assert out == [["ok:e500 a:7"], ["ok:e429 b:7"], ["ok:slow c:7"], ["ok:plain:7"]]
        assert time.time() - t0 >= 0.3  # Retry-After honoured
        assert script.attempts["e500 a"] == 3 and script.attempts["e429 b"] == 2 and script.attempts["slow c"] == 2
        assert b.stats["http_500"] == 2 and b.stats["http_429"] == 1 and b.stats["timeouts"] == 1
        assert b.stats["retries"] == 4


def test_a_dead_prompt_fails_alone_and_is_not_retried_on_4xx():
    script = Script()
    with OpenAIServer(script) as srv:
        b = client(srv)
        out = b.generate(["dead x", "ok y", "e400 z", "crash w"], max_new_tokens=3, errors="return")
        assert isinstance(out[0], BackendError) and "gave up after 4 attempts" in str(out[0])
        assert out[1] == ["ok:ok y:3"]
        assert isinstance(out[2], BackendError) and "HTTP 400" in str(out[2])
        assert isinstance(out[3], BackendError)  # a server-side 500 that never recovers
        assert script.attempts["dead x"] == 4 and script.attempts["e400 z"] == 1
        with pytest.raises(BackendError):
            b.generate(["dead again"], max_new_tokens=3)


def test_bounded_concurrency():
    def slow(prompt, body):
        time.sleep(0.05)
        return prompt

    with OpenAIServer(slow) as srv:
        b = client(srv, max_concurrency=3, timeout_s=5)
        out = b.generate([f"p{i}" for i in range(15)], max_new_tokens=1)
        assert [o[0] for o in out] == [f"p{i}" for i in range(15)]
        assert srv.stats["max_in_flight"] == 3


def test_n_choices_completions_api_auth_and_servers_ignoring_n(monkeypatch):
    with OpenAIServer(lambda p, b: f"c{b.get('n')}", max_n=1) as srv:
        monkeypatch.setenv("MIDTRAIN_API_BASE", srv.url)
        monkeypatch.setenv("MY_KEY", "sk-test")
        b = make_backend(BackendConfig(backend="openai", model="m", api="completions", api_key_env="MY_KEY"))
        assert isinstance(b, OpenAIBackend) and b.base_url == srv.url
        out = b.generate(["x"], max_new_tokens=2, n=3)
        assert out == [["c3", "c2", "c1"]]  # the server gave one choice a time: the rest were asked again
        assert srv.last_headers.get("Authorization") == "Bearer sk-test"


def test_backoff_schedule():
    b = openai(base_url="http://127.0.0.1:9/v1", backoff_s=1.0, max_backoff_s=10.0)
    for attempt in range(6):
        d = b.backoff(attempt)
        assert 0.5 * min(10, 2**attempt) <= d <= min(10, 2**attempt)
    assert b.backoff(0, retry_after=4.0) == 4.0 and b.backoff(0, retry_after=99) == 10.0


def test_connection_refused_is_retried_then_fails():
    with OpenAIServer(lambda p, b: p) as srv:
        url = srv.url
    b = openai(base_url=url, max_retries=1, backoff_s=0.01, timeout_s=1)
    out = b.generate(["x"], max_new_tokens=1, errors="return")
    assert isinstance(out[0], BackendError) and b.stats["connection_errors"] == 2


def test_sync_generate_inside_a_running_loop_and_async_api():
    with OpenAIServer(lambda p, b: p.upper()) as srv:
        b = client(srv)

        async def main():
            sync = b.generate(["a"], max_new_tokens=1)  # e.g. called from a sync reward inside an event loop
            asy = await b.agenerate(["b", "c"], max_new_tokens=1)
            await b.aclose()
            return sync, asy

        assert asyncio.run(main()) == ([["A"]], [["B"], ["C"]])


def test_config_errors(monkeypatch):
    monkeypatch.delenv("MIDTRAIN_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="base_url"):
        openai(base_url="")
    with pytest.raises(ConfigError, match="model"):
        BackendConfig(backend="transformers").check()
    with pytest.raises(ConfigError, match="model"):
        TransformersBackend(BackendConfig(backend="transformers"))
    with pytest.raises(MidtrainError, match="pip install 'midtrain\\[vllm\\]'"):
        VLLMBackend(BackendConfig(backend="vllm", model="some/model"))
    with pytest.raises(ConfigError, match="'programmatic' has no rules for this stage's prompts"):
        make_backend(BackendConfig(backend="programmatic"))  # only a stage that knows its prompts can answer them


def test_templates():
    t = r"\frac{a}{b} {text} {other} {{text}}"
    assert fill_template(t, text="V {text}") == r"\frac{a}{b} V {text} {other} {V {text}}"
    for name, key in (("augment", "{text}"), ("judge", "{candidate}"), ("suffix_task", "{prefix}")):
        assert key in load_prompt(name)
    with pytest.raises(ConfigError):
        load_prompt("nope")
    with pytest.raises(ConfigError):
        load_prompt("/missing/file.txt")


def test_the_programmatic_backend_answers_with_its_callers_rule():
    scripted = make_backend(BackendConfig(backend="programmatic"), respond=lambda p: p[::-1])
    assert isinstance(scripted, ProgrammaticBackend) and isinstance(scripted, TextBackend)
    assert asyncio.run(scripted.agenerate(["ab", "cd"], max_new_tokens=1, n=2)) == [["ba"] * 2, ["dc"] * 2]
    assert scripted.stats["requests"] == 4

    def flaky(prompt: str) -> str:
        if prompt == "bad":
            raise ValueError("no rule for this prompt")
        return "fine"

    out = ProgrammaticBackend(flaky).generate(["ok", "bad"], max_new_tokens=1, errors="return")
    assert out[0] == ["fine"] and isinstance(out[1], BackendError) and out[1].kind == "ValueError"
    with pytest.raises(BackendError, match="no rule"):
        ProgrammaticBackend(flaky).generate(["bad"], max_new_tokens=1)


def test_transformers_backend_and_serving_it_over_http(nano_model):
    b = TransformersBackend(BackendConfig(backend="transformers", model=str(nano_model), batch_size=4))
    prompts = ["a=1.b=a+2.", "c=3."]
    direct = b.generate(prompts, max_new_tokens=6)
    assert len(direct) == 2 and all(len(x) == 1 and isinstance(x[0], str) for x in direct)
    assert b.stats["completion_tokens"] > 0
    assert asyncio.run(b.agenerate(prompts, max_new_tokens=6)) == direct  # greedy: deterministic
    assert [len(x) for x in b.generate(prompts, max_new_tokens=4, temperature=1.0, n=3)] == [3, 3]
    with OpenAIServer(model_responder(b)) as srv:  # the tiny model behind real HTTP
        http = openai("nano", base_url=srv.url, api="completions", timeout_s=30)
        assert http.generate(prompts, max_new_tokens=6) == direct


def test_raw_completions_for_evaluation_match_batched_generation(nano_model):
    """``complete`` (what ``midtrain eval`` calls) is the shared generation path: same texts, token counts and
    finished flags as :func:`midtrain.models.generation.generate`, stop strings kept, no second <bos>."""
    tok = load_tokenizer(nano_model)
    b = TransformersBackend(BackendConfig(backend="transformers", model=str(nano_model), batch_size=8, chat_template=False), tokenizer=tok)
    assert isinstance(b, CompletionBackend) and b.tokenizer is tok
    prompts = ["a=1.b=a+2.", "c=3.d=c"]
    got = b.complete(prompts, max_new_tokens=8, temperature=1.0, seed=7, stop=["."])
    want = [g[0] for g in generate(load_model(nano_model), tok, prompts, max_new_tokens=8, temperature=1.0, seed=7, stop=["."])]
    assert [(g.text, g.tokens, g.finished) for g in got] == [(g.text, g.tokens, g.finished) for g in want]
    assert all(g.tokens <= 8 for g in got) and b.stats["completion_tokens"] == sum(g.tokens for g in got)
    with_bos = b.complete([tok.bos_token + p for p in prompts], max_new_tokens=8, temperature=1.0, seed=7, stop=["."])
    assert [g.text for g in with_bos] == [g.text for g in got]  # a prompt that brings its <bos> gets no second one
