"""The config section of a text backend (:mod:`midtrain.llm.backends`): which backend, which model, and how to
reach it. Every backend's constructor takes this one section, so a stage embeds it as a field
(``annotator: BackendConfig``, ``backend: BackendConfig``) and a backend never takes a long list of loose
keyword arguments. A leaf module: the backends, the judge and the stages all import it, it imports none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from midtrain.config import MAX_SEED, Config, check_http_url, param
from midtrain.errors import ConfigError

BackendKind = Literal["transformers", "openai", "vllm", "programmatic"]


@dataclass
class BackendConfig(Config):
    """A stage's text backend: its kind, its model, and the options of that kind (each field says which)."""

    backend: BackendKind = param(
        "programmatic",
        "transformers: local HF model in-process; openai: OpenAI-compatible HTTP server; vllm: "
        "vLLM offline; programmatic: no model, the stage's own rules answer its prompts (tests, synthetic problems).",
    )
    model: str = param("", "Checkpoint dir or hub id (transformers, vllm); the served model name (openai).")
    base_url: str = param("", "Server URL such as http://127.0.0.1:8000/v1 (openai); empty: $MIDTRAIN_API_BASE or $OPENAI_BASE_URL.")
    api_key_env: str = param("OPENAI_API_KEY", "Name of the environment variable holding the API key (openai).")
    api: Literal["auto", "chat", "completions"] = param(
        "auto",
        "Endpoint (openai): chat = /chat/completions (the prompt as a user message, the server applies the chat template); "
        "completions = /completions (raw prompt); auto = the first request decides once: chat if /chat/completions "
        "answers, completions if it fails (a model without a chat template) and /completions answers.",
    )
    extra_body: dict[str, Any] = param(
        {},
        'Fields merged into every request body (openai), e.g. {"chat_template_kwargs": {"enable_thinking": false}} to turn off a judge\'s thinking.',
    )
    max_concurrency: int = param(16, "Maximum HTTP requests in flight (openai).", ge=1)
    timeout_s: float = param(120.0, "Timeout of one HTTP request (openai).", gt=0)
    max_retries: int = param(5, "Retries of one request on 429/5xx/timeouts/connection errors (openai).", ge=0)
    backoff_s: float = param(1.0, "Base of the exponential backoff between retries (openai).", ge=0)
    max_backoff_s: float = param(60.0, "Cap of one backoff sleep (openai).", ge=0)
    batch_size: int = param(16, "Prompts per generate call (transformers).", ge=1)
    dtype: Literal["float32", "bfloat16"] = param("float32", "Weights dtype (transformers, vllm); never fp16 on CPU.")
    chat_template: bool = param(True, "Apply the tokenizer's chat template when it has one (transformers, vllm).")
    trust_remote_code: bool = param(False, "Allow custom model code from the checkpoint (transformers, vllm).")
    num_threads: int = param(
        0,
        "torch CPU threads of this process (transformers); 0: torch's default. 1 avoids OpenMP spin-wait slowdowns on a shared machine.",
        ge=0,
    )
    seed: int = param(
        0,
        "Sampling seed (transformers, vllm; openai: sent as 'seed', shifted per re-ask of a prompt at temperature > 0 so a retry samples anew).",
        ge=0,
        le=MAX_SEED,
    )

    def check(self) -> None:
        if self.backend in ("transformers", "vllm") and not self.model:
            raise ConfigError(f"key 'model': backend '{self.backend}' needs a model checkpoint")
        if self.base_url:
            check_http_url(self.base_url, "base_url")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):  # never echo it: it may be the key
            raise ConfigError("key 'api_key_env': expected the name of an environment variable (e.g. OPENAI_API_KEY), not a key")


__all__ = ["BackendConfig", "BackendKind"]
