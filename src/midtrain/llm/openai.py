"""The OpenAI-compatible HTTP backend of :mod:`midtrain.llm.backends` (vLLM serve, SGLang, TGI, ``transformers serve``,
hosted APIs), over httpx2.

Requests: the first one goes alone (with its retries), so that bad credentials, a redirect or the endpoint
question (``api: auto``) is met by one request, not by a crowd; then at most ``max_concurrency`` in flight (a
semaphore per event loop), a timeout per request, and retries
with exponential backoff plus jitter (``backoff_s · 2^attempt · U[0.5, 1]``, capped, ``Retry-After`` honoured)
on 408/409/429/5xx, timeouts and connection errors. Every other status fails the item at once, and some fail the
whole backend (``fatal``: later requests fail without being sent, no retry storm): 401/403 (with a hint naming the
API-key variable and whether it is empty) and 3xx (redirects are never followed, since a POST body and an API key
must not follow one blindly; the error names the ``Location``). Failures carry a ``kind`` for counting
(:mod:`midtrain.llm.base`).

Endpoint (``api``): ``chat`` (``/chat/completions``, the prompt as one user message), ``completions`` (raw prompt),
or ``auto``: the first request decides, once, under a lock: it goes to ``/chat/completions``; if that answers
200 the backend uses chat; if it fails with an HTTP error other than 401/403/3xx/408/409/429 (a model without a
chat template gets HTTP 400 from vLLM, HTTP 500 from ``transformers serve``; 502/503/504 are transient), the same request is sent once to
``/completions`` and, if that answers 200, the backend uses completions from then on (logged). Otherwise nothing
is decided and the next request probes again (three probes at most, then chat).

Fields sent: ``model``, ``max_tokens``, ``temperature``, ``n``, ``seed`` (when set: the configured seed at
temperature 0; at temperature > 0 the seed plus how often the same prompt was already asked at that temperature,
so a re-ask samples anew on a seeded server), then ``extra_body`` merged over them (e.g.
``{"chat_template_kwargs": {"enable_thinking": false}}``). Servers that return fewer than ``n`` choices are asked
again. Servers that ignore the sampling fields (``transformers serve`` samples only when the model's generation
config says ``do_sample``) are detected when ``n > 1`` samples at temperature > 0 come back identical: a warning,
once per backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

from midtrain.config import MAX_SEED, redact_text
from midtrain.console import log
from midtrain.errors import ConfigError
from midtrain.llm.base import BackendError, Errors, run_sync, warn_sampling_ignored
from midtrain.llm.config import BackendConfig

RETRY_STATUS = {408, 409, 429}
AUTH_STATUS = {401, 403}
TRANSIENT_STATUS = {502, 503, 504}  # a gateway or an overloaded server, never a missing chat template
TEMPLATE_ERROR = re.compile(r"chat[ _-]?template", re.I)
TEMPLATE_HINT = "the served model seems to have no chat template: set api to completions (or auto)"


def password_of(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def transport_kind(e: BaseException) -> str:
    """The failure kind of a connection error: ``connection refused`` (nothing listens), else its class."""
    text = str(e).lower()
    if "refused" in text or "all connection attempts failed" in text:
        return "connection refused"
    return f"connection error ({type(e).__name__})"


class OpenAIBackend:
    """Client of an OpenAI-compatible server with bounded concurrency, timeouts and backoff retries."""

    def __init__(self, cfg: BackendConfig, *, api_key: str | None = None) -> None:
        """A client of the server ``cfg`` names; ``api_key`` overrides the environment variable ``cfg.api_key_env``
        (tests; a config file never holds a key)."""
        url = cfg.base_url or os.environ.get("MIDTRAIN_API_BASE") or os.environ.get("OPENAI_BASE_URL") or ""
        if not url:
            raise ConfigError("key 'base_url': no server URL (set it, or $MIDTRAIN_API_BASE / $OPENAI_BASE_URL)")
        if cfg.api not in ("auto", "chat", "completions"):
            raise ConfigError(f"key 'api': expected auto, chat or completions, got {cfg.api!r}")
        model, api = cfg.model, cfg.api
        self.base_url = url.rstrip("/")
        self.api_key_env = cfg.api_key_env
        self.api_key = api_key if api_key is not None else os.environ.get(cfg.api_key_env, "")
        self._url_password = password_of(self.base_url)
        self.model, self.api = model, api
        self.resolved_api: str | None = None if api == "auto" else api
        self.name = f"openai:{model or 'default'}"
        self.max_concurrency, self.timeout_s, self.max_retries = cfg.max_concurrency, cfg.timeout_s, cfg.max_retries
        self.backoff_s, self.max_backoff_s = cfg.backoff_s, cfg.max_backoff_s
        self.seed: int | None = cfg.seed
        self.extra_body = dict(cfg.extra_body or {})
        self.stats: Counter = Counter()
        self.fatal: BackendError | None = None  # set by a 401/403/3xx: every later request fails at once
        self.sampling_warned = False
        self.opened = False  # whether the first request (which goes alone) was made
        self.probes_left = 3  # api auto: requests that may still probe the endpoint while undecided
        self._asked: Counter = Counter()  # (temperature, prompt) digest → times asked (seed offsets)
        self._per_loop: weakref.WeakKeyDictionary[Any, tuple[Any, asyncio.Semaphore, asyncio.Lock]] = weakref.WeakKeyDictionary()

    def redact(self, text: str) -> str:
        """``text`` fit to store: the API key, the URL's password, bearer tokens and authorization values masked."""
        return redact_text(text, (self.api_key, self._url_password))

    @staticmethod
    def _httpx() -> Any:
        try:
            import httpx2 as httpx
        except ImportError:  # pragma: no cover - httpx2 ships with huggingface_hub
            import httpx
        return httpx

    def _state(self) -> tuple[Any, asyncio.Semaphore, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        st = self._per_loop.get(loop)
        if st is None:
            httpx = self._httpx()
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
                follow_redirects=False,  # a 3xx is an error naming the new location (see the module docstring)
            )
            st = (client, asyncio.Semaphore(self.max_concurrency), asyncio.Lock())
            self._per_loop[loop] = st
        return st

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (a new one is made on the next request)."""
        st = self._per_loop.pop(asyncio.get_running_loop(), None)
        if st is not None:
            await st[0].aclose()

    def request_seed(self, prompt: str, temperature: float) -> int | None:
        """The ``seed`` field of the next request of ``prompt`` (see the module docstring); None: not sent."""
        if self.seed is None:
            return None
        if temperature <= 0:
            return self.seed
        key = hashlib.blake2b(f"{temperature!r}\0{prompt}".encode(), digest_size=8).digest()
        k = self._asked[key]
        self._asked[key] += 1
        return (self.seed + k) % (MAX_SEED + 1)

    def _body(self, prompt: str, max_new_tokens: int, temperature: float, n: int, api: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "n": n}
        seed = self.request_seed(prompt, temperature)
        if seed is not None:
            body["seed"] = seed
        if (api or self.resolved_api or "chat") == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(self.extra_body)
        return body

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry ``attempt + 1``: exponential with jitter, ``Retry-After`` honoured, capped."""
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    async def _post(self, api: str, body: dict[str, Any]) -> Any:
        client, sem, _ = self._state()
        url = f"{self.base_url}/{'chat/completions' if api == 'chat' else 'completions'}"
        async with sem:
            self.stats["requests"] += 1
            return await client.post(url, json=body)

    def status_error(self, resp: Any) -> BackendError | None:
        """The error of a non-200 response, or None when it is worth retrying (408/409/429/5xx)."""
        code = resp.status_code
        text = self.redact(resp.text)[:200]
        if 300 <= code < 400:
            where = self.redact(resp.headers.get("location", "") or "(no Location header)")
            hint = f"base_url redirects to {where}: set base_url to the final address"
            return BackendError(f"{self.name}: HTTP {code} redirect to {where}; {hint}", f"HTTP {code} redirect", hint, fatal=True)
        if code in AUTH_STATUS:
            state = "is empty" if not self.api_key else "was rejected"
            hint = f"check the API key: ${self.api_key_env} (api_key_env) {state}"
            what = "unauthorized" if code == 401 else "forbidden"
            return BackendError(f"{self.name}: HTTP {code} {what}: {text}; {hint}", f"HTTP {code}", hint, fatal=True)
        if code in RETRY_STATUS or code >= 500:
            return None
        hint = TEMPLATE_HINT if TEMPLATE_ERROR.search(resp.text) else ""
        if code == 404:
            hint = "check base_url (it usually ends in /v1) and the model name"
        return BackendError(f"{self.name}: HTTP {code}: {text}" + (f"; {hint}" if hint else ""), f"HTTP {code}", hint)

    def _fail_fast(self) -> None:
        if self.fatal is not None:
            self.stats["not_sent"] += 1
            f = self.fatal
            raise BackendError(str(f), f.kind, f.hint, fatal=True)

    async def _probe_api(self, prompt: str, max_new_tokens: int, temperature: float, n: int) -> list[str] | None:
        """``api: auto``: decide the endpoint with this request (called under the first-request lock); its texts if it
        succeeded."""
        httpx = self._httpx()
        self.probes_left -= 1
        try:
            resp = await self._post("chat", self._body(prompt, max_new_tokens, temperature, n, "chat"))
            if resp.status_code == 200:
                self.resolved_api = "chat"
                return self._parse(resp, "chat")
            if resp.status_code < 400 or resp.status_code in AUTH_STATUS:
                err = self.status_error(resp)
                if err is not None and err.fatal:
                    self.stats["http_errors"] += 1
                    self.fatal = err
                    raise err
            if resp.status_code < 400 or resp.status_code in AUTH_STATUS | RETRY_STATUS | TRANSIENT_STATUS:
                return None  # not a question of the endpoint: the ordinary path retries or reports it
            chat_error = f"HTTP {resp.status_code}: {self.redact(resp.text)[:120]}"
            body = self._body(prompt, max_new_tokens, temperature, n, "completions")
            try:
                resp = await self._post("completions", body)
            except httpx.TransportError:
                # A server may close its keep-alive connection after the 500 (uvicorn does, under `transformers
                # serve`): the reused socket then fails at once with a ReadError. One fresh try settles it.
                resp = await self._post("completions", body)
        except httpx.TransportError:  # (timeouts included) undecided; the ordinary path retries and reports
            return None
        if resp.status_code != 200:
            return None
        self.resolved_api = "completions"
        log(
            f"{self.name}: api auto: /chat/completions failed ({chat_error}) and /completions answers: using "
            "completions (the served model probably has no chat template); set api to silence this"
        )
        return self._parse(resp, "completions")

    async def _request(self, prompt: str, max_new_tokens: int, temperature: float, n: int) -> list[str]:
        self._fail_fast()
        if not self.opened or (self.resolved_api is None and self.probes_left > 0):
            async with self._state()[2]:  # the first request goes alone (see the module docstring)
                self._fail_fast()  # the request that held the lock may have met a fatal error
                if self.resolved_api is None and self.probes_left > 0:
                    probed = await self._probe_api(prompt, max_new_tokens, temperature, n)
                    self.opened = True
                    if probed is not None:
                        return probed
                elif not self.opened:
                    try:
                        return await self._attempts(prompt, max_new_tokens, temperature, n)
                    finally:
                        self.opened = True
        return await self._attempts(prompt, max_new_tokens, temperature, n)

    async def _attempts(self, prompt: str, max_new_tokens: int, temperature: float, n: int) -> list[str]:
        httpx = self._httpx()
        api, body = "", {}
        last, kind, hint = "", "error", ""
        for attempt in range(self.max_retries + 1):
            self._fail_fast()
            retry_after = None
            if api != (self.resolved_api or "chat"):  # ``api: auto`` may decide while this request waits to retry
                api = self.resolved_api or "chat"
                body = self._body(prompt, max_new_tokens, temperature, n, api)
            try:
                resp = await self._post(api, body)
                if resp.status_code == 200:
                    return self._parse(resp, api)
                err = self.status_error(resp)
                if err is not None:
                    self.stats["http_errors"] += 1
                    if err.fatal and self.fatal is None:
                        self.fatal = err
                    raise err
                self.stats[f"http_{resp.status_code}"] += 1
                kind, last = f"HTTP {resp.status_code}", f"HTTP {resp.status_code}: {self.redact(resp.text)[:200]}"
                hint = TEMPLATE_HINT if api == "chat" and TEMPLATE_ERROR.search(resp.text) else ""
                try:
                    retry_after = float(resp.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
            except httpx.TimeoutException as e:
                self.stats["timeouts"] += 1
                kind, last = "timeout", f"timeout after {self.timeout_s}s ({type(e).__name__})"
            except httpx.TransportError as e:
                self.stats["connection_errors"] += 1
                kind, last = transport_kind(e), self.redact(f"{type(e).__name__}: {e}")
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                await asyncio.sleep(self.backoff(attempt, retry_after))
        self.stats["failures"] += 1
        raise BackendError(
            f"{self.name}: gave up after {self.max_retries + 1} attempts ({last})" + (f"; {hint}" if hint else ""), kind, hint
        )

    def _parse(self, resp: Any, api: str) -> list[str]:
        try:
            data = resp.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [(c["message"].get("content") if api == "chat" else c["text"]) or "" for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BackendError(
                self.redact(f"{self.name}: malformed response ({type(e).__name__}: {e}): ") + self.redact(resp.text)[:200],
                "malformed response",
            ) from None
        usage = data.get("usage") or {}
        self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        return texts

    async def _one(self, prompt: str, max_new_tokens: int, temperature: float, n: int) -> list[str]:
        texts = await self._request(prompt, max_new_tokens, temperature, n)
        for _ in range(n):  # servers that ignore ``n`` return fewer choices: ask for the rest
            if len(texts) >= n:
                break
            texts += await self._request(prompt, max_new_tokens, temperature, n - len(texts))
        if len(texts) < n:
            raise BackendError(f"{self.name}: server returned {len(texts)} of {n} completions", "too few completions")
        if n > 1 and temperature > 0 and len(set(texts[:n])) == 1 and texts[0].strip():
            warn_sampling_ignored(self, temperature, n)
        return texts[:n]

    async def agenerate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        results = await asyncio.gather(*(self._one(p, max_new_tokens, temperature, n) for p in prompts), return_exceptions=True)
        out: list[Any] = []
        for r in results:
            if isinstance(r, BaseException):
                if not isinstance(r, Exception):
                    raise r
                err = (
                    r
                    if isinstance(r, BackendError)
                    else BackendError(self.redact(f"{self.name}: {type(r).__name__}: {r}"), type(r).__name__)
                )
                if errors == "raise":
                    raise err
                r = err
            out.append(r)
        return out

    def generate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        async def once() -> list[list[str]]:
            try:
                return await self.agenerate(prompts, **kw)
            finally:
                await self.aclose()

        return run_sync(once())


__all__ = ["OpenAIBackend", "RETRY_STATUS", "AUTH_STATUS", "transport_kind", "password_of"]
