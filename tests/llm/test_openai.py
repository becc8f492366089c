"""Failures a real LLM service causes, made loud: failure kinds, fail-fast 401/403/3xx, api auto, request fields,
servers that ignore sampling, in-process backends failing per item, and `midtrain judge` refusing to finish an outage."""

from __future__ import annotations

import json
import threading
import types
from collections import Counter
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.llm.backends import OpenAIBackend, ProgrammaticBackend, TransformersBackend, VLLMBackend, make_backend
from midtrain.llm.base import BackendError, failure_message
from midtrain.llm.config import BackendConfig
from midtrain.llm.judge import DEFAULT_VERDICT_TOKENS, JudgeConfig, LLMJudge
from midtrain.llm.serve import HTTPFault, OpenAIServer


def dead_url() -> str:
    with OpenAIServer(lambda p, b: p) as srv:
        return srv.url  # nothing listens there any more


def quick(url: str, **kw) -> OpenAIBackend:
    opts = dict(base_url=url, max_retries=0, backoff_s=0.01, timeout_s=5, max_concurrency=4)
    opts.update(kw)
    return OpenAIBackend(BackendConfig(backend="openai", model="m", **opts))


def test_connection_refused_is_a_kind():
    (err,) = quick(dead_url()).generate(["x"], max_new_tokens=1, errors="return")
    assert isinstance(err, BackendError) and err.kind == "connection refused" and not err.fatal


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_fail_fast_with_a_key_hint(status, monkeypatch):
    monkeypatch.delenv("MIDTRAIN_NO_SUCH_KEY", raising=False)

    def respond(prompt: str, body: dict) -> str:
        raise HTTPFault(status, "no")

    with OpenAIServer(respond) as srv:
        b = quick(srv.url, api_key_env="MIDTRAIN_NO_SUCH_KEY", max_retries=5)
        out = b.generate([f"p{i}" for i in range(10)], max_new_tokens=1, errors="return")
        assert srv.stats["requests"] == 1  # one request, no retry storm: the other nine were never sent
    assert all(isinstance(e, BackendError) and e.fatal and e.kind == f"HTTP {status}" for e in out)
    assert "$MIDTRAIN_NO_SUCH_KEY" in out[0].hint and "is empty" in out[0].hint
    with pytest.raises(BackendError, match="check the API key"):
        b.generate(["later"], max_new_tokens=1)


def test_a_redirect_is_an_error_naming_the_location():
    def respond(prompt: str, body: dict) -> str:
        raise HTTPFault(302, "moved", headers={"Location": "https://api.example.org/v1/chat/completions"})

    with OpenAIServer(respond) as srv:
        b = quick(srv.url, api="chat")
        out = b.generate(["a", "b", "c"], max_new_tokens=1, errors="return")
        assert srv.stats["requests"] == 1
    assert out[0].kind == "HTTP 302 redirect" and out[0].fatal
    assert "https://api.example.org/v1/chat/completions" in str(out[0]) and "base_url" in out[0].hint

    def with_credentials(prompt: str, body: dict) -> str:
        raise HTTPFault(301, "moved", headers={"Location": "https://user:hunter2@api.example.org/v1"})

    with OpenAIServer(with_credentials) as srv:
        (err,) = quick(srv.url).generate(["a"], max_new_tokens=1, errors="return")
    assert "api.example.org" in str(err) and "hunter2" not in str(err) + err.hint  # secrets stay redacted


def completions_only(prompt: str, body: dict) -> str:
    """`transformers serve` on a model without a chat template: chat is HTTP 500, completions works."""
    if "messages" in body:
        raise HTTPFault(500, "Internal Server Error")
    return f"raw:{prompt}"


def test_api_auto_probes_once_and_falls_back_to_completions():
    with OpenAIServer(completions_only) as srv:
        b = quick(srv.url)
        out = b.generate([f"p{i}" for i in range(5)], max_new_tokens=1)
        assert out == [[f"raw:p{i}"] for i in range(5)] and b.resolved_api == "completions"
        assert srv.stats["http_500"] == 1 and srv.stats["requests"] == 6  # one chat probe, then completions only
    with OpenAIServer(lambda p, body: "chat" if "messages" in body else "raw") as srv:
        b = quick(srv.url)
        assert b.generate(["a", "b"], max_new_tokens=1) == [["chat"], ["chat"]] and b.resolved_api == "chat"


