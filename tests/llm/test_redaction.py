"""Credentials never reach stored files (issue 14): error bodies that echo the Authorization header, and a password
in ``base_url``, are masked in ``verdicts.jsonl``, ``config.yaml`` and ``midtrain.json``; the requests themselves
still carry the real credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.config import redact_secrets, redact_text, redact_url, to_yaml
from midtrain.llm.backends import OpenAIBackend
from midtrain.llm.config import BackendConfig
from midtrain.llm.judge import JudgeConfig
from midtrain.llm.serve import HTTPFault, OpenAIServer
from midtrain.runs import run_key

KEY = "sk-test-0123456789abcdef"
PASSWORD = "hunter2-pw"


@pytest.mark.parametrize(
    "text, secrets, gone, kept",
    [
        ('{"error": {"headers": {"Authorization": "Bearer sk-abcdef123"}}}', [], "sk-abcdef123", '"Authorization": "***"'),
        ("Authorization: Bearer sk-abcdef123, then", [], "sk-abcdef123", "Authorization: ***, then"),
        ("invalid token Bearer abc.def-ghi", [], "abc.def-ghi", "Bearer ***"),
        ('{"api_key": "k-998877", "x-api-key": "k2-998877"}', [], "998877", '"api_key": "***"'),
        ("key echoed bare: " + KEY[:12], [KEY[:12]], KEY[:12], "key echoed bare: ***"),
        ("GET https://u:" + PASSWORD + "@h:8/v1?api_key=abc&n=1 failed", [], PASSWORD, "https://u:***@h:8/v1?api_key=***&n=1"),
        ("short secrets are not replaced: abc", ["abc"], "", "not replaced: abc"),
    ],
)
def test_redact_text(text, secrets, gone, kept):
    out = redact_text(text, secrets)
    assert (not gone or gone not in out) and kept in out


def test_redact_url_keeps_what_is_not_a_secret():
    assert redact_url("https://user:p@ss@host/v1") == "https://user:***@host/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://tok@host/v1") == "https://tok@host/v1"  # a user without a password is not masked
    assert redact_secrets({"a": ["x", "http://u:pw@h/"], "n": 3}) == {"a": ["x", "http://u:***@h/"], "n": 3}


def test_config_metadata_masks_url_passwords_and_the_run_key_ignores_them():
    url = f"https://user:{PASSWORD}@llm.example/v1"
    cfg = JudgeConfig.from_dict({"input": "p.jsonl", "out": "o", "backend": {"backend": "openai", "base_url": url}})
    assert cfg.backend.base_url == url  # the config itself keeps the real value: requests need it
    assert PASSWORD not in json.dumps(cfg.to_dict()) and PASSWORD not in to_yaml(cfg)
    assert cfg.to_dict(redact=False)["backend"]["base_url"] == url and PASSWORD in to_yaml(cfg, redact=False)
    assert cfg.replace(threshold=0.7).backend.base_url == url  # rebuilding a config never loses the password
    other = cfg.replace(**{"backend.base_url": url.replace(PASSWORD, "rotated-pw")})
    assert run_key("judge", cfg, {}) == run_key("judge", other, {})  # a rotated password is the same run


def test_dry_run_prints_no_password(capsys):
    url = f"http://user:{PASSWORD}@127.0.0.1:9/v1"
    assert main(["judge", "p.jsonl", "--out", "o", "--backend.backend", "openai", "--backend.base-url", url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and "user:***@127.0.0.1" in out


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"completion": f"a b {i}", "reference": f"a b {i}"}) + "\n" for i in range(3)))
    return p


def test_error_body_echoing_the_key_is_masked_in_verdicts(pairs, tmp_path, monkeypatch, capsys):
    holder: dict[str, OpenAIServer] = {}

    def respond(prompt: str, body: dict) -> str:  # a server that quotes the request's credentials back
        auth = holder["srv"].last_headers.get("Authorization", "")
        raise HTTPFault(401, f"invalid credentials: Authorization: {auth}; key={auth.split()[-1]}; api_key={auth.split()[-1]}")

    monkeypatch.setenv("MIDTRAIN_TEST_KEY", KEY)
    with OpenAIServer(respond) as srv:
        holder["srv"] = srv
        out = tmp_path / "j"
        argv = ["judge", str(pairs), "--out", str(out), "--no-thoughts", "--backend.backend", "openai"]
        argv += ["--backend.base-url", srv.url, "--backend.api-key-env", "MIDTRAIN_TEST_KEY", "--backend.max-retries", "0"]
        assert main(argv) == 2  # every pair failed: an outage, not a finished run
        assert srv.last_headers["Authorization"] == f"Bearer {KEY}"  # the key was sent, in the header only
        assert srv.stats["requests"] == 1  # a 401 fails the backend at once: no request storm
    err = capsys.readouterr().err
    assert "3 of 3 pairs failed (HTTP 401 ×3)" in err and "$MIDTRAIN_TEST_KEY" in err and KEY not in err
    stored = "".join(p.read_text() for p in out.iterdir() if p.is_file())
    assert KEY not in stored and not (out / "COMPLETE").exists()
    assert json.loads((out / "midtrain.json").read_text())["metrics"]["failed_by_kind"] == {"HTTP 401": 3}


def test_backend_errors_mask_the_key_and_the_url_password():
    backend = OpenAIBackend(
        BackendConfig(backend="openai", model="m", base_url=f"http://u:{PASSWORD}@127.0.0.1:9/v1", max_retries=0, timeout_s=2), api_key=KEY
    )
    (err,) = backend.generate(["hi"], max_new_tokens=1, errors="return")
    assert PASSWORD not in str(err) and KEY not in str(err)
    assert backend.redact(f"got {KEY} and {PASSWORD} from http://u:{PASSWORD}@h/") == "got *** and *** from http://u:***@h/"


def test_base_url_password_is_used_but_never_stored(pairs, tmp_path, capsys):
    with OpenAIServer(lambda prompt, body: "VERDICT: YES") as srv:
        url = srv.url.replace("http://", f"http://user:{PASSWORD}@")
        out = tmp_path / "j"
        argv = ["judge", str(pairs), "--out", str(out), "--no-thoughts", "--backend.backend", "openai", "--backend.base-url", url]
        assert main([*argv, "--backend.api-key-env", "MIDTRAIN_UNSET_KEY_VAR"]) == 0
        assert srv.last_headers["Authorization"] == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    capsys.readouterr()
    for name in ("config.yaml", "midtrain.json", "verdicts.jsonl"):
        text = (out / name).read_text()
        assert PASSWORD not in text, name
    assert "user:***@127.0.0.1" in (out / "config.yaml").read_text()
    meta = json.loads((out / "midtrain.json").read_text())
    assert meta["config"]["backend"]["base_url"] == redact_url(url) and meta["metrics"]["mean_score"] == 1.0


def test_backend_config_rejects_bad_urls():
    for url in ("localhost:8000", "ftp://h/v1", "http:///v1", "http://h:port/v1", "http://h /v1"):
        with pytest.raises(Exception, match="key 'base_url'"):
            BackendConfig.from_dict({"backend": "openai", "base_url": url})