def test_requests_already_retrying_follow_the_api_auto_decision():
    """The first probe stays undecided (its /completions try fails too); the request then retries on chat while the
    next one probes and decides completions: the retries must switch, not fail on chat (seen on `transformers serve`)."""
    calls = Counter()

    def flaky_completions(prompt: str, body: dict) -> str:
        if "messages" in body:
            raise HTTPFault(500, "Internal Server Error")
        calls["completions"] += 1
        if calls["completions"] == 1:
            raise HTTPFault(500, "still loading")
        return f"raw:{prompt}"

    with OpenAIServer(flaky_completions) as srv:
        b = quick(srv.url, max_retries=4, backoff_s=0.3, max_backoff_s=0.3)
        out = b.generate(["a", "b"], max_new_tokens=1, errors="return")
    assert out == [["raw:a"], ["raw:b"]] and b.resolved_api == "completions"


def test_chat_on_a_model_without_template_says_what_to_do():
    def vllm_like(prompt: str, body: dict) -> str:
        if "messages" in body:
            raise HTTPFault(400, "default chat template is no longer allowed, so you must provide a chat template")
        return "ok"

    with OpenAIServer(vllm_like) as srv:
        (err,) = quick(srv.url, api="chat").generate(["x"], max_new_tokens=1, errors="return")
        assert "api to completions" in str(err) and err.kind == "HTTP 400"
        assert quick(srv.url).generate(["x"], max_new_tokens=1) == [["ok"]]  # auto finds its way
    assert BackendConfig().api == "auto"


def test_seed_and_extra_body_are_sent():
    bodies: list[dict] = []
    lock = threading.Lock()

    def respond(prompt: str, body: dict) -> str:
        with lock:
            bodies.append(body)
        return prompt

    with OpenAIServer(respond) as srv:
        cfg = BackendConfig(
            backend="openai", base_url=srv.url, api="chat", seed=7, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
        )
        b = make_backend(cfg)
        b.generate(["x"], max_new_tokens=1)
        b.generate(["y"], max_new_tokens=1, temperature=0.7)
        b.generate(["y"], max_new_tokens=1, temperature=0.7)  # a re-ask samples anew: another seed
    assert [body["seed"] for body in bodies] == [7, 7, 8]
    assert all(body["chat_template_kwargs"] == {"enable_thinking": False} for body in bodies)


def test_identical_samples_at_temperature_warn_once(monkeypatch):
    import midtrain.llm.base as base

    said: list[str] = []
    monkeypatch.setattr(base, "log", said.append)
    with OpenAIServer(lambda p, b: "always the same") as srv:  # a server that ignores temperature
        b = quick(srv.url, api="chat")
        b.generate(["a", "b"], max_new_tokens=1, temperature=0.7, n=3)
        assert b.sampling_warned and b.stats["identical_samples"] == 1
        quick(srv.url, api="chat").generate(["a"], max_new_tokens=1, temperature=0.0, n=3)
    assert len(said) == 1 and "came back identical" in said[0] and "do_sample" in said[0]


def test_in_process_backends_fail_per_item(monkeypatch, tokenizer_dir):
    import midtrain.models.generation as generation
    from midtrain.models.tokenizer import load_tokenizer

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(generation, "generate", boom)
    tb = TransformersBackend(BackendConfig(backend="transformers"), model=object(), tokenizer=load_tokenizer(tokenizer_dir))
    out = tb.generate(["a", "b"], max_new_tokens=1, errors="return")
    assert [e.kind for e in out] == ["RuntimeError", "RuntimeError"] and "out of memory" in str(out[0])

    vb = VLLMBackend.__new__(VLLMBackend)  # no vLLM here: the engine is a stand-in that fails
    vb._vllm = types.SimpleNamespace(SamplingParams=lambda **k: k)
    vb.llm = types.SimpleNamespace(generate=boom, chat=boom)
    vb.name, vb.chat, vb.seed, vb.stats = "vllm:x", True, 0, Counter()
    out = vb.generate(["a", "b", "c"], max_new_tokens=1, errors="return")
    assert len(out) == 3 and all(isinstance(e, BackendError) and e.kind == "RuntimeError" for e in out)


def test_vllm_completions_keep_the_stop_string_and_report_tokens():
    """The vLLM backend's ``complete`` (eval on a GPU) with a stand-in engine: sampling fields, and each output as a
    Generation (text, generated tokens, finished = stopped rather than cut at the budget)."""
    seen: dict = {}

    def engine_generate(prompts, params, use_tqdm):
        seen.update(prompts=prompts, params=params)
        out = types.SimpleNamespace
        return [
            out(outputs=[out(text="x=1.", token_ids=[5, 6, 7], finish_reason="stop")]),
            out(outputs=[out(text="y=2", token_ids=[8, 9], finish_reason="length")]),
        ]

    vb = VLLMBackend.__new__(VLLMBackend)
    vb._vllm = types.SimpleNamespace(SamplingParams=lambda **k: k)
    vb.llm = types.SimpleNamespace(generate=engine_generate)
    vb.name, vb.chat, vb.seed, vb.stats = "vllm:x", True, 0, Counter()
    gens = vb.complete(["a", "b"], max_new_tokens=2, temperature=0.6, top_p=0.9, stop=["."], seed=11)
    assert [(g.text, g.tokens, g.finished) for g in gens] == [("x=1.", 3, True), ("y=2", 2, False)]
    assert seen["prompts"] == ["a", "b"]  # raw prompts: no chat template, whatever cfg.chat_template says
    assert seen["params"] == dict(n=1, temperature=0.6, max_tokens=2, seed=11, top_p=0.9, stop=["."], include_stop_str_in_output=True)
    assert vb.stats["completion_tokens"] == 5 and vb.stats["requests"] == 2


def test_failure_message():
    msg = failure_message("augment", 12, 40, "chunks", Counter({"connection refused": 12}))
    assert msg.startswith("augment: 12 of 40 chunks failed (connection refused ×12); re-run")


# -- thinking judges --------------------------------------------------------------------------------------------
def test_thinking_judge_verdicts_are_read_after_the_thoughts():
    answers = {
        "a": "<think>VERDICT: NO would be wrong, they match.</think>\nVERDICT: YES",
        "b": "<think>Let me compare them carefully, the first word",  # cut off by the budget
    }
    judge = LLMJudge(ProgrammaticBackend(lambda p: answers["a" if "<candidate>\na\n" in p else "b"]))
    va, vb = judge.judge(["a", "b"], ["r", "r"])
    assert va.label == "YES" and va.score == 1.0
    assert vb.label is None and "still thinking at max_new_tokens=512" in vb.reason and judge.stats["still_thinking"] == 1
    assert judge.max_new_tokens == DEFAULT_VERDICT_TOKENS == JudgeConfig().max_new_tokens == 512


# -- midtrain judge ---------------------------------------------------------------------------------------------
def pairs_file(tmp_path: Path, n: int = 4) -> Path:
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"completion": f"cand {i}", "reference": f"ref {i}"}) + "\n" for i in range(n)))
    return p


def test_judge_against_a_dead_server_is_not_a_finished_run(tmp_path, capsys):
    out = tmp_path / "j"
    argv = ["judge", str(pairs_file(tmp_path)), "--out", str(out), "--no-thoughts", "--backend.backend", "openai"]
    argv += ["--backend.base-url", dead_url(), "--backend.max-retries", "0"]
    assert main(argv) == 2
    assert "judge: 4 of 4 pairs failed (connection refused ×4); re-run" in capsys.readouterr().err
    assert not (out / "COMPLETE").exists() and not (out / "verdicts.jsonl").exists()
    assert main(argv) == 2  # not a cache hit (exit 0): it tries again
    assert "4 of 4 pairs failed" in capsys.readouterr().err
    assert json.loads((out / "midtrain.json").read_text())["status"] == "failed"


def test_judge_rerun_asks_only_the_failed_pairs(tmp_path, capsys):
    outage = [True]
    asked: Counter = Counter()

    def respond(prompt: str, body: dict) -> str:
        asked[prompt] += 1
        if "cand 2" in prompt and outage[0]:
            raise HTTPFault(500)
        return "VERDICT: YES"

    out = tmp_path / "j"
    with OpenAIServer(respond) as srv:
        argv = ["judge", str(pairs_file(tmp_path)), "--out", str(out), "--no-thoughts", "--backend.backend", "openai"]
        argv += ["--backend.base-url", srv.url, "--backend.max-retries", "0", "--backend.api", "chat"]
        assert main(argv) == 2
        assert "1 of 4 pairs failed (HTTP 500 ×1)" in capsys.readouterr().err
        first = srv.stats["requests"]
        outage[0] = False
        assert main(argv) == 0
        assert srv.stats["requests"] - first == 1  # the three good verdicts came from the run's cache
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["label"] for v in verdicts] == ["YES"] * 4 and (out / "COMPLETE").is_file()


def test_serve_refuses_abbreviated_flags(capsys):
    from midtrain.llm import serve

    with pytest.raises(SystemExit) as e:
        serve.main(["--mod", "x"])
    assert e.value.code == 2
    assert "--model" in capsys.readouterr().err  # the real flag is still required: --mod was not taken for it
